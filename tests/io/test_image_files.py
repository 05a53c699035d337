"""Reading image files as they are meant to be seen: TIFF orientation (Pillow's own turn, and its
memory-mapped reading of uncompressed files), 16-bit PGM/PPM, stated resolutions only; and
WebP outputs keeping the colour under transparent pixels."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from fastreshuffle.io.images import load_image_file, round_16_to_8
from fastreshuffle.io.output import write_restored

tifffile = pytest.importorskip("tifffile")


def _upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """``stored`` turned as Pillow's exif_transpose turns a picture of that orientation (not our
    table: an index map goes through Pillow, the samples follow it)."""
    h, w = stored.shape[:2]
    idx = Image.fromarray(np.arange(h * w, dtype=np.int32).reshape(h, w))
    ex = idx.getexif()
    ex[0x0112] = orientation
    moved = np.asarray(ImageOps.exif_transpose(idx))
    return stored.reshape(h * w, *stored.shape[2:])[moved]


def _stored(dtype, channels, seed=0):
    """A non-square picture whose every row and column differs (a wrong turn or shear shows)."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    shape = (11, 17) if channels == 1 else (11, 17, channels)
    a = (rng.random(shape) * (top + 1)).astype(dtype)
    if channels == 4:
        a[..., 3] = np.where(a[..., 3] > top // 2, top, 0)   # some transparency
    return a


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("kind", ["L", "I;16", "RGB", "RGBA", "RGB;16"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_of_every_orientation_reads_upright(tmp_path, orientation, kind, compression):
    # Grey (and RGBA) uncompressed TIFFs of orientation 5-8 came out scrambled: Pillow mapped the
    # file's samples at the turned size; 16-bit grey 2-4 came out as stored (turned twice) and 5-8
    # at 8 bits
    dtype = np.uint16 if "16" in kind else np.uint8
    channels = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4, "RGB;16": 3}[kind]
    stored = _stored(dtype, channels, seed=orientation)
    p = tmp_path / "o.tif"
    tifffile.imwrite(p, stored, photometric="minisblack" if channels == 1 else "rgb",
                     extrasamples=(2,) if channels == 4 else None, compression=compression,
                     extratags=[(0x0112, "H", 1, orientation, True)])
    f = load_image_file(p)
    want = _upright(stored, orientation)
    want3 = np.repeat(want[..., None], 3, axis=2) if channels == 1 else want[..., :3]
    assert f.orientation == orientation
    assert f.gray == (channels == 1)
    if dtype == np.uint16:
        assert f.rgb16 is not None, f.notes
        np.testing.assert_array_equal(f.rgb16, want3)
        np.testing.assert_array_equal(f.rgb, round_16_to_8(want3))
    else:
        np.testing.assert_array_equal(f.rgb, want3)
    if channels == 4:
        np.testing.assert_array_equal(f.alpha, want[..., 3])


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
def test_pillow_written_grey_tiff_reads_upright(tmp_path, orientation):
    # the probe's files: Pillow's own uncompressed L TIFF with the orientation in its EXIF
    stored = _stored(np.uint8, 1, seed=orientation)
    ex = Image.Exif()
    ex[0x0112] = orientation
    p = tmp_path / "g.tif"
    Image.fromarray(stored).save(p, exif=ex)
    np.testing.assert_array_equal(load_image_file(p).rgb[..., 0], _upright(stored, orientation))


def _pnm(path, magic, a, maxval):
    h, w = a.shape[:2]
    path.write_bytes(b"%s\n# a comment\n%d %d\n%d\n" % (magic, w, h, maxval) + a.astype(">u2").tobytes())


@pytest.mark.parametrize("maxval", [65535, 1023])
def test_dark_16bit_pgm_keeps_its_level_and_16_bits(tmp_path, maxval):
    # samples 2..200 of 65535 were taken for 8-bit ones (257x brighter) and written at 8 bits
    a = np.linspace(2, 200, 11 * 17).reshape(11, 17).astype(np.uint16)
    p = tmp_path / "dark.pgm"
    _pnm(p, b"P5", a, maxval)
    f = load_image_file(p)
    full = np.round(a * (65535 / maxval)).astype(np.uint16)   # the file's scale on 0..65535
    assert f.gray
    assert f.rgb16 is not None
    np.testing.assert_array_equal(f.rgb16[..., 0], full)
    np.testing.assert_array_equal(f.rgb[..., 0], round_16_to_8(full))
    if maxval == 65535:
        assert f.rgb.max() <= 1   # 200 / 65535 of white, not 200 / 255


@pytest.mark.parametrize("maxval", [65535, 4095])
def test_16bit_ppm_is_read_at_16_bits(tmp_path, maxval):
    rng = np.random.default_rng(maxval)
    a = (rng.random((11, 17, 3)) * (maxval + 1)).astype(np.uint16)
    p = tmp_path / "c.ppm"
    _pnm(p, b"P6", a, maxval)
    f = load_image_file(p)
    full = np.round(a * (65535 / maxval)).astype(np.uint16)
    assert not f.gray and f.rgb16 is not None
    np.testing.assert_array_equal(f.rgb16, full)
    # the 8-bit picture agrees with Pillow's own 8-bit decoding within the rounding
    assert np.abs(f.rgb.astype(int) - np.asarray(Image.open(p)).astype(int)).max() <= 1


def test_plain_16bit_ppm_says_it_is_read_at_8_bits(tmp_path):
    a = np.arange(3 * 4 * 3).reshape(3, 4, 3) * 1000
    p = tmp_path / "plain.ppm"
    p.write_text("P3\n4 3\n65535\n" + " ".join(str(v) for v in a.ravel()) + "\n")
    f = load_image_file(p)
    assert f.rgb16 is None
    assert "16-bit PPM decoded at 8 bits" in f.notes


def _hidden_colour_picture():
    rng = np.random.default_rng(3)
    rgb = (rng.random((24, 32, 3)) * 256).astype(np.uint8)
    alpha = np.full((24, 32), 255, np.uint8)
    alpha[:12, :16] = 0
    rgb[:12, :16] = (0, 255, 0)   # an editor's leftover green under the transparent corner
    return rgb, alpha


def test_lossless_webp_keeps_the_colour_under_alpha_0(tmp_path):
    rgb, alpha = _hidden_colour_picture()
    p = tmp_path / "o.webp"
    write_restored(p, rgb, alpha, False, "webp")
    back = np.asarray(Image.open(p))
    np.testing.assert_array_equal(back[..., 3], alpha)
    np.testing.assert_array_equal(back[..., :3], rgb)   # (libwebp had made it black)


def test_lossy_webp_codes_the_colour_under_alpha_0_as_the_rest(tmp_path):
    rgb, alpha = _hidden_colour_picture()
    p = tmp_path / "o.webp"
    write_restored(p, rgb, alpha, False, "webp", quality=90)
    back = np.asarray(Image.open(p)).astype(int)
    np.testing.assert_array_equal(back[..., 3], alpha)
    inner = back[2:10, 2:14, :3]   # away from the edge, where the lossy coding blends
    assert np.abs(inner - (0, 255, 0)).max() <= 8


def _jpeg(path, exif=None, dpi=None):
    kw = {}
    if exif is not None:
        kw["exif"] = exif
    if dpi is not None:
        kw["dpi"] = dpi
    Image.fromarray(_stored(np.uint8, 3)).save(path, quality=90, **kw)


def test_jpeg_without_a_stated_resolution_has_none(tmp_path):
    # Pillow says 72 x 72 dpi for a JPEG with EXIF and no resolution: outputs carried it
    ex = Image.Exif()
    ex[0x010F] = "Camera"
    p = tmp_path / "x.jpg"
    _jpeg(p, exif=ex)
    assert Image.open(p).info.get("dpi") == (72, 72)   # Pillow's placeholder
    assert load_image_file(p).dpi is None
    _jpeg(p)
    assert load_image_file(p).dpi is None


def test_jpeg_resolution_from_jfif_or_exif(tmp_path):
    p = tmp_path / "x.jpg"
    _jpeg(p, dpi=(300, 150))
    assert load_image_file(p).dpi == (300, 150)
    for unit, want in [(2, (200.0, 100.0)), (3, (200 * 2.54, 100 * 2.54)), (None, (200.0, 100.0))]:
        ex = Image.Exif()
        ex[0x011A], ex[0x011B] = 200.0, 100.0
        if unit is not None:
            ex[0x0128] = unit
        _jpeg(p, exif=ex)
        assert load_image_file(p).dpi == pytest.approx(want)
    ex = Image.Exif()
    ex[0x011A], ex[0x011B], ex[0x0128], ex[0x0112] = 200.0, 100.0, 2, 6   # turned: x and y swap
    _jpeg(p, exif=ex)
    assert load_image_file(p).dpi == pytest.approx((100.0, 200.0))
    ex = Image.Exif()
    ex[0x011A], ex[0x011B], ex[0x0128] = 200.0, 100.0, 1   # no absolute unit: not a dpi
    _jpeg(p, exif=ex)
    assert load_image_file(p).dpi is None


def test_uint32_grey_tiff_is_read_unsigned(tmp_path):
    # Pillow reads a uint32 TIFF as signed mode I: samples of 2**31 and over were refused as
    # negative ones; within 0..65535 it reads as before
    from fastreshuffle.errors import ImageReadError
    p = tmp_path / "u32.tif"
    tifffile.imwrite(p, np.array([[0, 100, 70000], [2 ** 31 + 5, 2 ** 32 - 1, 3]], np.uint32))
    with pytest.raises(ImageReadError, match=r"span 0\.0\.\.4294967295\.0, outside 0\.\.65535"):
        load_image_file(p)
    tifffile.imwrite(p, np.array([[0, 257], [65535, 514]], np.uint32))
    np.testing.assert_array_equal(load_image_file(p).rgb[..., 0], [[0, 1], [255, 2]])


@pytest.mark.parametrize("marker, bits, said", [(0xC1, 12, "a 12-bit JPEG: not read"),
                                                (0xC3, 8, "a lossless JPEG (8-bit samples): not read")])
def test_a_jpeg_pillow_cannot_decode_says_what_it_is(tmp_path, marker, bits, said):
    """A 12-bit or a lossless JPEG was refused as "not a recognised image format (corrupt file or
    not an image)"; its frame header says what it is."""
    import io as _io
    import re
    from fastreshuffle.io.images import ImageReadError
    b = _io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(b, "JPEG", quality=90)
    data = bytearray(b.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 1], data[sof + 4] = marker, bits
    path = tmp_path / "odd.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=re.escape(said)):
        load_image_file(path)


def test_a_truncated_tiff_says_so_and_nothing_else(tmp_path, capfd):
    """A TIFF cut short was "not a recognised image format", after a stray line of tifffile's log
    ("<tifffile.TiffPages @...> invalid offset to first page")."""
    from fastreshuffle.io.images import ImageReadError
    full = tmp_path / "full.tif"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        full, compression="tiff_lzw")
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[:len(data) * 6 // 10])
    capfd.readouterr()
    with pytest.raises(ImageReadError, match="damaged or truncated TIFF"):
        load_image_file(cut)
    out, err = capfd.readouterr()
    assert "tifffile" not in out + err, out + err


def test_a_valid_tiff_of_a_layout_not_read_is_not_called_damaged(tmp_path):
    """From a review: a whole 16-bit TIFF of three minisblack samples (neither Pillow nor the
    reader takes it) was "a damaged or truncated TIFF"; it is an unsupported layout, said.  Cut
    short, it is still a truncated one."""
    from fastreshuffle.io.images import ImageReadError
    a = np.random.default_rng(0).integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    p = tmp_path / "m3.tif"
    tifffile.imwrite(p, a, photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match=r"m3.tif: a TIFF of a layout not supported \(30 x 20, 3 samples of "
                                             r"16 bits, unsigned, photometric minisblack\)"):
        load_image_file(p)
    (tmp_path / "cut.tif").write_bytes(p.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="damaged or truncated TIFF"):
        load_image_file(tmp_path / "cut.tif")
