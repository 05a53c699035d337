"""``fastreshuffle restore``: output formats x metadata x orientation, 16-bit, CMYK, multi-frame,
our own outputs, sub-folders, tiny images; ``restore()`` float range (issue #16)."""
import io

import numpy as np
import pytest
import torch
from helpers import photo
from PIL import Image, ImageCms, ImageOps

import fastreshuffle as fr
from fastreshuffle.cli import main
from fastreshuffle.io.images import load_image_file, orient_array
from fastreshuffle.io.png16 import encode_png16, read_png16

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="%d" '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:rights="(c) Someone"/></rdf:RDF></x:xmpmeta>')
EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
PIL_FMT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}


def save_with_metadata(path, a, orientation, fmt="JPEG"):
    im = Image.fromarray(a)
    ex = im.getexif()
    ex[0x0112] = orientation
    ex[0x010F] = "TestCam"
    ex[0x8298] = "(c) Someone"
    ex.get_ifd(0x8769)[0x9003] = "2021:06:01 12:00:00"
    kw = {"quality": 60} if fmt == "JPEG" else {}
    im.save(path, format=fmt, exif=ex, icc_profile=SRGB, xmp=XMP % orientation, **kw)


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_formats_keep_metadata_and_apply_orientation_once(tmp_path, fmt, orientation):
    stored = photo()
    src = tmp_path / "in.jpg"
    save_with_metadata(src, stored, orientation)
    assert main(["restore", "-q", str(src), "--format", fmt, "--device", "cpu"]) == 0
    out = tmp_path / f"in_restored{EXT[fmt]}"
    im = Image.open(out)
    assert im.format == PIL_FMT[fmt]
    decoded = np.asarray(Image.open(src).convert("RGB"))       # stored pixels, as decoded
    upright = orient_array(decoded, orientation)
    assert im.size == (upright.shape[1], upright.shape[0])
    got = np.asarray(im.convert("RGB")).astype(np.float64)
    err = np.abs(got - upright).mean()
    assert err < 4, err  # restored ~ the upright input (lossy formats at q95 included)
    if orientation in (6, 8):  # the other rotation is far away
        wrong = orient_array(decoded, 14 - orientation)
        assert np.abs(got - wrong).mean() > 5 * err + 10
    ex = im.getexif()
    assert ex.get(0x0112, 1) == 1
    assert ex.get(0x010F) == "TestCam" and ex.get(0x8298) == "(c) Someone"
    assert ex.get_ifd(0x8769).get(0x9003) == "2021:06:01 12:00:00"
    assert ex.get(0x0131, "").startswith("fastreshuffle ")
    assert im.info.get("icc_profile") == SRGB
    xmp = im.info.get("xmp")
    assert xmp and b"(c) Someone" in xmp and b'tiff:Orientation="1"' in xmp


def test_lossless_png_output_equals_api(tmp_path):
    stored = photo(40, 56)
    src = tmp_path / "p.png"
    save_with_metadata(src, stored, 6, fmt="PNG")
    assert main(["restore", "-q", str(src), "--device", "cpu", "--no-guard"]) == 0
    got = np.asarray(Image.open(tmp_path / "p_restored.png"))
    want = fr.restore(np.rot90(stored, -1).copy(), device="cpu", guard=False)
    assert np.abs(want.astype(int) - np.rot90(stored, -1)).max() > 0  # the network did change it
    np.testing.assert_array_equal(got, want)


def test_guarded_png_with_jpeg_history_equals_api(tmp_path):
    # a JPEG q20 decoded, cropped off its grid and kept as PNG (with orientation 8): the blind path
    from skimage import data
    big = np.asarray(Image.open(_jpeg_bytes(data.astronaut()[64:264, 96:336], 20)).convert("RGB"))
    stored = big[3:, 5:]
    src = tmp_path / "h.png"
    save_with_metadata(src, stored, 8, fmt="PNG")
    assert main(["restore", "-q", str(src), "--device", "cpu"]) == 0
    got = np.asarray(Image.open(tmp_path / "h_restored.png"))
    upright = np.rot90(stored, 1).copy()
    want = fr.restore(upright, device="cpu")
    assert np.abs(want.astype(int) - upright).max() > 0  # restored, not passed through
    np.testing.assert_array_equal(got, want)


def _jpeg_bytes(a, q):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return buf


