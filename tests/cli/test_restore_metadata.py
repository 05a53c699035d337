"""What ``restore`` keeps of a file beyond its pixels (review of outputs, session 27): float TIFFs,
colour-key transparency, DPI / text / comments, big EXIF and XMP in JPEG, opaque alpha, 16-bit
PNGs Pillow reads at 8 bits, and the metadata of a PIL image restored through the API."""
import struct
import zlib

import numpy as np
import pytest
from helpers import photo, png16_bytes
from PIL import Image, ImageCms, PngImagePlugin

import fastreshuffle as fr
from fastreshuffle.cli import main
from fastreshuffle.io.images import load_image_file

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def run(*args):
    return main(["restore", "--device", "cpu", *map(str, args)])


def ramp(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return ((x + y) / (h + w - 2)).astype(np.float32)     # 0 .. 1


def eight_bits(a):
    return np.round(a.astype(np.float64) * 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [1.0, 255.0, 65535.0])
def test_a_float_grey_tiff_is_read_at_its_scale(tmp_path, scale, capsys):
    stored = ramp() * np.float32(scale)
    Image.fromarray(stored, "F").save(tmp_path / "f.tif")
    f = load_image_file(tmp_path / "f.tif")
    np.testing.assert_array_equal(f.rgb[..., 0], eight_bits(stored / np.float64(scale)))
    assert "32-bit float grey decoded at 8 bits" in f.notes
    assert run(tmp_path / "f.tif", "--format", "tiff") == 0
    out = np.asarray(Image.open(tmp_path / "f_restored.tif"))
    assert out.min() == 0 and out.max() == 255                 # not a black image of 0 / 1


def test_a_float_colour_tiff_is_read_through_tifffile(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    a = np.dstack([ramp(), 1 - ramp(), np.full_like(ramp(), 0.5), (ramp() > 0.5).astype(np.float32)])
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="rgb")
    f = load_image_file(tmp_path / "c.tif")
    np.testing.assert_array_equal(f.rgb, eight_bits(a[..., :3]))
    np.testing.assert_array_equal(f.alpha, np.where(ramp() > 0.5, 255, 0).astype(np.uint8))
    assert not f.gray and "32-bit float TIFF read through tifffile" in f.notes[0]


@pytest.mark.parametrize("mode,key", [("RGB", (0, 255, 0)), ("L", 7)])
def test_a_colour_key_transparency_is_kept(tmp_path, mode, key):
    im = Image.fromarray(photo()).convert(mode)
    a = np.array(im)
    a[10:20, 5:30] = key
    Image.fromarray(a, mode).save(tmp_path / "k.png", transparency=key)
    assert run(tmp_path / "k.png") == 0
    out = Image.open(tmp_path / "k_restored.png")
    assert out.mode == ("RGBA" if mode == "RGB" else "LA")
    alpha = np.asarray(out)[..., -1]
    assert (alpha[10:20, 5:30] == 0).all() and (alpha == 0).sum() == 10 * 25
    assert run(tmp_path / "k.png", "--format", "jpeg") == 1     # transparency never flattened silently


def test_dpi_comment_and_text_are_kept(tmp_path):
    im = Image.fromarray(photo())
    im.save(tmp_path / "s.jpg", quality=30, dpi=(300, 300), comment=b"scanned 1987")
    info = PngImagePlugin.PngInfo()
    info.add_text("Copyright", "(c) Me")
    info.add_itxt("Description", "ph\u00f6to \u2603")
    im.save(tmp_path / "t.png", dpi=(150, 150), pnginfo=info)
    for fmt in ("same", "png", "tiff"):
        assert run(tmp_path / "s.jpg", tmp_path / "t.png", "--format", fmt, "-o", tmp_path / fmt, "--suffix", "") == 0
    same_jpg = Image.open(tmp_path / "same" / "s.jpg")
    assert same_jpg.info["dpi"] == (300, 300) and same_jpg.info["comment"] == b"scanned 1987"
    png = Image.open(tmp_path / "png" / "s.png")
    assert round(png.info["dpi"][0]) == 300 and png.info["Comment"] == "scanned 1987"
    text = Image.open(tmp_path / "same" / "t.png")
    assert round(text.info["dpi"][0]) == 150
    assert text.text["Copyright"] == "(c) Me" and text.text["Description"] == "ph\u00f6to \u2603"
    assert Image.open(tmp_path / "tiff" / "s.tif").info["dpi"] == (300, 300)


def test_a_tiff_without_resolution_gets_none_made_up(tmp_path):
    """A TIFF with no resolution tags: Pillow reports 1 x 1 dpi as a placeholder, which was
    written into the output as if it were the file's (a 500 px photo printed 500 inches wide)."""
    Image.fromarray(photo()).save(tmp_path / "n.tif")
    assert 282 not in Image.open(tmp_path / "n.tif").tag_v2
    assert load_image_file(tmp_path / "n.tif").dpi is None
    for fmt in ("png", "tiff"):
        assert run(tmp_path / "n.tif", "--format", fmt, "-o", tmp_path / fmt) == 0
    assert "dpi" not in Image.open(tmp_path / "png" / "n_restored.png").info
    assert 282 not in Image.open(tmp_path / "tiff" / "n_restored.tif").tag_v2
    Image.fromarray(photo()).save(tmp_path / "r.tif", dpi=(240, 240))      # a real one is kept
    assert load_image_file(tmp_path / "r.tif").dpi == (240, 240)


def test_dpi_turns_with_the_pixels_and_exif_dimensions_follow(tmp_path):
    stored = photo(48, 72)
    ex = Image.Exif()
    ex[0x0112] = 6
    sub = ex.get_ifd(0x8769)
    sub[0xA002], sub[0xA003] = 72, 48
    for ext, kw in ((".jpg", {"quality": 30}), (".tif", {})):
        Image.fromarray(stored).save(tmp_path / f"o{ext}", dpi=(100, 200), exif=ex.tobytes(), **kw)
        assert run(tmp_path / f"o{ext}", "--format", "png", "--overwrite") == 0
        out = Image.open(tmp_path / "o_restored.png")
        assert out.size == (48, 72)
        assert tuple(round(d) for d in out.info["dpi"]) == (200, 100)
        if ext == ".jpg":
            dims = out.getexif().get_ifd(0x8769)
            assert (dims[0xA002], dims[0xA003]) == (48, 72)


def test_a_16bit_colour_png_keeps_dpi_and_text(tmp_path):
    a = (photo().astype(np.uint16) * 257 + 3)
    from fastreshuffle.io.png16 import encode_png16
    (tmp_path / "d.png").write_bytes(encode_png16(a, text={"Author": "me"}, dpi=(300, 300)))
    assert run(tmp_path / "d.png") == 0
    out = Image.open(tmp_path / "d_restored.png")
    assert round(out.info["dpi"][0]) == 300 and out.text["Author"] == "me"


def test_metadata_over_a_jpeg_marker_is_dropped_and_said(tmp_path, capsys):
    ex = Image.Exif()
    ex[0x010F] = "Cam"
    ex.get_ifd(0x8769)[0x927C] = b"M" * 70000          # a maker note over 64 KB
    ex.get_ifd(0x8769)[0x9003] = "2021:06:01 12:00:00"
    Image.fromarray(photo()).save(tmp_path / "e.png", exif=ex.tobytes())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + "x" * 70000 + "</x:xmpmeta>")
    Image.fromarray(photo()).save(tmp_path / "x.png", pnginfo=info)
    assert run(tmp_path / "e.png", tmp_path / "x.png", "--format", "jpeg") == 0
    err = capsys.readouterr().err
    assert "EXIF over the 64 KB a JPEG marker holds: written without its maker note" in err
    assert "XMP of" in err and "not kept" in err
    kept = Image.open(tmp_path / "e_restored.jpg").getexif()
    assert kept[0x010F] == "Cam" and kept.get_ifd(0x8769)[0x9003] == "2021:06:01 12:00:00"
    assert 0x927C not in kept.get_ifd(0x8769)


