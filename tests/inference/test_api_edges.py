"""restore() and the networks on unusual Python inputs, from an adversarial review of the API
(each test written against what the code did before)."""
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import fastreshuffle as fr


def _photo(y=100, x=100, size=128):
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[y:y + size, x:x + size, :3])


def _unchanged_without_warning_or_with(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def test_heif_edited_in_place_or_restored_twice_from_memory(tmp_path):
    pytest.importorskip("pillow_heif")
    from fastreshuffle.io.images import _register_heif
    _register_heif()
    Image.fromarray(_photo()).save(tmp_path / "q10.heic", quality=10)
    clean = Image.fromarray(_photo(100, 228))                 # never compressed
    im = Image.open(tmp_path / "q10.heic")
    im.load()
    im.paste(clean, (0, 0))                                   # its pixels are no longer the file's
    with pytest.warns(UserWarning, match="no longer its file's"):
        out = fr.restore(im, device="cpu")
    assert np.array_equal(np.asarray(out), np.asarray(clean))
    data = (tmp_path / "q10.heic").read_bytes()
    mem = Image.open(io.BytesIO(data))
    first, second = np.asarray(fr.restore(mem, device="cpu")), np.asarray(fr.restore(mem, device="cpu"))
    assert np.array_equal(first, second)
    assert not np.array_equal(first, np.asarray(Image.open(io.BytesIO(data))))   # restored both times


def test_jpeg_loaded_from_memory_whose_tables_cannot_be_checked_says_so():
    """A smooth picture (its pixels do not evidently fit its tables) from a JPEG opened from memory:
    restored through its file's tables while the file can be read again; once loaded (the file
    gone) it is restored as an array -- here unchanged -- and a warning says why (as for HEIF)."""
    h, w = 96, 128
    g = np.zeros((h, w, 3), np.uint8)
    g[..., 0] = np.linspace(0, 255, w)[None, :]
    g[..., 1] = np.linspace(0, 255, h)[:, None]
    g[..., 2] = 90
    b = io.BytesIO()
    Image.fromarray(g).save(b, "JPEG", quality=30)
    raw = b.getvalue()
    coded = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = np.asarray(fr.restore(Image.open(io.BytesIO(raw)), device="cpu"))
    assert not np.array_equal(fresh, coded)                   # the tables were used
    loaded = Image.open(io.BytesIO(raw))
    loaded.load()
    with pytest.warns(UserWarning, match="can no longer be read") as rec:
        out = np.asarray(fr.restore(loaded, device="cpu"))
    assert rec[0].filename == __file__
    assert np.array_equal(out, coded)


@pytest.mark.parametrize("mode", ["LAB", "HSV", "YCbCr", "CMYK", "RGBa"])
def test_a_never_compressed_image_in_a_lossy_mode_comes_back_as_it_was(mode):
    a = _photo()
    if mode == "RGBa":
        im = Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)]), "RGBA").convert("RGBa")
    elif mode == "CMYK":
        c = np.asarray(Image.fromarray(a).convert("CMYK")).copy()
        c[..., 3] = 60                                        # a black channel Pillow's RGB -> CMYK cannot rebuild
        im = Image.fromarray(c, "CMYK")
    else:
        im = Image.fromarray(a).convert(mode)
    out = fr.restore(im, device="cpu")
    assert out.mode == mode and np.array_equal(np.asarray(out), np.asarray(im))


def test_premultiplied_grey_alpha_is_restored_not_refused():
    a = np.dstack([_photo()[..., 0], np.full((128, 128), 200, np.uint8)])
    im = Image.fromarray(a, "LA").convert("La")
    out = fr.restore(im, device="cpu")
    assert out.mode == "La" and np.array_equal(np.asarray(out)[..., 1], np.asarray(im)[..., 1])


def test_arrays_keep_their_values_and_dtype():
    g = (_photo()[..., 1] / 255).astype(np.float32)           # never compressed: comes back exactly
    for a in (g, g[..., None]):
        assert np.array_equal(fr.restore(a, device="cpu"), a)
    be = (_photo() / 255).astype(">f4")
    out = fr.restore(be, device="cpu", guard=False)
    assert out.dtype == be.dtype and out.shape == be.shape