def test_output_quality_and_same(tmp_path):
    a = photo()
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=50)
    Image.fromarray(a).save(tmp_path / "b.webp", quality=50)
    Image.fromarray(a).save(tmp_path / "c.bmp")
    assert main(["restore", "-q", str(tmp_path), "--format", "same", "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "a_restored.jpg").format == "JPEG"
    assert Image.open(tmp_path / "b_restored.webp").format == "WEBP"
    assert Image.open(tmp_path / "c_restored.png").format == "PNG"  # BMP is not written: PNG
    lo, hi = tmp_path / "lo", tmp_path / "hi"
    for q, d in ((20, lo), (95, hi)):
        assert main(["restore", "-q", str(tmp_path / "a.jpg"), "--format", "jpeg", "--output-quality", str(q),
                     "-o", str(d), "--device", "cpu"]) == 0
    assert (lo / "a_restored.jpg").stat().st_size < (hi / "a_restored.jpg").stat().st_size
    assert main(["restore", "-q", str(tmp_path / "a.jpg"), "--output-quality", "90"]) == 2   # PNG is lossless
    assert main(["restore", "-q", str(tmp_path / "a.jpg"), "--format", "jpeg", "--output-quality", "0"]) == 2


def test_16bit_kept_in_png_and_tiff(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = photo().astype(np.uint16) * 257 + rng.integers(0, 257, photo().shape).astype(np.uint16)
    (tmp_path / "c16.png").write_bytes(encode_png16(base, icc=SRGB))
    g16 = base[..., 0].copy()
    Image.fromarray(g16).save(tmp_path / "g16.png")
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "t16.tif", base, photometric="rgb")
    assert main(["restore", "-q", str(tmp_path), "--format", "same", "--device", "cpu"]) == 0
    c = read_png16(tmp_path / "c16_restored.png")
    assert c.dtype == np.uint16 and (c % 257 != 0).mean() > 0.5       # real 16-bit values
    assert np.abs(c.astype(float) - base).mean() < 4 * 257
    assert Image.open(tmp_path / "c16_restored.png").info.get("icc_profile") == SRGB
    g = Image.open(tmp_path / "g16_restored.png")
    assert g.mode == "I;16" and (np.asarray(g) % 257 != 0).mean() > 0.5
    t = tifffile.imread(tmp_path / "t16_restored.tif")
    assert t.dtype == np.uint16 and t.shape == base.shape and (t % 257 != 0).mean() > 0.5
    # to JPEG: 8 bits, said
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "c16.png"), "--format", "jpeg", "-o", str(tmp_path / "j"),
                 "--device", "cpu"]) == 0
    assert "written at 8 bits" in capsys.readouterr().err
    assert Image.open(tmp_path / "j" / "c16_restored.jpg").mode == "RGB"


def test_cmyk_profile_never_copied_onto_rgb(tmp_path, capsys):
    fake_cmyk_icc = bytes(16) + b"CMYK" + b"Lab " + bytes(108)  # header says CMYK; not a usable profile
    Image.fromarray(photo()).convert("CMYK").save(tmp_path / "k.jpg", icc_profile=fake_cmyk_icc, quality=80)
    assert main(["restore", str(tmp_path / "k.jpg"), "--device", "cpu"]) == 0
    im = Image.open(tmp_path / "k_restored.png")
    assert im.mode == "RGB" and im.info.get("icc_profile") in (None, SRGB)
    assert "CMYK converted" in capsys.readouterr().err


def test_multiframe_said(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    assert main(["restore", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "anim.gif: has 3 frames; only the first is read (and written)" in err
    assert "pages.tif: has 3 frames; only the first is read (and written)" in err
    assert load_image_file(tmp_path / "pages.tif").n_frames == 3


def test_rgba_to_jpeg_refused_clearly(tmp_path, capsys):
    a = np.dstack([photo(), np.full(photo().shape[:2], 128, np.uint8)])
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    assert main(["restore", str(tmp_path / "t.png"), "--format", "jpeg", "--device", "cpu"]) == 1
    assert "JPEG cannot hold the image's transparency" in capsys.readouterr().err
    assert not (tmp_path / "t_restored.jpg").exists()


def test_a_name_alone_does_not_make_a_photo_an_output(tmp_path, capsys):
    """Files named like outputs are skipped only as the output of an image beside them (or when
    marked as ours), and are named: a user's own holiday_restored.jpg, or camera names ending in
    the suffix with no such image beside them, are photos (they were skipped, unnamed).  An earlier
    run's byte copy (--format same on a q>=85 JPEG: no mark) is skipped by a later run writing PNG."""
    for n in ("IMG_1", "IMG_11", "DSC_0001", "photo-1", "holiday_restored"):
        Image.fromarray(photo(64)).save(tmp_path / f"{n}.jpg", quality=40)
    Image.fromarray(photo(64)).save(tmp_path / "x.jpg", quality=40)
    Image.fromarray(photo(64)).save(tmp_path / "x1.png")     # x.jpg's output by name (no mark: another tool)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path), "-o", str(out), "--suffix", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    # IMG_11.jpg is named as IMG_1.jpg's output would be: skipped, and said by name
    assert sorted(p.name for p in out.iterdir()) == ["DSC_00011.png", "IMG_11.png", "holiday_restored1.png",
                                                     "photo-11.png", "x1.png"]
    assert "skipped 2 file(s) that are fastreshuffle outputs" in err
    assert f"{tmp_path / 'IMG_11.jpg'}, {tmp_path / 'x1.png'}" in err        # named, sorted
    assert "5 restored, 0 passed through, 2 skipped, 0 failed" in err
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "out2"), "--device", "cpu"]) == 0
    assert (tmp_path / "out2" / "holiday_restored_restored.png").is_file()
    # an unmarked byte copy written by --format same is not restored again by a later PNG run
    copies = tmp_path / "copies"
    copies.mkdir()
    Image.fromarray(photo(64)).save(copies / "b.jpg", quality=92)
    assert main(["restore", str(copies), "--format", "same", "--device", "cpu"]) == 0
    assert (copies / "b_restored.jpg").read_bytes() == (copies / "b.jpg").read_bytes()
    capsys.readouterr()
    assert main(["restore", str(copies), "--device", "cpu"]) == 0
    assert str(copies / "b_restored.jpg") in capsys.readouterr().err
    assert sorted(p.name for p in copies.iterdir()) == ["b.jpg", "b_restored.jpg", "b_restored.png"]