def test_an_opaque_alpha_is_written_as_jpeg_and_transparency_refused_before_restoring(tmp_path, monkeypatch,
                                                                                        capsys):
    a = photo()
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]), "RGBA").save(tmp_path / "o.png")
    assert run(tmp_path / "o.png", "--format", "jpeg") == 0
    assert Image.open(tmp_path / "o_restored.jpg").mode == "RGB"
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 254, np.uint8)]), "RGBA").save(tmp_path / "t.png")
    import fastreshuffle.inference.tiling as tiling

    def never(*a, **k):
        raise AssertionError("the network ran for an output that is refused")
    monkeypatch.setattr(tiling, "restore_pixels", never)
    assert run(tmp_path / "t.png", "--format", "jpeg") == 1
    assert "JPEG cannot hold the image's transparency" in capsys.readouterr().err


def _png16(arr, ctype, interlace=False):
    return png16_bytes(arr, ctype, interlace)


def test_16bit_pngs_pillow_reads_at_8_bits_are_said_and_grey_stays_grey(tmp_path, capsys):
    g = (np.mgrid[0:32, 0:48][1] * 1000 + 7).astype(np.uint16)
    (tmp_path / "la.png").write_bytes(_png16(np.dstack([g, 65535 - g]), 4))
    (tmp_path / "i.png").write_bytes(_png16(np.dstack([g, g, g]), 2, interlace=True))
    assert run(tmp_path / "la.png", tmp_path / "i.png") == 0
    err = capsys.readouterr().err
    assert "16-bit grey PNG with alpha decoded at 8 bits" in err
    assert "interlaced 16-bit PNG decoded at 8 bits" in err
    assert Image.open(tmp_path / "la_restored.png").mode == "LA"


