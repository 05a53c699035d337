"""The guard on its less common paths (a turned JPEG, 16-bit pixels, 4:2:2 coding units, HEIF
files): each test written against a mutation of the guard that the suite did not catch."""
import io

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.inference.guard import Guard, blind_guard, guard_pixels, run_guarded
from fastreshuffle.io.jpeg_tables import IJG_CHROMA, IJG_LUMA, ijg_table, tables_from_pil


def photo(size=192):
    from skimage import data
    a = data.astronaut()[..., :3]
    return np.ascontiguousarray(a[100:100 + size, 150:150 + size])


def encode(a, q, sub=2):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q, subsampling=sub)
    im = Image.open(io.BytesIO(buf.getvalue()))
    return im, np.asarray(im.convert("RGB"))


def test_blind_guard_of_a_turned_jpeg_uses_transposed_tables():
    """a JPEG turned by 90 degrees has its blocks' frequencies transposed; the blind guard must
    project with the transposed IJG tables (the luma table is not symmetric)."""
    _, dec = encode(photo(), 75, 1)
    turned = np.ascontiguousarray(np.rot90(dec)[3:, 5:])
    g = blind_guard(turned)
    assert g is not None and g.blind
    q = int(g.quality)
    np.testing.assert_array_equal(g.tables.luma, ijg_table(q, IJG_LUMA).reshape(8, 8).T)
    assert g.tables.chroma is not None
    for c in g.tables.chroma:
        np.testing.assert_array_equal(c, ijg_table(q, IJG_CHROMA).reshape(8, 8).T)


def test_guard_pixels_16bit_is_the_8bit_result_scaled_by_257():
    """a 16-bit image's guarded result is the 8-bit one in 16-bit units (x257: 255 -> 65535)."""
    im, dec = encode(photo(128), 50)
    t = tables_from_pil(im)
    run = lambda a: np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)   # any change the guard lets through
    out8, g8 = guard_pixels(run, dec, t)
    out16, g16 = guard_pixels(run, dec.astype(np.uint16) * 257, t)
    assert g8.strength > 0 and g16 == g8 and out16.dtype == np.uint16
    np.testing.assert_array_equal(out16, out8.astype(np.uint16) * 257)


@pytest.mark.parametrize("sub,offset,pad", [((1, 2), (3, 5), (5, 11)), ((2, 1), (3, 5), (13, 3)),
                                            ((2, 2), (3, 5), (13, 11))])
def test_run_guarded_pads_to_the_coding_unit_of_each_axis(sub, offset, pad):
    """rows are padded to the vertical coding unit (8 x fv), columns to the horizontal one
    (8 x fw) -- for 4:2:2 they differ."""
    dec = photo(64)
    tables = tables_from_pil(encode(dec, 50)[0])._replace(subsampling=sub)
    seen = []

    def spy(x):
        seen.append(x.shape[:2])
        return x
    out = run_guarded(spy, dec, Guard(tables, 50.0, 1.0, offset, True))
    assert seen == [(64 + pad[0], 64 + pad[1])] and out.shape == dec.shape


def test_hevc_guard_keeps_uniform_areas_as_decoded():
    """the HEVC guard, like the JPEG one, keeps the pixels of uniform areas as decoded
    (the networks put a faint texture or a colour shift there)."""
    from fastreshuffle.inference.guard import hevc_guarded
    flat = np.full((96, 96, 3), (90, 120, 200), np.uint8)
    shift = lambda a: np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    for qp in (32.0, 40.0):                  # strength 0.5 and 1
        out, d = hevc_guarded(shift, flat, 1000, qp=qp)
        assert d.strength > 0
        np.testing.assert_array_equal(out, flat)
    # where the picture is not uniform, the correction does go through
    ramp = flat.copy()
    ramp[:, :, 0] = (np.arange(96) * 2)[None, :] % 256
    ramp[::7] = 30
    out, _ = hevc_guarded(shift, ramp, 1000, qp=40.0)
    assert (out != ramp).any()


def test_hevc_size_ratio_is_the_files_size_over_a_jpeg_q90_of_it():
    """the fallback's key is file bytes / JPEG-q90 bytes of the decoded pixels (a larger file,
    a higher ratio, less correction) -- not its inverse."""
    from fastreshuffle.inference.guard import hevc_decision, hevc_size_ratio
    dec = photo(96)
    buf = io.BytesIO()
    Image.fromarray(dec).save(buf, format="JPEG", quality=90)
    q90 = len(buf.getvalue())
    assert hevc_size_ratio(q90 // 10, dec) == pytest.approx((q90 // 10) / q90)
    small, big = hevc_decision(dec, q90 // 10), hevc_decision(dec, q90)     # ratio ~0.1 and ~1
    assert small.strength == 1.0 and big.strength == 0.0