def test_own_outputs_skipped_whatever_the_suffix_and_subfolders_counted(tmp_path, capsys):
    Image.fromarray(photo()).save(tmp_path / "a.jpg", quality=40)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub2").mkdir()
    assert main(["restore", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "2 sub-folder(s) not searched" in err
    assert main(["restore", str(tmp_path), "--suffix", "_v2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 file(s) that are fastreshuffle outputs" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.jpg", "a_restored.png", "a_v2.png"]
    # --quiet: errors only, these notes included -- unless nothing was found, which they explain
    assert main(["restore", str(tmp_path), "--suffix", "_v3", "--device", "cpu", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    only = tmp_path / "only"
    (only / "sub").mkdir(parents=True)
    Image.fromarray(photo()).save(only / "sub" / "a.jpg", quality=40)
    assert main(["restore", str(only), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "1 sub-folder(s) not searched" in err and "no supported image files" in err


def test_tiny_images_unchanged(tmp_path):
    for shape in ((1, 1, 3), (7, 40, 3), (40, 7, 3)):
        a = np.empty(shape, np.uint8)
        a[:] = (199, 102, 51)
        with pytest.warns(UserWarning, match="under 8 pixels on a side: returned unchanged"):
            np.testing.assert_array_equal(fr.restore(a, device="cpu"), a)
    a = np.empty((8, 8, 3), np.uint8)
    a[:] = (199, 102, 51)
    assert fr.restore(a, device="cpu").shape == (8, 8, 3)   # from 8 px the network runs


@pytest.mark.parametrize("bad", [np.full((16, 16, 3), 120.0), np.full((16, 16, 3), -0.5),
                                 np.full((16, 16, 3), np.nan), torch.full((3, 16, 16), 255.0)])
def test_float_out_of_range_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]|NaN"):
        fr.restore(bad, device="cpu")


def test_float_in_range_accepted():
    a = np.full((16, 16, 3), 0.5, np.float32)
    a[0, 0] = 1.0 + 1e-4  # rounding noise is fine
    assert fr.restore(a, device="cpu").dtype == np.float32


def test_image_file_exif_bytes_loadable():
    buf = io.BytesIO()
    save_with_metadata(buf, photo(), 6)
    buf.seek(0)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.jpg"
        p.write_bytes(buf.getvalue())
        f = load_image_file(p)
    ex = Image.Exif()
    ex.load(f.exif)
    assert 0x0112 not in ex and ex[0x010F] == "TestCam"
    assert f.rgb.shape == (72, 48, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_array_is_pillows_exif_transpose(orientation):
    from PIL import ImageOps
    a = photo(6, 10)
    im = Image.fromarray(a)
    ex = im.getexif()
    ex[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=ex)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
    np.testing.assert_array_equal(orient_array(a, orientation), ref)
    if orientation == 6:   # 90 degrees clockwise
        np.testing.assert_array_equal(ref, np.rot90(a, -1))
    if orientation == 8:   # 90 degrees counter-clockwise
        np.testing.assert_array_equal(ref, np.rot90(a, 1))


@pytest.mark.parametrize("kind", ["orientation6", "palette", "cmyk", "grey"])
@pytest.mark.parametrize("fmt", ["tiff", "png"])
def test_tiff_input_structure_tags_never_copied(tmp_path, kind, fmt):
    """A TIFF's own tag block (size, bits, photometric, colour map, strips) is not EXIF: only its
    descriptive tags may travel.  Copied whole, a palette or CMYK TIFF's tags made the restored
    TIFF unreadable and an oriented one a wrong size -- with exit code 0."""
    stored = photo(40, 64)
    im = Image.fromarray(stored)
    ex = Image.Exif()
    ex[0x010F] = "TestCam"
    if kind == "orientation6":
        ex[0x0112] = 6
    elif kind == "palette":
        im = im.quantize(64)
    elif kind == "cmyk":
        im = im.convert("CMYK")
    else:
        im = im.convert("L")
    src = tmp_path / "in.tif"
    im.save(src, exif=ex)
    want = load_image_file(src)          # upright pixels, as restore reads them
    with Image.open(src) as ref:         # read independently: dropping the tags broke no decoding
        ref_rgb = np.asarray(ImageOps.exif_transpose(ref).convert("RGB"))
    if kind != "cmyk":                   # (CMYK goes through a colour-managed conversion)
        np.testing.assert_array_equal(want.rgb, ref_rgb)
    assert main(["restore", "-q", str(src), "--format", fmt, "--device", "cpu", "--no-guard"]) == 0
    out = Image.open(tmp_path / f"in_restored{EXT[fmt]}")
    out.load()
    h, w = want.rgb.shape[:2]
    assert out.size == (w, h)
    assert out.mode == ("L" if kind == "grey" else "RGB")
    got = np.asarray(out.convert("RGB")).astype(np.float64)
    assert np.abs(got - want.rgb).mean() < 4          # the restored photo, not garbage
    oex = out.getexif()
    assert oex.get(0x010F) == "TestCam"               # the descriptive tag is kept
    assert oex.get(0x0112, 1) == 1
    if fmt == "png":                                  # no structure tag smuggled into EXIF
        assert not {0x0100, 0x0101, 0x0102, 0x0106, 0x0111, 0x0140} & set(oex)


def test_same_lossy_format_never_reencodes_what_it_would_make_worse(tmp_path, capsys):
    """Written back as JPEG at q95 4:4:4, a JPEG of quality 95 lost 3.4 dB (24 CBSD432 photos) and
    one of quality 85 all its gain: unchanged pixels, and a JPEG from quality 85 on, are copied
    byte for byte; below that, or with --output-quality, the restored pixels are re-encoded."""
    a = photo(64, 96)
    src = {}
    for name, q in (("q95", 95), ("q90", 90), ("q50", 50)):
        src[name] = tmp_path / f"{name}.jpg"
        Image.fromarray(a).save(src[name], quality=q)
    src["w"] = tmp_path / "w.webp"                     # quantiser 0 (the webp model's guard): left unchanged
    Image.fromarray(a).save(src["w"], quality=100)
    src["w60"] = tmp_path / "w60.webp"                 # restored, written as a lossless WebP
    Image.fromarray(a).save(src["w60"], quality=60)
    src["m"] = tmp_path / "m.jpg"                      # a phone's MPO (JPEG + a second image), q95
    Image.fromarray(a).save(src["m"], format="MPO", save_all=True, append_images=[Image.fromarray(a[::-1].copy())],
                            quality=95)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path), "--format", "same", "-o", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr()
    for name in ("q95", "q90", "w", "m"):
        got = out / f"{src[name].stem}_restored{src[name].suffix}"
        assert got.read_bytes() == src[name].read_bytes(), name
    assert "file copied unchanged" in said.out + said.err          # q90: why the restoration was not kept
    q50 = (out / "q50_restored.jpg").read_bytes()
    assert q50 != src["q50"].read_bytes() and Image.open(io.BytesIO(q50)).format == "JPEG"
    w60 = Image.open(out / "w60_restored.webp")
    assert w60.format == "WEBP" and not np.array_equal(np.asarray(w60.convert("RGB")),
                                                       np.asarray(Image.open(src["w60"]).convert("RGB")))
    # an explicit output quality re-encodes; PNG (the default) keeps q90's partial restoration
    again = tmp_path / "again"
    assert main(["restore", "-q", str(src["q95"]), str(src["q90"]), "--format", "same", "--output-quality", "95",
                 "-o", str(again), "--device", "cpu"]) == 0
    assert (again / "q95_restored.jpg").read_bytes() != src["q95"].read_bytes()
    png = tmp_path / "png"
    assert main(["restore", "-q", str(src["q90"]), "-o", str(png), "--device", "cpu"]) == 0
    restored = np.asarray(Image.open(png / "q90_restored.png"))
    assert (restored != np.asarray(Image.open(src["q90"]))).any()


def test_auto_says_the_models_for_more_than_20_files(tmp_path, capsys):
    """Over 20 files the models are counted once at the end, each quality band's by its name
    (the summary once said "jpeg" for files jpeg-low and jpeg-high had restored)."""
    for i in range(21):
        Image.fromarray(photo(16, 16)).save(tmp_path / f"p{i:02d}.png")
    Image.fromarray(photo(32, 32)).save(tmp_path / "q10.jpg", quality=10)
    Image.fromarray(photo(32, 32)).save(tmp_path / "q90.jpg", quality=90)
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "model jpeg" not in err                              # not said per file ...
    assert "note: models chosen (--model auto" in err            # ... but once, per band
    # the 21 PNGs were left as they are: no model made their pixels (it once said "jpeg for 21 file(s)")
    assert "(--model auto, bfloat16): jpeg-high for 1 file(s), jpeg-low for 1 file(s)\n" in err, err
    assert "2 restored, 21 passed through, 0 skipped, 0 failed" in err


def test_auto_names_per_file_the_model_that_made_the_pixels(tmp_path, capsys):
    """Up to 20 files each is said with the model that restored it: the band's (a q90 file was
    said as "model jpeg", then "restored by jpeg-high"), none for a file left as it was."""
    Image.fromarray(photo(32, 32)).save(tmp_path / "q90.jpg", quality=90)
    Image.fromarray(photo(32, 32)).save(tmp_path / "q30.jpg", quality=30)
    Image.fromarray(photo(32, 32)).save(tmp_path / "q99.jpg", quality=99)
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "q90.jpg: model jpeg-high (float32)" in err and "q30.jpg: model jpeg (float32)" in err, err
    assert "q90.jpg: model jpeg (" not in err and "q99.jpg: model" not in err, err
    assert "2 restored, 1 passed through" in err, err


def test_ten_bit_heif_is_said_and_guarded_by_its_qp(tmp_path, capsys):
    import pillow_heif
    a = photo(64, 96)
    hf = pillow_heif.from_bytes(mode="RGB;16", size=(96, 64), data=((a.astype(np.uint16) << 2) << 6).tobytes())
    src = tmp_path / "deep.heic"
    hf.save(src, quality=60, save_to_12bit=False)
    assert main(["restore", str(src), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "10-bit HEIF decoded at 8 bits" in err and "QP 17" in err and "unguarded" not in err


def test_hevc_model_on_pixels_warns_in_the_api():
    a = photo(32, 48)
    with pytest.warns(UserWarning, match="QP is unknown") as rec:
        fr.restore(a, "hevc", device="cpu")
    assert rec[0].filename == __file__                     # pointed at the caller's line
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.restore(a, "hevc", device="cpu", guard=False)       # asked for the raw network: no warning
        fr.restore(a, "jpeg", device="cpu")


@pytest.mark.parametrize("kind", ["hevc", "own weights without a codec"])
def test_hevc_model_on_a_jpeg_file_is_guarded_by_its_tables_in_the_api_as_in_the_cli(tmp_path, capsys, kind):
    """An HEVC model, or a user's own weights file that names no codec, given a JPEG: restore()
    on the opened file guards it by its tables, as the CLI does (same pixels); a q95 JPEG comes
    back unchanged instead of 3 dB worse; the CLI says which model kind met which file."""
    import warnings

    from fastreshuffle.io.weights import save_weights
    model = "hevc"
    if kind != "hevc":
        model = str(tmp_path / "mine.safetensors")      # metadata: format and config only
        save_weights(fr.load_model("jpeg", "cpu"), model)
    a = photo(96, 128)
    for q in (30, 95):
        src = tmp_path / f"q{q}.jpg"
        Image.fromarray(a).save(src, quality=q)
        with warnings.catch_warnings():
            warnings.simplefilter("error")        # guarded: no "unguarded" warning either
            api = np.asarray(fr.restore(Image.open(src), model, device="cpu", precision="fp32"))
        assert main(["restore", str(src), "--model", model, "--device", "cpu", "--precision", "fp32",
                     "--overwrite"]) == 0
        cli = np.asarray(Image.open(tmp_path / f"q{q}_restored.png"))
        np.testing.assert_array_equal(api, cli)
        if kind == "hevc":
            assert "a JPEG file given to an HEVC model: restored under the JPEG guard" in capsys.readouterr().err
        decoded = np.asarray(Image.open(src).convert("RGB"))
        if q == 95:
            np.testing.assert_array_equal(api, decoded)   # passed through, as for the jpeg model
        else:
            assert (api != decoded).any()
    raw = np.asarray(fr.restore(Image.open(tmp_path / "q95.jpg"), model, device="cpu", guard=False))
    assert (raw != decoded).any()                          # what the guard keeps from it


def test_cmyk_jpeg_note_says_why_its_tables_are_not_used(tmp_path, capsys):
    src = tmp_path / "c.jpg"
    Image.fromarray(photo(64, 96)).convert("CMYK").save(src, quality=15)
    assert main(["restore", str(src), "--device", "cpu"]) == 0
    assert "a JPEG whose tables cannot be used (CMYK, RGB-coded, or an unusual chroma sampling)" in capsys.readouterr().err


def test_a_converted_jpeg_says_its_tables_are_gone(tmp_path):
    """.convert("RGB") / ImageOps.exif_transpose() of an opened JPEG keep its JFIF info but drop its
    tables: restore() says so (at the caller's line) instead of silently falling back to what the
    pixels show; the opened image itself, a PNG, and guard=False raise no warning."""
    import warnings
    src = tmp_path / "q50.jpg"
    Image.fromarray(photo(64, 96)).save(src, quality=50)
    for copy in (Image.open(src).convert("RGB"), ImageOps.exif_transpose(Image.open(src))):
        with pytest.warns(UserWarning, match="no longer carries the file's quantisation tables") as rec:
            fr.restore(copy, device="cpu")
        assert rec[0].filename == __file__
    png = tmp_path / "a.png"
    Image.fromarray(photo(64, 96)).save(png)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.restore(Image.open(src), device="cpu")
        fr.restore(Image.open(png).convert("RGB"), device="cpu")
        fr.restore(Image.open(src).convert("RGB"), device="cpu", guard=False)


def test_an_untouched_opened_jpeg_uses_its_tables_even_where_tables_fit_doubts(tmp_path, monkeypatch):
    """restore(Image.open(f)) checks the pixels against the file itself (decoded again), so the
    statistical tables_fit -- which doubted 7 of 24 Kodak24 128x128 crops at q90 -- only judges
    images changed in place or whose file is gone: the API gives the CLI's pixels."""
    from fastreshuffle.inference import jpeg_history
    from fastreshuffle.inference.restore import _pixels_are_the_files
    src = tmp_path / "q90.jpg"                  # noise at q90: its pixels alone show no JPEG
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3)).astype(np.uint8)
    Image.fromarray(noise).save(src, quality=90)
    assert main(["restore", str(src), "--device", "cpu", "--precision", "fp32"]) == 0
    cli = np.asarray(Image.open(tmp_path / "q90_restored.png"))
    assert (cli != np.asarray(Image.open(src))).any()          # the guard restores this one
    monkeypatch.setattr(jpeg_history, "tables_fit", lambda *a, **k: False)   # the doubting case
    api = np.asarray(fr.restore(Image.open(src), device="cpu", precision="fp32"))
    np.testing.assert_array_equal(api, cli)
    in_memory = Image.open(io.BytesIO(src.read_bytes()))       # a server's upload: no file name
    np.testing.assert_array_equal(np.asarray(fr.restore(in_memory, device="cpu", precision="fp32")), cli)
    im = Image.open(src)
    assert _pixels_are_the_files(im, np.asarray(im), str(src))
    im.paste((0, 0, 0), (0, 0, 8, 8))                          # painted in place: the file no longer says
    assert not _pixels_are_the_files(im, np.asarray(im), str(src))
    im2 = Image.open(src)
    im2.thumbnail((48, 64))
    assert not _pixels_are_the_files(im2, np.asarray(im2), src.read_bytes())


def _heic(path, a, quality, orientation=None, mode=None):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    im = Image.fromarray(a) if mode is None else Image.fromarray(a).convert(mode)
    kw = {}
    if orientation:
        ex = im.getexif()
        ex[0x0112] = orientation
        kw["exif"] = ex.tobytes()
    im.save(path, format="HEIF", quality=quality, **kw)
    return path


@pytest.mark.parametrize("orientation", [3, 6])
def test_a_rotated_heif_is_restored_as_coded(tmp_path, monkeypatch, orientation):
    """A HEIF whose decoder turns it upright (irot, written from the EXIF orientation) is restored
    on the pixels as coded -- the codec's blocks on the network's cells -- and turned upright
    again, by the API and by the CLI alike (same pixels)."""
    from fastreshuffle.inference import guard
    from fastreshuffle.io.images import INVERSE_ORIENTATION, orient_array
    a = photo(45, 61)
    turned = _heic(tmp_path / "turned.heic", a, 15, orientation)
    upright = np.asarray(Image.open(turned))
    assert upright.shape[:2] == orient_array(a, orientation).shape[:2]    # the decoder turned it
    real, seen = guard.hevc_guarded_file, []

    def spy(run, pixels, data, for_qp=None):
        seen.append(pixels)
        out, d = real(run, pixels, data, for_qp)
        seen.append(out)
        return out, d
    monkeypatch.setattr(guard, "hevc_guarded_file", spy)
    api = np.asarray(fr.restore(Image.open(turned), device="cpu", precision="fp32"))
    np.testing.assert_array_equal(seen[0], orient_array(upright, INVERSE_ORIENTATION[orientation]))
    np.testing.assert_array_equal(api, orient_array(seen[1], orientation))
    assert (api != upright).any()                                           # quality 15: restored
    assert main(["restore", str(turned), "--device", "cpu", "--precision", "fp32"]) == 0
    np.testing.assert_array_equal(seen[2], seen[0])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "turned_restored.png")), api)


def test_grey_and_in_memory_heifs_are_guarded_in_the_api(tmp_path):
    """A grey HEIF through restore() is guarded by its QP as the CLI guards it (quality 80: QP 7,
    unchanged, instead of the full correction); a HEIF opened from memory and already loaded has
    no file to read its QP from: unchanged, with a warning, never the full correction."""
    a = photo(48, 64)
    g80 = _heic(tmp_path / "g80.heic", a, 80, mode="L")
    decoded = np.asarray(Image.open(g80))
    out = fr.restore(Image.open(g80), device="cpu", precision="fp32")
    assert out.mode == Image.open(g80).mode
    np.testing.assert_array_equal(np.asarray(out), decoded)
    g15 = _heic(tmp_path / "g15.heic", a, 15, mode="L")
    assert main(["restore", str(g15), "--device", "cpu", "--precision", "fp32"]) == 0
    api = np.asarray(fr.restore(Image.open(g15), device="cpu", precision="fp32"))
    np.testing.assert_array_equal(api, np.asarray(Image.open(tmp_path / "g15_restored.png")))
    q80 = _heic(tmp_path / "q80.heic", a, 80)
    im = Image.open(io.BytesIO(q80.read_bytes()))
    im.load()
    with pytest.warns(UserWarning, match="returned unchanged") as rec:
        out = fr.restore(im, device="cpu")
    assert rec[0].filename == __file__
    np.testing.assert_array_equal(np.asarray(out), np.asarray(im))


def test_a_tiny_share_of_the_correction_is_not_called_none():
    from fastreshuffle.inference.files import _share
    assert [_share(s) for s in (0.0, 0.003, 0.006, 0.25, 1.0)] == ["0%", "<1%", "1%", "25%", "100%"]


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_webp_output_never_costs_more_than_restoring_gains(tmp_path, capsys):
    """--format webp without --output-quality is lossless: a q95 JPEG lost 1.8 dB and a q90 one
    0.5 dB against the original as q95 lossy WebP (chroma halved), a never-compressed PNG came back
    at 40 dB from itself, all said to be 'written unchanged'.  (q99 and the PNG are passed through.)"""
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[100:292, 150:342])
    for q in (99, 90):
        Image.fromarray(a).save(tmp_path / f"q{q}.jpg", quality=q)
    Image.fromarray(a).save(tmp_path / "never.png")
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path), "-o", str(out), "--format", "webp", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 restored, 2 passed through, 0 skipped, 0 failed" in err
    for name in ("q99", "never"):      # passed through: the same pixels, exactly
        src = tmp_path / (f"{name}.jpg" if name != "never" else "never.png")
        got = np.asarray(Image.open(out / f"{name}_restored.webp").convert("RGB"))
        np.testing.assert_array_equal(got, np.asarray(Image.open(src).convert("RGB")), err_msg=name)
    dec = np.asarray(Image.open(tmp_path / "q90.jpg").convert("RGB"))
    got = np.asarray(Image.open(out / "q90_restored.webp").convert("RGB"))
    assert psnr(a, got) > psnr(a, dec)             # the restoration kept
    # asked for: lossy, at that quality; nothing changed by restoring is then said to be re-encoded
    assert main(["restore", str(tmp_path / "never.png"), "-o", str(tmp_path / "lossy"), "--format", "webp",
                 "--output-quality", "80", "--device", "cpu"]) == 0
    assert "written as WEBP quality 80 (lossy)" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "never.png"), "-o", str(tmp_path / "j"), "--format", "jpeg",
                 "--device", "cpu"]) == 0
    assert "written as JPEG quality 95 (lossy)" in capsys.readouterr().err