def test_a_copied_cmyk_jpeg_is_not_said_to_be_converted(tmp_path, capsys):
    Image.fromarray(photo()).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    assert run(tmp_path / "c.jpg", "--format", "same") == 0
    err = capsys.readouterr().err
    assert (tmp_path / "c_restored.jpg").read_bytes() == (tmp_path / "c.jpg").read_bytes()
    assert "converted" not in err


def test_the_model_is_said_only_for_files_restored_and_output_quality_where_ignored(tmp_path, capsys):
    import io
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "JPEG", quality=20)
    Image.open(buf).save(tmp_path / "p.png")             # a JPEG's pixels: restored
    Image.fromarray(photo()).save(tmp_path / "clean.png")  # never compressed: left as it is
    assert run(tmp_path / "bad.jpg", tmp_path / "p.png", tmp_path / "clean.png", "--format", "same",
               "--output-quality", "80") == 1
    err = capsys.readouterr().err
    assert "bad.jpg: model" not in err and "p.png: model jpeg" in err and "clean.png: model" not in err, err
    assert "p.png: --output-quality does not apply to its PNG output (lossless)" in err


def test_a_restored_pil_image_carries_the_source_metadata():
    import io
    ex = Image.Exif()
    ex[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(photo()).save(buf, "JPEG", quality=30, exif=ex.tobytes(), icc_profile=SRGB, dpi=(300, 300),
                                  comment=b"hi")
    src = Image.open(io.BytesIO(buf.getvalue()))
    out = fr.restore(src, model="jpeg", device="cpu")
    assert out.size == src.size                       # as stored: its EXIF orientation still applies
    assert out.getexif()[0x0112] == 6
    assert out.info["icc_profile"] == SRGB and out.info["dpi"] == (300, 300) and out.info["comment"] == b"hi"
    assert "jfif" not in out.info                      # how the file was coded is not the new image's


def test_a_float_tiff_with_overshoot_and_a_rotation_tag(tmp_path):
    """[0, 1] floats with a sample at 1.001 were read on the 0-255 scale (a black image); a float
    colour TIFF's orientation tag was not applied."""
    tifffile = pytest.importorskip("tifffile")
    g = np.full((6, 10), 0.5, np.float32)
    g[0, 0] = 1.001
    Image.fromarray(g, "F").save(tmp_path / "g.tif")
    assert load_image_file(tmp_path / "g.tif").rgb[3, 3, 0] == 128
    a = np.dstack([ramp(), 1 - ramp(), np.full_like(ramp(), 0.25)])     # 48 x 64, stored
    tifffile.imwrite(tmp_path / "r.tif", a, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    f = load_image_file(tmp_path / "r.tif")
    want = eight_bits(np.rot90(a, -1))                  # orientation 6: turned 90 degrees clockwise
    assert f.rgb.shape == (64, 48, 3) and f.orientation == 6
    np.testing.assert_array_equal(f.rgb, want)


def test_float_tiff_samples_out_of_range_are_said_and_nan_refused(tmp_path, capsys):
    """From a review: NaN samples became 0, colour above 1.0 was clipped, and a grey picture up to
    3.0 was read on the 0-255 scale (near black) -- each without a word.  NaN is refused naming the
    file (restore() refuses a NaN array); clipping and a scale other than [0, 1] are noted."""
    from fastreshuffle.errors import ImageReadError
    tifffile = pytest.importorskip("tifffile")
    a = np.dstack([ramp(), 1 - ramp(), np.full_like(ramp(), 0.25)])
    nan = a.copy()
    nan[5, 7, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan, photometric="rgb")
    with pytest.raises(ImageReadError, match=r"nan.tif: 1 of its 9216 float samples are NaN or infinite"):
        load_image_file(tmp_path / "nan.tif")
    grey = ramp().copy()
    grey[0, 0] = np.inf
    Image.fromarray(grey, "F").save(tmp_path / "inf.tif")
    with pytest.raises(ImageReadError, match=r"inf.tif: 1 of its 3072 float samples are NaN or infinite"):
        load_image_file(tmp_path / "inf.tif")
    assert run(tmp_path / "nan.tif") == 1 and "nan.tif: 1 of its 9216" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "hdr.tif", a * 2, photometric="rgb")
    notes = load_image_file(tmp_path / "hdr.tif").notes
    assert "float samples span [0, 2], outside [0, 1]: clipped (high-dynamic-range samples above 1.0 lost)" in notes
    Image.fromarray(ramp() * 3, "F").save(tmp_path / "g3.tif")
    assert any(n.startswith("float samples span [0, 3]: taken on a 0-255 scale, which makes the picture near black")
               for n in load_image_file(tmp_path / "g3.tif").notes)
    tifffile.imwrite(tmp_path / "ok.tif", a, photometric="rgb")
    assert not any("span" in n for n in load_image_file(tmp_path / "ok.tif").notes)


def test_a_16bit_png_colour_key_is_matched_at_16_bits(tmp_path):
    """Pillow reads a 16-bit RGB PNG at 8 bits but keeps its tRNS key at 16: the key matched the
    wrong pixels (five of six transparent, the keyed one opaque)."""
    from fastreshuffle.io.png16 import encode_png16

    def chunk(k, p):
        return struct.pack(">I", len(p)) + k + p + struct.pack(">I", zlib.crc32(k + p))
    arr = np.full((2, 3, 3), 1000, np.uint16)      # 8-bit view: 3 3 3 everywhere
    arr[0, 0] = (3, 3, 3)                           # the key, on one pixel only
    data = encode_png16(arr)
    i = data.index(b"IDAT") - 4
    (tmp_path / "k.png").write_bytes(data[:i] + chunk(b"tRNS", struct.pack(">HHH", 3, 3, 3)) + data[i:])
    f = load_image_file(tmp_path / "k.png")
    assert f.alpha16.tolist() == [[0, 65535, 65535], [65535] * 3]
    assert f.alpha.tolist() == [[0, 255, 255], [255] * 3]


def test_text_and_comments_a_format_cannot_hold_are_said(tmp_path, capsys):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "me")
    Image.fromarray(photo()).save(tmp_path / "t.png", pnginfo=info)
    Image.fromarray(photo()).save(tmp_path / "c.jpg", quality=30, comment=b"hello")
    assert run(tmp_path / "t.png", tmp_path / "c.jpg", "--format", "webp") == 0
    err = capsys.readouterr().err
    assert "t.png: the PNG's text (Author) is not kept: WEBP has no place for it" in err
    assert "c.jpg: the comment is not kept: WEBP has no place for it" in err