def test_model_object_on_cpu_0_and_tensor_errors():
    net = fr.load_pretrained("jpeg")
    a = _photo()
    assert np.array_equal(fr.restore(a, net, device="cpu:0"), fr.restore(a, net, device="cpu"))
    with pytest.raises(ValueError, match="meta"):
        fr.restore(torch.empty(3, 64, 64, device="meta"))
    for guard in (True, False):
        with pytest.raises(ValueError, match=r"zero size: tensor of shape \(1, 3, 0, 64\)"):
            fr.restore(torch.rand(1, 3, 0, 64), guard=guard)
    for bad in ({"guard": "no"}, {"self_ensemble": "no"}, {"half": "yes"}):
        with pytest.raises(TypeError, match="must be True or False"):
            fr.restore(a, **bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # guard=0 is guard=False: nothing to warn of
        fr.restore(a, "hevc", guard=0, device="cpu")


def test_the_reference_network_takes_an_empty_batch():
    cfg = fr.ReshuffleNetConfig.preset("tiny")
    assert fr.ReshuffleNet(cfg)(torch.rand(0, 3, 16, 16)).shape == (0, 3, 16, 16)
    assert fr.FastReshuffleNet(cfg)(torch.rand(0, 3, 16, 16)).shape == (0, 3, 16, 16)


def test_wrong_input_types_and_overshooting_floats_say_what_to_do():
    for bad in (b"\xff\xd8", io.BytesIO(b"\xff\xd8")):
        with pytest.raises(TypeError, match="file path.*open it with PIL.Image.open first"):
            fr.restore(bad, device="cpu")
    with pytest.raises(TypeError, match="file path, a PIL image, a numpy array or a torch tensor, got list"):
        fr.restore([[1]], device="cpu")
    x = torch.rand(1, 3, 32, 32)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=0.6, mode="bicubic")
    if bicubic.min() < -1e-3 or bicubic.max() > 1 + 1e-3:
        with pytest.raises(ValueError, match=r"clamp to \[0, 1\] first"):
            fr.restore(bicubic, device="cpu")
    with pytest.raises(ValueError, match="clamp to"):
        fr.restore(x * 1.05 - 0.02, device="cpu")
    with pytest.raises(ValueError, match="divide by 255"):
        fr.restore(x * 255, device="cpu")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_network_traces_in_a_fresh_process(dtype):
    """torch.jit.trace cannot record the backend probes (torch ops returning an int or a bool), so
    FastReshuffleNet makes them when it is built: also the bf16 ones (AMX).  The trace's default
    check passes (it failed while the first call filled the weight cache the check run used).
    Parameters that do not require grad: the trace records the fused ops (with parameters that
    do, the reference forward)."""
    code = ("import torch, fastreshuffle as fr\n"
            "f = fr.FastReshuffleNet(fr.ReshuffleNetConfig.preset('tiny')).eval().requires_grad_(False)"
            f".to(torch.{dtype}); x = torch.rand(1, 3, 16, 16)\n"
            "with torch.no_grad():\n"
            "    t = torch.jit.trace(f, x)\n"
            "    print(torch.equal(t(x), f(x)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().endswith("True"), r.stderr[-1500:]


def test_weights_naming_their_codec_in_capitals_are_guarded(tmp_path):
    from fastreshuffle.inference.loading import _codec_of
    assert _codec_of({"codec": "JPEG"}) == "jpeg" and _codec_of({"command": "train --codec HEVC"}) == "hevc"


def test_output_exists_speaks_to_python_callers_too():
    from fastreshuffle.errors import OutputExistsError
    assert "overwrite=True" in str(OutputExistsError("x.onnx"))


def test_a_damaged_jpeg_is_refused_as_the_command_refuses_it(tmp_path):
    """A JPEG cut short with its end marker put back decodes (grey where data is missing); the
    API restored that picture.  By path, as an opened file or from memory: an OSError saying what
    is wrong and how to restore the decoded picture anyway."""
    import io
    good = io.BytesIO()
    Image.fromarray(_photo()).save(good, "JPEG", quality=30)
    data = good.getvalue()
    sos = data.index(b"\xff\xda")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:(sos + len(data)) // 2] + b"\xff\xd9")
    for image in (str(cut), Image.open(cut), Image.open(io.BytesIO(cut.read_bytes()))):
        with pytest.raises(OSError, match="truncated image file: its compressed data ends early.*np.asarray"):
            fr.restore(image, device="cpu")
    assert fr.restore(np.asarray(Image.open(cut)), device="cpu").shape == _photo().shape


def test_a_jpeg_whose_damage_cannot_be_checked_is_said_so(tmp_path):
    """From a review: an arithmetic-coded JPEG cut short was restored as if whole, with no word (the
    walk does not cover arithmetic coding).  By path and as an opened file: a warning that its data
    is not checked, as the command's note."""
    from helpers import ARITHMETIC_JPEG
    cut = tmp_path / "arith.jpg"
    cut.write_bytes(ARITHMETIC_JPEG[:-30] + b"\xff\xd9")
    for image in (str(cut), Image.open(cut)):
        with pytest.warns(UserWarning, match=r"arith.jpg: its compressed data is not checked for damage \(it is "
                                             r"arithmetic-coded\)"):
            fr.restore(image, device="cpu")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_path_that_is_no_regular_file_is_refused_not_waited_on(tmp_path):
    """From a review: restore('pipe.jpg') on a FIFO waited for a writer for ever (the command
    refuses it: "not a regular file"); it is refused the same way, and so is a device."""
    import os
    import threading
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    raised = []

    def call():
        try:
            fr.restore(str(fifo), device="cpu")
        except OSError as e:
            raised.append(str(e))
    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():                       # unblock the reader so the thread can end
        with open(fifo, "wb"):
            pass
        pytest.fail("restore() waited on a named pipe")
    assert raised == [f"{fifo}: not a regular file (a pipe, socket or device): restore reads image files"]
    if os.path.exists("/dev/zero"):
        with pytest.raises(OSError, match="/dev/zero: not a regular file"):
            fr.restore("/dev/zero", device="cpu")


def test_an_image_whose_file_changed_since_it_was_read_is_not_refused(tmp_path):
    """An intact JPEG read into memory, its file then overwritten (by a PNG, by a copy cut short):
    the damage of the file as it is now said nothing about the pixels in memory, which were
    refused ("damaged JPEG", "truncated image file").  They are restored as those of a file out of
    reach are."""
    import io
    good = io.BytesIO()
    Image.fromarray(_photo()).save(good, "JPEG", quality=30)
    data = good.getvalue()
    sos = data.index(b"\xff\xda")
    png = io.BytesIO()
    Image.fromarray(_photo()).save(png, "PNG")
    for i, later in enumerate((png.getvalue(), data[:(sos + len(data)) // 2] + b"\xff\xd9")):
        path = tmp_path / f"photo{i}.jpg"
        path.write_bytes(data)
        im = Image.open(path)
        im.load()
        path.write_bytes(later)
        out = fr.restore(im, device="cpu")
        assert out.size == im.size and not np.array_equal(np.asarray(out), np.asarray(im))


def test_a_float64_tensor_keeps_its_values_where_nothing_is_restored():
    """A float64 tensor came back changed by up to 3e-8 where the guard changes nothing (cut to
    float32 on the way to it); a float64 array keeps its values there.  The tensor's result is
    now the array's, colour and grey."""
    a = _photo().astype(np.float64) / 255.0 + 1e-9
    t = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    for x, arr in ((t, a), (t[:1], np.ascontiguousarray(a[..., 0]))):
        out = fr.restore(x, device="cpu")
        want = fr.restore(arr, device="cpu")
        got = out.permute(1, 2, 0).numpy()
        assert out.dtype == torch.float64 and np.array_equal(got[..., 0] if arr.ndim == 2 else got, want)
        assert np.isin(got, arr).mean() > 0.5       # (most values as they were, to the last bit)


def test_a_picture_of_several_frames_says_only_one_is_restored(tmp_path):
    """An animated GIF / WebP came back as its first frame without a word (the command notes it)."""
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (40, 120, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[0].save(tmp_path / "one.gif")
    with pytest.warns(UserWarning, match="3 frames .*frame 0"):
        fr.restore(Image.open(tmp_path / "a.gif"), device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fr.restore(Image.open(tmp_path / "one.gif"), device="cpu")
    assert not [w for w in caught if "frames" in str(w.message)]
    # counted without touching the caller's image: an edit kept (counting on it re-read frame 0
    # from the file), and one loaded inside a `with` block that has ended still restores
    im = Image.open(tmp_path / "a.gif")
    im.load()
    index = int(np.asarray(im)[20, 20])
    im.paste(255 - index, (0, 0, 16, 16))           # (a palette image: an index)
    before = np.asarray(im.convert("RGB")).copy()
    with pytest.warns(UserWarning, match="3 frames"):
        out = fr.restore(im, device="cpu")
    assert np.array_equal(np.asarray(im.convert("RGB")), before)
    assert np.abs(np.asarray(out.convert("RGB"))[:16, :16].astype(int) - before[:16, :16]).max() <= 10
    with Image.open(tmp_path / "a.gif") as im:
        im.load()
    with pytest.warns(UserWarning, match="3 frames"):
        fr.restore(im, device="cpu")


def test_an_animated_gif_cut_short_is_said_cut_short(tmp_path):
    """An animated GIF cut short after its first frame failed with Pillow's bare "index out of
    range" (from counting its frames): its whole first frame is restored, and the cut said, in
    ``restore()`` and in the command's reader."""
    from fastreshuffle.io.images import frame_count, load_image_file
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    data = (tmp_path / "a.gif").read_bytes()

    def pillow_fails(k):                        # a cut where counting the frames raised
        try:
            Image.open(io.BytesIO(data[:k])).n_frames
        except Exception:
            return True
        return False
    cut = next(k for k in range(len(data) * 2 // 3, len(data)) if pillow_fails(k))
    (tmp_path / "cut.gif").write_bytes(data[:cut])
    assert frame_count(tmp_path / "a.gif") == (3, False) and frame_count(data) == (3, False)
    assert frame_count(tmp_path / "cut.gif") == (2, True) and frame_count(data[:cut]) == (2, True)
    # a whole file with bytes after it, and a file that cannot be opened, are not said cut
    assert frame_count(data + b"EXTRA DATA") == (3, False) and frame_count(b"garbage") == (1, False)
    with pytest.warns(UserWarning, match="cut short .*frame 0"):
        out = fr.restore(Image.open(tmp_path / "cut.gif"), device="cpu")
    assert out.size == (48, 48)
    f = load_image_file(tmp_path / "cut.gif")
    assert f.rgb.shape == (48, 48, 3) and any("cut short (truncated)" in n for n in f.notes)
    assert np.array_equal(f.rgb, np.asarray(Image.open(tmp_path / "a.gif").convert("RGB")))


def test_whatever_is_under_alpha_0_of_a_float_image_is_given_back(tmp_path):
    """A float RGBA array with NaN or 0-255 leftovers under alpha 0 was refused ("contains NaN",
    "looks like 0-255"), though that colour is given back as it was and the network sees a fill.
    The visible pixels must still be in [0, 1]."""
    rgba = np.concatenate([_photo().astype(np.float32) / 255, np.ones((128, 128, 1), np.float32)], axis=2)
    rgba[:20, :30, 3] = 0
    clean = rgba.copy()
    clean[:20, :30, :3] = 0.5
    want = fr.restore(clean, device="cpu")
    for leftover in (np.nan, 7.0):
        a = rgba.copy()
        a[:20, :30, :3] = leftover
        out = fr.restore(a, device="cpu")
        hid = np.zeros((128, 128), bool)
        hid[:20, :30] = True
        assert np.array_equal(out[~hid], want[~hid])
        assert np.array_equal(out[hid], a[hid], equal_nan=True)
    a = rgba.copy()
    a[30, 40, 0] = np.nan                       # a visible one
    with pytest.raises(ValueError, match="NaN"):
        fr.restore(a, device="cpu")


def test_a_matrix_or_a_sparse_tensor_is_refused_saying_what_to_pass():
    """np.matrix failed with numpy's AxisError, a sparse tensor with torch's NotImplementedError."""
    grey = np.asmatrix(_photo()[..., 0])
    with pytest.raises(TypeError, match=r"np.asarray\(m\)"):
        fr.restore(grey, device="cpu")
    t = torch.from_numpy(_photo().astype(np.float32) / 255).permute(2, 0, 1).to_sparse()
    with pytest.raises(TypeError, match=r"to_dense\(\)"):
        fr.restore(t, device="cpu")


def test_a_grey_tiff_turned_by_its_orientation_is_read_upright_by_path(tmp_path):
    """restore(path) opened the file by name, which for an uncompressed grey TIFF of orientation 5-8
    gave scrambled pixels (Pillow maps them at the turned size); opened from a file object they
    are the picture, turned once (as the command reads it)."""
    import io
    g = np.ascontiguousarray(_photo()[:64, :96, 1])
    im = Image.fromarray(g)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "o6.tif"
    im.save(path, exif=exif)
    with open(path, "rb") as f:
        want = np.asarray(Image.open(io.BytesIO(f.read())))
    assert want.shape == (96, 64)
    out = np.asarray(fr.restore(str(path), device="cpu"))
    from fastreshuffle.metrics import psnr
    assert out.shape == want.shape and psnr(out, want) > 40


def test_restore_takes_a_path(tmp_path):
    src = tmp_path / "q30.jpg"
    Image.fromarray(_photo()).save(src, quality=30)
    a = fr.restore(str(src), device="cpu")
    b = fr.restore(Image.open(src), device="cpu")
    assert isinstance(a, Image.Image) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(Image.open(src)))
    with pytest.raises(FileNotFoundError):
        fr.restore(tmp_path / "missing.jpg")


def test_images_under_8_px_come_back_unchanged_and_say_so(tmp_path):
    """Under 8 px on a side the network has nothing to work on: the image comes back as it was,
    with a warning at the caller's line (the CLI's note says the same); 8 px and more: none."""
    tiny = _photo(size=6)
    src = tmp_path / "tiny.png"
    Image.fromarray(tiny).save(src)
    for image in (tiny, torch.from_numpy(tiny).permute(2, 0, 1).float() / 255, Image.fromarray(tiny), src):
        with pytest.warns(UserWarning, match="6x6 image is under 8 pixels") as rec:
            out = fr.restore(image, device="cpu")
        assert len(rec) == 1 and rec[0].filename == __file__, [(w.filename, str(w.message)) for w in rec]
        got = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        want = np.asarray(image if not isinstance(image, type(src)) else Image.open(src))
        if isinstance(out, torch.Tensor):
            want = image.numpy()
        assert np.array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.restore(_photo(size=8), device="cpu")
        # an array or tensor of another layout is refused, with no word about a size it does not have
        for wrong in (np.zeros((3, 40, 40), np.uint8), np.zeros((2, 40, 40, 3), np.uint8), torch.zeros(40, 40, 3)):
            with pytest.raises(ValueError, match="expected an? "):
                fr.restore(wrong, device="cpu")
        with pytest.raises(TypeError, match="floating-point"):       # (uint8 tensors are refused)
            fr.restore(torch.zeros(3, 4, 4, dtype=torch.uint8), device="cpu")
        assert fr.restore(torch.zeros(0, 3, 4, 4), device="cpu").shape == (0, 3, 4, 4)   # no image, no word
    pillow_heif = pytest.importorskip("pillow_heif")               # a HEIF file takes its own path: said too
    pillow_heif.register_heif_opener()
    Image.fromarray(_photo(size=6)).save(tmp_path / "tiny.heic", quality=50)
    with pytest.warns(UserWarning, match="6x6 image is under 8 pixels") as rec:
        fr.restore(tmp_path / "tiny.heic", device="cpu")
    assert rec[0].filename == __file__


def test_half_on_a_cpu_warns_once_per_call_at_the_caller(tmp_path):
    """restore(half=True) on a CPU: one warning per call, pointed at the caller, however many band
    networks the call loads (a JPEG file's quality picks jpeg-high here besides jpeg)."""
    src = tmp_path / "q90.jpg"
    Image.fromarray(_photo()).save(src, quality=90)
    for image in (Image.open(src), src):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            fr.restore(image, device="cpu", half=True)
        said = [w for w in rec if "CUDA only" in str(w.message)]
        assert len(said) == 1 and said[0].filename == __file__, [(w.filename, str(w.message)) for w in rec]


def test_a_16_bit_colour_file_given_by_path_says_it_comes_back_at_8_bits(tmp_path):
    """restore(path) returns a PIL image, which has no 16-bit colour mode: a 16-bit colour PNG or
    TIFF comes back at 8 bits, with a warning saying how to keep 16 (the CLI does); an 8-bit one
    and a 16-bit grey one (PIL's I;16 holds it) get none."""
    tifffile = pytest.importorskip("tifffile")
    from fastreshuffle.io.png16 import encode_png16
    a16 = _photo(size=32).astype(np.uint16) * 257 + 3
    (tmp_path / "c.png").write_bytes(encode_png16(a16))
    tifffile.imwrite(tmp_path / "c.tif", a16, photometric="rgb")
    for name in ("c.png", "c.tif"):
        with pytest.warns(UserWarning, match="16-bit colour, which a PIL image holds at 8 bits") as rec:
            out = fr.restore(tmp_path / name, device="cpu")
        assert rec[0].filename == __file__ and out.mode == "RGB"
    Image.fromarray(_photo(size=32)).save(tmp_path / "e.png")
    Image.fromarray(a16[..., 0]).save(tmp_path / "g.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.restore(tmp_path / "e.png", device="cpu")
        assert fr.restore(tmp_path / "g.png", device="cpu").mode.startswith("I;16")
    tifffile.imwrite(tmp_path / "f.tif", _photo(size=32).astype(np.float32) / 255, photometric="rgb")
    with pytest.raises(Exception, match="tifffile.imread, floats in"):
        fr.restore(tmp_path / "f.tif", device="cpu")


def test_a_precision_that_is_not_the_loaded_models_is_refused_not_ignored():
    """restore(img, model_object, precision=...) ran the model in its own dtype whatever was asked,
    without a word; a precision named that is not the model's dtype now raises, "auto" runs it as
    it is, and one that is its dtype runs."""
    import fastreshuffle as fr
    img = np.full((32, 32, 3), 100, np.uint8)
    m = fr.load_pretrained("jpeg-low")                    # float32
    with pytest.raises(ValueError, match=r"in float32, not in the precision asked for \('bf16'\)"):
        fr.restore(img, m, device="cpu", precision="bf16", guard=False)
    np.testing.assert_array_equal(np.asarray(fr.restore(img, m, device="cpu", precision="fp32", guard=False)),
                                  np.asarray(fr.restore(img, m, device="cpu", guard=False)))


def test_precision_none_is_auto_for_a_name_and_any_case_is_taken():
    """restore(img, "jpeg-low", precision=None) loads as "auto" does (it loaded fp32 for a while);
    "AUTO" for a model object runs it as it is."""
    from fastreshuffle.backends import resolve_precision
    from fastreshuffle.inference.loading import get_model
    cpu = torch.device("cpu")
    assert get_model("jpeg-low", "cpu", precision=None).input_dtype == torch.float32
    assert next(get_model("jpeg-low", "cpu", precision=None).parameters()).dtype == resolve_precision("auto", cpu)
    assert next(get_model("jpeg-low", "cpu").parameters()).dtype == torch.float32     # not given: fp32
    m = fr.load_pretrained("jpeg-low")
    assert get_model(m, "cpu", precision="AUTO") is m and get_model(m, "cpu", precision="FP32") is m


def test_bad_models_are_refused_by_name_not_by_a_torch_or_numpy_error():
    """From a probe of the API (session 49): half=True with a float32 model object ran fp32 without
    a word (precision="fp16" raised); a model on the meta device failed in torch ("Cannot copy out
    of meta tensor"); a module whose output is not an image of its input's shape failed in numpy
    ("could not broadcast ..."); an empty model name said ". is a folder"."""
    from fastreshuffle.errors import WeightsError
    img = np.full((40, 48, 3), 100, np.uint8)
    m = fr.load_pretrained("jpeg-low")                    # float32
    with pytest.raises(ValueError, match="half=True asks for float16, but the model is in float32"):
        fr.restore(img, m, device="cpu", guard=False, half=True)
    with pytest.raises(ValueError, match="the model is on the meta device"):
        fr.restore(img, fr.load_pretrained("jpeg-low").to("meta"), guard=False)
    for net, kw in ((torch.nn.Conv2d(3, 4, 1), {}), (torch.nn.Conv2d(3, 3, 3, stride=2), {"guard": False}),
                    (torch.nn.Conv2d(3, 4, 1), {"guard": False, "self_ensemble": True})):
        with pytest.raises(ValueError, match=r"restoring needs a network whose output is an image of its input's shape"):
            fr.restore(img, net, **kw)
    with pytest.raises(WeightsError, match="unknown model '': an empty name; the shipped models installed: "):
        fr.restore(img, "")
    # a model that does restore still runs, and a well-shaped module is taken as it is
    assert fr.restore(img, torch.nn.Identity(), guard=False).shape == img.shape


class _Overflowing(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.value = value

    def forward(self, x):
        y = x * self.w
        y[..., 5, 7] = self.value
        return y


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_model_whose_output_is_not_finite_is_refused(value):
    """From a probe of the CLI (session 52): weights that overflow (the shipped ones x300) gave NaN,
    clamped to black, written and counted as restored, exit 0."""
    img = np.full((40, 48, 3), 100, np.uint8)
    for kw in ({"guard": False}, {"guard": False, "tile": 16}, {"guard": False, "self_ensemble": True}):
        with pytest.raises(ValueError, match="the model's output holds NaN or infinite values"):
            fr.restore(img, _Overflowing(value), **kw)
    with pytest.raises(ValueError, match="the model's output holds NaN or infinite values"):
        fr.restore(torch.rand(1, 3, 40, 48), _Overflowing(value), guard=False)


@pytest.mark.parametrize("kind", ["array", "pil", "png file"])
def test_colour_under_alpha_0_does_not_bleed_into_the_picture(tmp_path, kind):
    """From a probe (session 52): a grey q15 JPEG, decoded, with a transparent corner over an
    editor's leftover green: the visible pixels within 8 px of the corner took colour up to 57
    levels (-7.7 dB there).  Restoring now sees a fill from the visible pixels under alpha 0, and
    the hidden pixels are given back as they were."""
    from skimage import data
    o = np.dstack([data.camera()[100:228, 100:228]] * 3)
    b = io.BytesIO()
    Image.fromarray(o).save(b, "JPEG", quality=15)
    d = np.asarray(Image.open(b).convert("RGB"))
    rgba = np.dstack([d, np.full(d.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    rgba[:40, :40, :3] = (0, 255, 0)
    if kind == "array":
        out = fr.restore(rgba, "jpeg", device="cpu", precision="fp32")
    elif kind == "pil":      # (a review: PIL's RGBA and LA had their alpha cut off first, and no fill)
        out = np.asarray(fr.restore(Image.fromarray(rgba, "RGBA"), "jpeg", device="cpu", precision="fp32"))
        la = np.stack([rgba[..., 1], rgba[..., 3]], axis=2)
        out_la = np.asarray(fr.restore(Image.fromarray(la, "LA"), "jpeg", device="cpu", precision="fp32"))
        assert np.array_equal(out_la[:40, :40], la[:40, :40]) and not np.array_equal(out_la, la)
    else:
        Image.fromarray(rgba).save(tmp_path / "a.png")
        from fastreshuffle.cli import main as cli_main
        assert cli_main(["restore", "-q", str(tmp_path / "a.png"), "--model", "jpeg", "--precision", "fp32"]) == 0
        out = np.asarray(Image.open(tmp_path / "a_restored.png"))
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], rgba[..., 3])
    assert np.array_equal(out[:40, :40], rgba[:40, :40])                 # hidden: as it was
    near = np.zeros(d.shape[:2], bool)
    near[:48, :48] = True
    near[:40, :40] = False
    before = 10 * np.log10(255.0 ** 2 / np.mean((d[near].astype(float) - o[near]) ** 2))
    after = 10 * np.log10(255.0 ** 2 / np.mean((out[..., :3][near].astype(float) - o[near]) ** 2))
    assert after > before + 0.5, (before, after)
    visible = out[..., :3][rgba[..., 3] > 0].astype(int)
    assert np.ptp(visible, axis=1).max() <= 2                              # still grey
    rgba[..., 3] = 0                                                        # all hidden: all given back
    assert np.array_equal(fr.restore(rgba, "jpeg", device="cpu", guard=False), rgba)


def test_a_tile_whose_context_is_many_times_its_work_is_warned_of():
    """restore(tile=8, overlap=512) ran each 8-px tile on 1032-px squares, 16641x the work, without
    a word (the command warns): the same warning, at the caller, naming a larger tile; a tile of
    9x its work is not warned of."""
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.warns(UserWarning, match=r"tile=8 with overlap=512: .*16641x the work .*tile=2048, takes 2.2x") as rec:
        fr.restore(a, device="cpu", tile=8, overlap=512)
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fr.restore(a, device="cpu", tile=64, overlap=64)