def test_a_quality_85_jpeg_written_back_as_jpeg_is_copied(tmp_path):
    """KEEP_JPEG_FROM is inclusive: a JPEG of quality exactly 85 is copied byte for byte under
    --format same (re-encoded, it lost all its gain)."""
    from helpers import photo

    from fastreshuffle.cli import main
    from fastreshuffle.inference.files import KEEP_JPEG_FROM
    src = tmp_path / "q.jpg"
    Image.fromarray(photo(64, 96)).save(src, quality=KEEP_JPEG_FROM)
    assert main(["restore", "-q", str(src), "--format", "same", "--device", "cpu"]) == 0
    assert (tmp_path / "q_restored.jpg").read_bytes() == src.read_bytes()


def test_a_restored_jpeg_says_its_quality_and_share_also_at_full_strength(tmp_path, capsys):
    """A q30 file said only "model jpeg": a new user could not tell what was found or done."""
    src = tmp_path / "q30.jpg"
    Image.fromarray(photo(96, 128)).save(src, quality=30)
    assert main(["restore", str(src), "--device", "cpu"]) == 0
    assert "JPEG quality ~30: the full correction, kept consistent with the file" in capsys.readouterr().err


def test_a_small_image_that_is_changed_says_it_gains_less_surely(tmp_path, capsys):
    small, q95 = tmp_path / "s.jpg", tmp_path / "h.jpg"
    Image.fromarray(photo(40, 48)).save(small, quality=30)
    Image.fromarray(photo(40, 48)).save(q95, quality=99)
    assert main(["restore", str(small), str(q95), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "s.jpg: 48x40: an image under 64 px on a side gains less surely" in err
    assert "h.jpg: 48x40" not in err              # left as it was: nothing to warn of


def test_a_rerun_into_an_output_folder_inside_the_input_skips_its_copies(tmp_path, capsys):
    """-r with -o inside the input folder: an earlier run's byte copy of a q>=85 JPEG (no mark)
    in the output folder was taken as an input on the next run -- "would replace an input" (exit
    1), and one folder deeper on every run (a helper's probe).  It is now an earlier output."""
    Image.fromarray(photo(64)).save(tmp_path / "hq.jpg", quality=90)
    Image.fromarray(photo(64)).save(tmp_path / "sub.jpg", quality=50)
    (tmp_path / "d").mkdir()
    Image.fromarray(photo(64)).save(tmp_path / "d" / "hq2.jpg", quality=92)
    args = ["restore", str(tmp_path), "-r", "-o", str(tmp_path / "out"), "--format", "same", "--device", "cpu"]
    assert main(args) == 0
    assert (tmp_path / "out" / "hq_restored.jpg").read_bytes() == (tmp_path / "hq.jpg").read_bytes()
    assert (tmp_path / "out" / "d" / "hq2_restored.jpg").read_bytes() == (tmp_path / "d" / "hq2.jpg").read_bytes()
    capsys.readouterr()
    for _ in range(2):
        assert main(args) == 0
        err = capsys.readouterr().err
        assert "0 restored, 0 passed through, 6 skipped, 0 failed" in err, err   # 3 outputs, 3 existing
    assert not (tmp_path / "out" / "out").exists()


def test_a_file_at_its_own_output_path_is_an_input_refused_not_an_earlier_output(tmp_path, capsys):
    """-o the input folder with --suffix '': each file is its own output path.  It was said to be
    "a fastreshuffle output" and skipped (a review of the check for earlier outputs in -o's
    folder); it is an input whose output would replace it, refused per file."""
    Image.fromarray(photo(64)).save(tmp_path / "o.png")
    Image.fromarray(photo(64)).save(tmp_path / "q30.jpg", quality=30)
    assert main(["restore", str(tmp_path), "-o", str(tmp_path), "--suffix", "", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "fastreshuffle outputs" not in err, err
    assert err.count("would replace an input file") == 1 and "o.png would replace an input file" in err, err
    assert "1 restored, 0 passed through, 0 skipped, 1 failed" in err        # q30.jpg -> q30.png


@pytest.mark.parametrize("sub,q,said", [(0, 80, "(25% of it in colour: 4:4:4)"), (0, 70, "(38% of it in colour: 4:4:4)"),
                                        (1, 80, None), (2, 80, None)])
def test_a_444_file_says_its_colour_share(tmp_path, capsys, sub, q, said):
    """The colour share of a 4:4:4 file is said in its note (4:2:0 and 4:2:2 keep all of it:
    nothing said)."""
    src = tmp_path / "c.jpg"
    Image.fromarray(photo(96, 128)).save(src, quality=q, subsampling=sub)
    assert main(["restore", str(src), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"JPEG quality ~{q}: the full correction" in err
    assert (said in err) if said else ("in colour" not in err), err