def test_a_flat_heif_comes_back_as_decoded(tmp_path):
    """Uniform areas are kept under the HEVC guard too (its tests passed with the rule off)."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    for value in (0, 255):      # without the rule: off by up to 2 / 4 levels at 256 px
        Image.fromarray(np.full((256, 256, 3), value, np.uint8)).save(tmp_path / "f.heic", format="HEIF", quality=15)
        src = Image.open(tmp_path / "f.heic")
        decoded = np.asarray(src.convert("RGB"))
        assert np.array_equal(np.asarray(fr.restore(src, "hevc", device="cpu")), decoded)


def test_a_profile_that_does_not_fit_the_output_is_said_when_left_out(tmp_path, capsys):
    """An RGB profile on a grey JPEG cannot describe the grey output: left out, and now said (it
    was dropped without a word); a fitting one is kept without a note."""
    grey = Image.fromarray(photo()).convert("L")
    grey.save(tmp_path / "g.jpg", quality=30, icc_profile=SRGB)
    Image.fromarray(photo()).save(tmp_path / "c.jpg", quality=30, icc_profile=SRGB)
    assert main(["restore", str(tmp_path / "g.jpg"), str(tmp_path / "c.jpg"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "g.jpg: its ICC profile (RGB) does not describe the grey output: left out" in err
    assert "c.jpg: its ICC profile" not in err
    assert "icc_profile" not in Image.open(tmp_path / "g_restored.png").info
    assert Image.open(tmp_path / "c_restored.png").info["icc_profile"] == SRGB


def test_no_empty_exif_or_gps_directory_is_added(tmp_path):
    """An input whose EXIF has no EXIF or GPS sub-directory came back with empty ones (pointer tags
    34665 and 34853 it did not have: a helper's read); one that has them keeps them."""
    ex = Image.Exif()
    ex[0x010F] = "Cam"
    ex[0x0112] = 1
    Image.fromarray(photo(48, 64)).save(tmp_path / "plain.jpg", quality=30, exif=ex.tobytes())
    ex.get_ifd(0x8825)[2] = (52.0, 30.0, 0.0)                  # GPSLatitude
    ex.get_ifd(0x8769)[0x9003] = "2026:12:07 10:00:00"         # DateTimeOriginal
    Image.fromarray(photo(48, 64)).save(tmp_path / "gps.jpg", quality=30, exif=ex.tobytes())
    for fmt in ("png", "jpeg"):
        assert run(tmp_path / "plain.jpg", tmp_path / "gps.jpg", "--format", fmt, "--overwrite", "-o", tmp_path / fmt) == 0
        suffix = ".png" if fmt == "png" else ".jpg"
        plain = Image.open(tmp_path / fmt / f"plain_restored{suffix}").getexif()
        assert plain[0x010F] == "Cam" and 0x8769 not in plain and 0x8825 not in plain, dict(plain)
        gps = Image.open(tmp_path / fmt / f"gps_restored{suffix}").getexif()
        assert gps.get_ifd(0x8825)[2] == (52.0, 30.0, 0.0)
        assert gps.get_ifd(0x8769)[0x9003] == "2026:12:07 10:00:00"
