"""Codec round trips: shapes, exact sizes, quality ordering, spec strings."""
import io

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.io import codecs
from fastreshuffle.io.jpeg_tables import tables_from_pil
from fastreshuffle.metrics import psnr


def _photo(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 90 * np.cos(y / 5.0 + x / 11.0), (x * y) % 256], -1)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,lo,hi", [("jpeg", 10, 90), ("hevc", 10, 80), ("webp", 10, 90)])
def test_low_quality_is_worse_and_smaller(name, lo, hi):
    img = _photo()
    a = codecs.compress(img, f"{name}:{lo}")
    b = codecs.compress(img, f"{name}:{hi}")
    for c in (a, b):
        assert c.image.shape == img.shape and c.image.dtype == np.uint8
        assert c.nbytes > 0
        assert c.bpp == pytest.approx(8 * c.nbytes / (64 * 80))
    assert psnr(img, a.image) < psnr(img, b.image)
    assert a.bpp < b.bpp


def test_jpeg_size_is_the_file_size():
    import io
    from PIL import Image
    img = _photo()
    c = codecs.jpeg(img, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=30, subsampling=2)
    assert c.nbytes == len(buf.getvalue())


# ---- alignment: the decoded image must sit on the original pixel for pixel.  A PSNR floor
# cannot show that (the old "> 14 dB": real values 16.9-20.5 dB on the noisy _photo, and the
# same image shifted by one pixel still scored 15.9-17.8 dB), so these tests compare the
# aligned PSNR with the PSNR after every one-pixel shift, and check each border row and column
# (where an off-by-one pad or crop would leave a duplicated or foreign line).
def _aligned_photo(h, w, seed=1):
    """Luma-dominant texture (periods 6-16 px in three directions) with a gentle chroma ramp:
    4:2:0 keeps it (so a good decode scores high) and a one-pixel shift costs 20+ dB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    luma = np.full((h, w), 128.0)
    for _ in range(3):
        f, a, ph = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi), rng.uniform(0, 6.3)
        luma += 30 * np.sin(f * (x * np.cos(a) + y * np.sin(a)) + ph)
    chroma = 15 * np.sin(x / 13.0 + y / 17.0)
    return np.clip(np.stack([luma + chroma, luma, luma - chroma], -1), 0, 255).astype(np.uint8)


def _shifted_psnrs(img, dec):
    """PSNR of ``dec`` against ``img`` moved by (dy, dx), over the overlap, for the 8 one-pixel shifts."""
    h, w = img.shape[:2]
    out = {}
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) != (0, 0):
                a = img[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                b = dec[max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
                out[(dy, dx)] = psnr(a, b)
    return out


def _border_psnrs(img, dec):
    return {name: psnr(img[sl], dec[sl]) for name, sl in
            (("top row", np.s_[0]), ("bottom row", np.s_[-1]), ("left column", np.s_[:, 0]),
             ("right column", np.s_[:, -1]))}


# High quality, every codec path (4:2:0 / 4:4:4, CRF / fixed QP, 8 / 10 bit), odd and tiny
# sizes.  Measured on this image (Pillow 13, pillow-heif 1.8.1 / x265 4.3): aligned >= 41.7 dB,
# border lines >= 40.3 dB, every one-pixel shift <= 30.9 dB (the 2x5 image, whose shifted
# overlap is 4 pixels; 23-24 dB at 9x17 and larger).  A shifted or mis-cropped decode scores
# ~21-24 dB, a duplicated border line ~21 dB on that line.  Thresholds: aligned >= 38, border
# >= 36, shift margin >= 10 dB (>= 3.7 dB of room each).
HQ_SPECS = ["jpeg:95", "jpeg:95:444", "hevc:90", "hevc:90:444", "hevc:qp=12", "hevc:90:10bit", "webp:95"]


@pytest.mark.parametrize("h,w", [(37, 51), (17, 9), (9, 17), (3, 3), (2, 5), (1, 7), (7, 1)], ids=str)
@pytest.mark.parametrize("spec", HQ_SPECS)
def test_decoded_image_is_aligned_high_quality(spec, h, w):
    img = _aligned_photo(h, w)
    dec = codecs.compress(img, spec).image
    assert dec.shape == img.shape and dec.dtype == np.uint8
    aligned = psnr(img, dec)
    assert aligned >= 38, (spec, aligned)
    border = _border_psnrs(img, dec)
    assert min(border.values()) >= 36, (spec, aligned, border)
    if min(h, w) >= 2:
        shifted = _shifted_psnrs(img, dec)
        assert aligned - max(shifted.values()) >= 10, (spec, aligned, shifted)


# The low-quality settings the rest of the suite uses, at odd sizes: measured margins of the
# aligned PSNR over the best one-pixel shift 4.2-12.5 dB (aligned 26.6-34.8 dB, shifts
# 20.5-22.4 dB): threshold 3 dB.
@pytest.mark.parametrize("h,w", [(37, 51), (17, 9), (9, 17)], ids=str)
@pytest.mark.parametrize("spec", ["jpeg:20:444", "hevc:30:444", "hevc:qp=35", "hevc:30:10bit", "webp:50",
                                  "jpg:10", "heic:20"])
def test_odd_sizes_and_options_are_aligned(spec, h, w):
    img = _aligned_photo(h, w)
    dec = codecs.compress(img, spec).image
    assert dec.shape == img.shape and dec.dtype == np.uint8
    aligned, shifted = psnr(img, dec), _shifted_psnrs(img, dec)
    assert aligned - max(shifted.values()) >= 3, (spec, aligned, shifted)


@pytest.mark.parametrize("spec", ["hevc:20", "hevc:20:10bit", "hevc:40:444:10bit", "jpeg:30", "jpeg:30:444"])
def test_training_decodes_as_restore_reads(tmp_path, spec):
    """A training pair's input is the picture `restore` reads from the same file: for a 10-bit
    HEIF file the two once took different roads to 8 bits (up to 2 levels apart)."""
    from fastreshuffle.io.images import load_image_file
    img = _photo(48, 64)
    s = codecs.parse_spec(spec)
    name = s.name
    kw = s.kwargs()
    data = (codecs.hevc_file(img, **kw) if name == "hevc" else codecs.jpeg_file(img, **kw))
    path = tmp_path / ("x.heic" if name == "hevc" else "x.jpg")
    path.write_bytes(data)
    np.testing.assert_array_equal(codecs.compress(img, s).image, load_image_file(path).rgb)


def test_hevc_fixed_qp_is_read_back_three_lower():
    """docs/codecs.md: x265 at a fixed QP N codes an intra picture at slice QP N - 3 (its default
    I-frame offset), as read from the file."""
    img = _photo()
    assert [codecs.compress(img, f"hevc:qp={n}").qp for n in (20, 45)] == [17, 42]


def test_hevc_qp_orders_rate():
    img = _photo()
    r = [codecs.compress(img, f"hevc:qp={qp}").bpp for qp in (22, 32, 42)]
    assert r[0] > r[1] > r[2]


def test_parse_spec():
    s = codecs.parse_spec("hevc:15:444")
    assert (s.name, s.quality, s.kwargs()["subsampling"]) == ("hevc", 15, "444")
    assert codecs.parse_spec("hevc:444").quality is None
    assert codecs.parse_spec("jpeg", 7).quality == 7
    assert str(codecs.parse_spec("JPEG:10")) == "jpeg:10"
    assert codecs.parse_spec("hevc:qp=30").kwargs() == {"qp": 30, "quality": None}
    for bad in ["png:10", "jpeg:0", "jpeg:101", "jpeg:10:bogus", "hevc:qp=60"]:
        with pytest.raises(codecs.CodecError):
            codecs.compress(_photo(16, 16), bad)
    for bad in ("webp:50.5", "jpeg:1e3", "hevc:15.0:444"):   # (said as an unknown option '50.5')
        with pytest.raises(codecs.CodecError, match=r"quality .* is not valid: give a whole number"):
            codecs.parse_spec(bad)


def test_hevc_threads_same_bitstream_and_passed_to_x265(monkeypatch):
    """threads=N sizes x265's pool: the same file, byte for byte, as the default pool (several
    CTU rows, so wavefront threads have work), and the parameter really reaches the encoder."""
    import pillow_heif
    seen = []
    save = pillow_heif.HeifFile.save

    def spy(self, fp, **kw):
        params = dict(kw.get("enc_params") or {})
        out = save(self, fp, **kw)
        seen.append((params.get("x265:pools"), fp.getvalue()))
        return out

    monkeypatch.setattr(pillow_heif.HeifFile, "save", spy)
    for (h, w), q in [((200, 152), 15), ((96, 96), 30), ((37, 51), 8)]:
        img = _photo(h, w, seed=h)
        coded = [codecs.compress(img, f"hevc:{q}{t}") for t in ("", ":threads=1", ":threads=4")]
        (p0, f0), (p1, f1), (p4, f4) = seen[-3:]
        assert (p0, p1, p4) == (None, "1", "4")
        assert f0 == f1 == f4 and len(f0) == coded[0].nbytes
        assert all(np.array_equal(coded[0].image, c.image) for c in coded[1:])
    for bad in ["hevc:15:threads=0", "hevc:15:threads=x", "hevc:15:threads=", "jpeg:15:threads=1"]:
        with pytest.raises(codecs.CodecError):
            codecs.parse_spec(bad)


def test_with_threads():
    spec = codecs.parse_spec("hevc:15:444")
    assert str(codecs.with_threads(spec, 1)) == "hevc:15:444:threads=1"
    assert str(codecs.with_threads(codecs.parse_spec("hevc:threads=3"), 2)) == "hevc:threads=2"
    assert codecs.with_threads(codecs.parse_spec("hevc:15:threads=3:444"), None) == spec
    assert codecs.with_threads(codecs.parse_spec("jpeg:15"), 1) == codecs.parse_spec("jpeg:15")


def test_rejects_non_rgb():
    for bad in (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 1), np.uint8), np.zeros((8, 8, 3), np.float32),
                np.zeros((8, 8), np.float32)):
        with pytest.raises(codecs.CodecError):
            codecs.jpeg(bad)
    with pytest.raises(codecs.CodecError):
        codecs.webp(np.zeros((8, 8), np.uint8))


def test_an_h_x_w_image_is_coded_as_a_grey_jpeg():
    """(eval codes grey originals so, as grey benchmarks do: one component, no chroma.)"""
    g = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (24, 1))
    c = codecs.jpeg(g, 50)
    assert c.image.shape == (24, 32, 3) and c.tables.chroma is None
    assert np.array_equal(c.image[..., 0], c.image[..., 2])
    assert c.nbytes < codecs.jpeg(np.repeat(g[..., None], 3, axis=2), 50).nbytes


def test_an_rgb_coded_jpeg_has_no_usable_tables():
    """a JPEG whose components are R, G, B (Adobe transform 0) is not YCbCr: its tables must not
    be used for the YCbCr projection (None: the pixels' path)."""
    b = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(b, format="JPEG", keep_rgb=True)
    im = Image.open(io.BytesIO(b.getvalue()))
    assert im.info.get("adobe_transform") == 0
    assert tables_from_pil(im) is None


def test_one_qp_check_for_the_spec_the_encoder_and_eval():
    import numpy as np

    from fastreshuffle.errors import CodecError
    from fastreshuffle.io.codecs import check_qp
    assert [check_qp(q) for q in (0, 51, "37", np.int64(22))] == [0, 51, 37, 22]
    for bad in (-1, 52, "52", "4a", "", 30.5, True, None):
        with pytest.raises(CodecError, match="HEVC QP must be a whole number in 0..51"):
            check_qp(bad)


def test_check_encoder_labels_the_codec_error():
    from fastreshuffle.errors import CodecError
    from fastreshuffle.io.codecs import check_encoder
    with pytest.raises(CodecError, match=r"^--codec jpeg: jpeg quality must be in 1\.\.100, got 500$"):
        check_encoder("jpeg", 500, "--codec jpeg")
    check_encoder("jpeg", 10, "--codec jpeg")        # a working encoder: nothing raised


def test_check_encoder_turns_an_encoders_own_error_into_a_codec_error(monkeypatch):
    from fastreshuffle.errors import CodecError
    """An encoder library's own exception (x265 refusing an option, say) becomes one CodecError
    naming the label and the original type, so `eval` prints one line."""
    from fastreshuffle.io import codecs

    def refusing(img):
        raise RuntimeError("x265 [error]: bad option")
    monkeypatch.setattr(codecs, "parse_spec", lambda spec, quality=None: refusing)
    with pytest.raises(CodecError, match=r"^--codec hevc: the encoder failed on a test picture: "
                                         r"RuntimeError: x265 \[error\]: bad option$"):
        codecs.check_encoder("hevc", 15, "--codec hevc")


def test_a_three_digit_number_out_of_range_is_said_both_ways():
    """``jpeg:411`` (4:1:1 chroma, which we do not code) was refused as "jpeg quality must be in
    1..100, got 411"; the number is now named as neither a quality nor a sampling.  A quality
    given apart (``--quality 500``) keeps its own message."""
    from fastreshuffle.errors import CodecError
    from fastreshuffle.io.codecs import parse_spec
    for spec, lo in (("jpeg:411", 1), ("hevc:440", 0)):
        with pytest.raises(CodecError, match=rf"^{spec.split(':')[0]}: {spec.split(':')[1]} is neither a quality "
                                             rf"\({lo}\.\.100\) nor a chroma sampling \(420, 422, 444\)$"):
            parse_spec(spec)
    with pytest.raises(CodecError, match=r"^jpeg quality must be in 1\.\.100, got 1000$"):
        parse_spec("jpeg:1000")
    with pytest.raises(CodecError, match=r"^webp quality must be in 0\.\.100, got 101$"):   # (no samplings)
        parse_spec("webp:101")
    with pytest.raises(CodecError, match=r"^jpeg quality must be in 1\.\.100, got 500$"):
        parse_spec("jpeg", 500)
    assert parse_spec("jpeg:444").kwargs() == {"subsampling": "444"} and parse_spec("jpeg:100").quality == 100
    assert parse_spec("jpeg:411", 50).quality == 50       # the quality given apart replaces the spec's
    with pytest.raises(CodecError, match=r"^jpeg quality must be in 1\.\.100, got -10$"):   # a sign: a quality
        parse_spec("jpeg:-10")
