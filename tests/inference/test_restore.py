"""restore API (numpy / PIL / torch), load_pretrained, tiled inference, memory bound, CLI basics, demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import fastreshuffle
from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
from fastreshuffle.cli import main as cli_main
from fastreshuffle.inference.tiling import fill_hidden, iter_tiles, restore_tensor, restore_uint8
from fastreshuffle.io.weights import WeightsError, save_weights


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the test machine is shared; avoid OpenMP oversubscription
    return env


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(tiny_model, path, dtype=torch.float16)
    return path


def _rand_img(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


# ----------------------------------------------------------------------------- load_pretrained
def test_load_pretrained_from_path(tiny_weights):
    m = fastreshuffle.load_pretrained(tiny_weights)
    assert isinstance(m, ReshuffleNet) and not m.training
    assert m.config == ReshuffleNetConfig.preset("tiny")
    ref = fastreshuffle.load_pretrained(tiny_weights, fast=False)
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-4)


def test_load_pretrained_unknown_name_lists_choices():
    with pytest.raises(WeightsError) as ei:
        fastreshuffle.load_pretrained("no-such-model")
    msg = str(ei.value)
    assert "jpeg" in msg and "hevc" in msg and "no-such-model" in msg


@pytest.mark.parametrize("name", ["jpeg", "hevc"])
def test_load_pretrained_shipped_name(name):
    """Both shipped models load by name (a missing file fails here; its quality is pinned in
    test_shipped_models.py)."""
    m = fastreshuffle.load_pretrained(name)
    assert not m.training and m.config == ReshuffleNetConfig.preset("small")


def test_load_pretrained_missing_shipped_file_is_clear(monkeypatch, tmp_path):
    from fastreshuffle.inference import loading
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="not installed"):
        fastreshuffle.load_pretrained("hevc")


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from fastreshuffle.backends import resolve_device
    with pytest.raises(ValueError, match="CUDA") as e:
        resolve_device("cuda")
    assert "--device" not in str(e.value)          # the library's words, not the CLI's
    assert resolve_device("auto").type == "cpu"


# ----------------------------------------------------------------------------- restore(): kinds
def _model_float(model, rgb01: np.ndarray) -> np.ndarray:
    """The model applied directly (no restore/tiling code): float32 H x W x 3 in [0, 1] ->
    float32 output clamped to [0, 1]; as documented, a side under 128 px inside its mirror image
    (numpy's "symmetric" padding, ceil((128 - n) / 32) * 16 px on each side)."""
    h, w = rgb01.shape[:2]
    py, px = (max(0, -(-(128 - n) // 32) * 16) for n in (h, w))
    big = np.pad(np.asarray(rgb01, dtype=np.float32), ((py, py), (px, px), (0, 0)), mode="symmetric")
    x = torch.from_numpy(np.ascontiguousarray(big)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model(x)[0, :, py:py + h, px:px + w].clamp(0, 1).permute(1, 2, 0).numpy()


def _direct_uint8(model, rgb: np.ndarray) -> np.ndarray:
    y = torch.from_numpy(_model_float(model, rgb.astype(np.float32) / 255.0))
    return y.mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def test_restore_numpy_kinds(tiny_model):
    """Each array kind against the model applied directly (not against the function restore()
    calls itself)."""
    img = _rand_img(20, 28)
    expect = _direct_uint8(tiny_model, img)
    assert np.abs(expect.astype(int) - img).max() > 0          # the model changes the image
    for tile in (0, None, 8):          # whole image; default tile; 8-px tiles (overlap 32 > receptive field)
        out = fastreshuffle.restore(img, model=tiny_model, tile=tile)
        assert out.dtype == np.uint8 and out.shape == img.shape
        np.testing.assert_array_equal(out, expect, err_msg=f"tile={tile}")

    f = img.astype(np.float32) / 255
    outf = fastreshuffle.restore(f, model=tiny_model)
    assert outf.dtype == np.float32 and outf.shape == f.shape
    np.testing.assert_allclose(outf, _model_float(tiny_model, f), rtol=0, atol=1e-6)
    out64 = fastreshuffle.restore(f.astype(np.float64), model=tiny_model)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, outf, rtol=0, atol=1e-6)

    g = img[..., 0]
    outg = fastreshuffle.restore(g, model=tiny_model)
    assert outg.shape == g.shape and outg.dtype == np.uint8
    # documented: the gray image replicated to RGB, restored, the three channels averaged (before
    # rounding: a grey picture's restoration is grey, tiling.restore_pixels)
    f_g = _model_float(tiny_model, np.repeat(g[..., None], 3, 2).astype(np.float32) / 255.0)
    expect_g = np.round(torch.from_numpy(f_g).mean(2).mul(255.0).numpy())
    np.testing.assert_array_equal(outg, expect_g.astype(np.uint8))
    np.testing.assert_array_equal(fastreshuffle.restore(g[..., None], model=tiny_model), outg[..., None])

    rgba = _rand_img(20, 28, 4)
    rgba[..., 3] |= 1      # nothing hidden (under alpha 0 the network sees a fill instead, given back as it was)
    outa = fastreshuffle.restore(rgba, model=tiny_model)
    assert outa.shape == rgba.shape
    np.testing.assert_array_equal(outa[..., :3], _direct_uint8(tiny_model, rgba[..., :3]))
    np.testing.assert_array_equal(outa[..., 3], rgba[..., 3])
    rgba[:6, :9, 3] = 0
    filled = fill_hidden(rgba[..., :3], rgba[..., 3] == 0)
    assert not np.array_equal(filled, rgba[..., :3]) and np.array_equal(filled[6:], rgba[6:, :, :3])
    outa = fastreshuffle.restore(rgba, model=tiny_model)
    np.testing.assert_array_equal(outa[6:, :, :3], _direct_uint8(tiny_model, filled)[6:])
    np.testing.assert_array_equal(outa[:6, :9], rgba[:6, :9])

    u16 = np.random.default_rng(4).integers(0, 65536, (20, 28, 3), dtype=np.uint16)
    out16 = fastreshuffle.restore(u16, model=tiny_model)
    assert out16.dtype == np.uint16 and out16.shape == u16.shape
    expect16 = np.round(_model_float(tiny_model, u16.astype(np.float32) / 65535.0) * 65535.0)
    assert np.abs(out16.astype(np.int64) - expect16.astype(np.int64)).max() <= 1   # float32 rounding at 16 bits


def test_restore_pil_kinds(tiny_model):
    img = _rand_img(20, 28)
    for mode in ["RGB", "L", "RGBA", "LA", "CMYK"]:
        src = Image.fromarray(img).convert(mode)
        out = fastreshuffle.restore(src, model=tiny_model)
        assert isinstance(out, Image.Image) and out.mode == mode and out.size == src.size, mode
    rgba = Image.fromarray(_rand_img(20, 28, 4))
    np.testing.assert_array_equal(np.asarray(fastreshuffle.restore(rgba, model=tiny_model))[..., 3],
                                  np.asarray(rgba)[..., 3])
    pal = Image.fromarray(img).convert("P")
    out = fastreshuffle.restore(pal, model=tiny_model)
    assert out.mode == "RGB" and out.size == pal.size  # documented: palette -> RGB


def test_restore_torch_kinds(tiny_model):
    x = torch.rand(2, 3, 20, 28)
    y = fastreshuffle.restore(x, model=tiny_model)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    y3 = fastreshuffle.restore(x[0], model=tiny_model)
    assert y3.shape == x[0].shape
    assert torch.allclose(y3, y[0], atol=1e-5)
    assert fastreshuffle.restore(x.double(), model=tiny_model).dtype == torch.float64
    assert fastreshuffle.restore(x[:, :1], model=tiny_model).shape == (2, 1, 20, 28)
    with pytest.raises(TypeError):
        fastreshuffle.restore((x * 255).to(torch.uint8), model=tiny_model)
    with pytest.raises(ValueError):
        fastreshuffle.restore(torch.rand(2, 20, 28, 3), model=tiny_model)
    with pytest.raises(ValueError, match=r"got \(32, 32, 4\)"):     # the shape given, not an unsqueezed one
        fastreshuffle.restore(torch.rand(32, 32, 4), model=tiny_model)


def test_restore_leaves_a_model_object_as_it_was(tiny_model):
    """restore(model=obj) runs the caller's model in eval mode and puts its modes back; a device
    that is not the model's is refused, not moved to."""
    model = ReshuffleNet(ReshuffleNetConfig.preset("tiny"))
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    model.blocks[0].eval()                                # a mixed state, kept as it was
    before = {n: m.training for n, m in model.named_modules()}
    seen = []
    hook = model.tail.register_forward_hook(lambda m, i, o: seen.append(m.training))
    x = torch.rand(1, 3, 16, 24)
    y = fastreshuffle.restore(x, model=model, device="cpu")
    hook.remove()
    assert seen and not any(seen)                         # it ran in eval mode
    assert {n: m.training for n, m in model.named_modules()} == before
    torch.testing.assert_close(y, fastreshuffle.restore(x, model=tiny_model), rtol=0, atol=0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="move it first"):
            fastreshuffle.restore(x, model=model, device="cuda")
        assert next(model.parameters()).device.type == "cpu"


class _Blocking:
    """restore()'s ``_restore`` replaced by one that, per image given (a ``Named``), says it has
    started, waits until released, records ``probe()`` and runs the real one; the threads that
    call restore() keep their errors, re-raised by :meth:`join`."""

    class Named:                # restore()'s image: only passed through to the patched _restore
        def __init__(self, name, x):
            self.name, self.x = name, x

    def __init__(self, monkeypatch, probe):
        import threading
        from fastreshuffle.inference import restore as restore_mod
        self.restore, self.real, self.probe = restore_mod.restore, restore_mod._restore, probe
        self.started, self.release, self.seen, self.errors, self.threads = {}, {}, {}, [], []
        self.threading = threading
        monkeypatch.setattr(restore_mod, "_restore", self._blocking)

    def _blocking(self, image, *args):
        self.started[image.name].set()
        assert self.release[image.name].wait(30)
        self.seen[image.name] = self.probe()
        return self.real(image.x, *args)

    def start(self, name, image, model):
        self.started[name], self.release[name] = self.threading.Event(), self.threading.Event()

        def run():
            try:
                self.restore(image, model)
            except BaseException as e:     # noqa: BLE001 -- re-raised by join()
                self.errors.append(e)
        t = self.threading.Thread(target=run)
        self.threads.append(t)
        t.start()
        return t

    def join(self):
        for e in self.release.values():
            e.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)
        if self.errors:
            raise self.errors[0]


def test_restore_from_threads_keeps_a_training_model_in_eval_mode_until_the_last_call_ends(
        tiny_model, monkeypatch):
    """Calls from several threads on one model in training mode: each saved the modes it found and
    put them back as it ended, so one call put training mode back while another still ran, and a
    call could save the half-switched modes of another (3 of 40 rounds left them mixed).  The
    first call now switches, the last one puts the modes back."""
    model = ReshuffleNet(ReshuffleNetConfig.preset("tiny"))
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    calls = _Blocking(monkeypatch, lambda: [m.training for m in model.modules()])
    x = torch.rand(1, 3, 16, 24)
    try:
        calls.start("a", calls.Named("a", x), model)
        assert calls.started["a"].wait(30)
        calls.start("b", calls.Named("b", x), model)
        assert calls.started["b"].wait(30)
        calls.release["a"].set()
        calls.threads[0].join(30)
        assert not any(m.training for m in model.modules())   # b still runs: still in eval mode
    finally:
        calls.join()
    assert set(calls.seen) == {"a", "b"} and not any(any(v) for v in calls.seen.values())   # both in eval mode
    assert all(m.training for m in model.modules())        # the caller's modes back


def test_restore_runs_calls_on_one_pil_image_one_at_a_time(tiny_model, monkeypatch):
    """An opened PIL image loads its pixels on first use, and restore() reads its file object:
    Pillow does neither safely from two threads at once (one image restored with two settings at
    once failed with "I/O operation on closed file" or "got shape ()").  Calls on one image now
    run one after the other; a call on another image is not held up; the outputs are those of a
    call alone."""
    import io
    from fastreshuffle.inference import restore as restore_mod
    buf = io.BytesIO()
    Image.fromarray(_rand_img(24, 40)).save(buf, "JPEG", quality=30)
    data = buf.getvalue()
    alone = np.asarray(fastreshuffle.restore(Image.open(io.BytesIO(data)), tiny_model))
    real = restore_mod._restore
    one, other = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(data))
    names = {id(one): "one", id(other): "other"}
    outs = []

    class Tagged(_Blocking):      # the calls on each image named in the order they start: one0, one1, ...
        calls: dict = {}

        def _blocking(self, image, *args):
            n = self.calls[id(image)] = self.calls.get(id(image), -1) + 1
            name = f"{names[id(image)]}{n}"
            self.started[name].set()
            assert self.release[name].wait(30)
            outs.append(np.asarray(real(image, *args)))

    calls = Tagged(monkeypatch, lambda: None)
    try:
        calls.start("one0", one, tiny_model)
        assert calls.started["one0"].wait(30)
        calls.start("one1", one, tiny_model)
        calls.start("other0", other, tiny_model)
        assert calls.started["other0"].wait(30)                 # another image: not held up
        assert not calls.started["one1"].wait(0.5)              # the same image: waits for the first
        calls.release["one0"].set()
        assert calls.started["one1"].wait(30)
    finally:
        calls.join()
    assert len(outs) == 3 and all(np.array_equal(o, alone) for o in outs)


def test_restore_16bit_grey_pil_scales_as_the_array_and_the_cli(tiny_model, tmp_path):
    """An I;16 image is 16-bit whatever its largest value (a dark 16-bit photo is not 8-bit data),
    as the same samples as a uint16 array and as the CLI read them; mode I outside 0..65535 is
    refused, not clipped."""
    from fastreshuffle.io.images import int_gray_scale
    dark = np.random.default_rng(3).integers(0, 200, (24, 32)).astype(np.uint16)
    img = Image.fromarray(dark)
    assert img.mode == "I;16"
    pil = np.asarray(fastreshuffle.restore(img, model=tiny_model)).astype(np.uint16)
    np.testing.assert_array_equal(pil, fastreshuffle.restore(dark, model=tiny_model))
    assert int_gray_scale("I;16", dark) == int_gray_scale("I;16B", dark) == 65535.0
    assert int_gray_scale("I", dark.astype(np.int32)) == 255.0      # convert("I") of an 8-bit image
    for bad in (dark.astype(np.int32) - 100, dark.astype(np.int32) * 1000):
        with pytest.raises(ValueError, match="outside 0..65535"):
            fastreshuffle.restore(Image.fromarray(bad), model=tiny_model)


def test_restore_by_path_and_bad_input(tiny_weights):
    img = _rand_img(16, 16)
    assert fastreshuffle.restore(img, model=str(tiny_weights), device="cpu").shape == img.shape
    with pytest.raises(TypeError):
        fastreshuffle.restore([[1, 2, 3]], model=str(tiny_weights))


# ----------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("h,w,tile,ov", [(1, 1, 8, 0), (17, 33, 8, 8), (100, 37, 32, 16), (64, 64, 64, 32),
                                         (65, 200, 64, 32), (300, 10, 0, 32)])
def test_iter_tiles_partition(h, w, tile, ov):
    cover = np.zeros((h, w), np.int32)
    for (cy0, cy1, cx0, cx1), (wy0, wy1, wx0, wx1) in iter_tiles(h, w, tile, ov):
        cover[cy0:cy1, cx0:cx1] += 1
        assert 0 <= wy0 <= cy0 < cy1 <= wy1 <= h and 0 <= wx0 <= cx0 < cx1 <= wx1 <= w
        assert wy0 % 8 == 0 and wx0 % 8 == 0  # same 8x8 phase as the full image
        assert cy0 - wy0 in (0, ov) or wy0 == 0
    assert (cover == 1).all()


@pytest.mark.parametrize("h, w", [(8, 8), (16, 40), (40, 130), (127, 9), (200, 64)])
def test_small_images_run_with_mirrored_context(tiny_model, h, w):
    """A side under MIN_CONTEXT runs inside a mirrored copy (numpy's "symmetric" padding, a
    multiple of 16 on each side): the result is the padded image's, cropped."""
    from fastreshuffle.inference.tiling import MIN_CONTEXT, context_pad, restore_pixels
    img = _rand_img(h, w, seed=h * w)
    py, px = context_pad(h), context_pad(w)
    assert py % 16 == 0 and px % 16 == 0 and (h >= MIN_CONTEXT or h + 2 * py >= MIN_CONTEXT)
    assert (py == 0) == (h >= MIN_CONTEXT) and (px == 0) == (w >= MIN_CONTEXT)
    big = np.pad(img, ((py, py), (px, px), (0, 0)), mode="symmetric")
    want = restore_pixels(tiny_model, big, tile=0)[py:py + h, px:px + w]
    assert np.array_equal(restore_pixels(tiny_model, img, tile=0), want)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    xb = torch.from_numpy(big).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(restore_tensor(tiny_model, x, tile=0), restore_tensor(tiny_model, xb, tile=0)[..., py:py + h,
                                                                                                       px:px + w])


def test_a_small_image_reports_progress_in_its_own_pixels(tiny_model):
    """Run inside its context, a thin strip reported nothing until the end."""
    from fastreshuffle.inference.tiling import restore_pixels
    calls = []
    restore_pixels(tiny_model, _rand_img(40, 600), tile=128, overlap=16, progress=calls.append)
    assert sum(calls) == 40 * 600 and len([c for c in calls if c > 0]) > 1


def test_self_ensemble_feeds_the_models_input_dtype():
    """A bf16 FastReshuffleNet takes float32 input; wrapped for the ensemble it was fed bf16."""
    from fastreshuffle import FastReshuffleNet
    from fastreshuffle.inference.tiling import SelfEnsemble
    fast = FastReshuffleNet(ReshuffleNetConfig.preset("tiny")).to(torch.bfloat16)
    assert SelfEnsemble(fast).input_dtype == fast.input_dtype == torch.float32


def test_tile_arguments_validated(tiny_model):
    with pytest.raises(ValueError, match="multiple of 8"):
        restore_uint8(tiny_model, _rand_img(16, 16), tile=100)
    with pytest.raises(ValueError, match="multiple of 8"):
        restore_uint8(tiny_model, _rand_img(16, 16), tile=64, overlap=5)


def test_tiled_matches_untiled(tiny_model):
    """Measured: with overlap 32 the tiny preset's tiled output equals the untiled one to ~2e-7
    (float32 rounding); with overlap 16 it differs by up to ~1.5e-3 (see docs/restore.md)."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, 150, 203)
    full = restore_tensor(tiny_model, x, tile=0, clamp=False)
    tiled = restore_tensor(tiny_model, x, tile=64, overlap=32, clamp=False)
    assert (tiled - full).abs().max().item() < 1e-5
    img = _rand_img(150, 203, seed=3)
    a = restore_uint8(tiny_model, img, tile=0)
    b = restore_uint8(tiny_model, img, tile=48, overlap=32)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert (a != b).mean() < 1e-3


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
    from fastreshuffle.inference.tiling import restore_uint8

    def hwm_kib():
        # Peak RSS of this process image (VmHWM).  Not ru_maxrss: Linux carries the parent's
        # peak across fork+exec into it, so under a large pytest process it says nothing.
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))

    h, w, tile = map(int, sys.argv[1:4])
    torch.manual_seed(0)
    m = ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval()
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    base = hwm_kib()
    out = restore_uint8(m, img, tile=tile)
    peak = hwm_kib()
    print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024}))
""")


def _rss(tmp_path, h, w, tile):
    script = tmp_path / "rss.py"
    script.write_text(RSS_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(h), str(w), str(tile)], capture_output=True,
                       text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for VmHWM")
def test_tiled_peak_memory_is_bounded(tmp_path):
    """A 1600x1200 (1.9 Mpixel) image through 256-px tiles: the growth of peak RSS over the
    process baseline (which already holds the input) stays under 2 uint8 images + 80 MiB."""
    h, w = 1200, 1600
    r = _rss(tmp_path, h, w, 256)
    images_mib = 2 * h * w * 3 / 2 ** 20  # input is already counted in base; output + temporaries
    growth = r["peak_mib"] - r["base_mib"]
    assert growth < images_mib + 80, r
    # and the untiled run of the same image needs clearly more (float activations of the whole image)
    r0 = _rss(tmp_path, h, w, 0)
    assert r0["peak_mib"] - r0["base_mib"] > growth + 50, (r, r0)


# ----------------------------------------------------------------------------- CLI basics
def _run_cli(*args):
    return cli_main(["restore", "--quiet", *map(str, args)])


def test_cli_names_and_outdir(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_rand_img(24, 40)).save(src / "a.jpg", quality=30)
    Image.fromarray(_rand_img(24, 40, seed=1)).save(src / "sub" / "b.webp", quality=30)
    Image.fromarray(_rand_img(24, 40, seed=2)).save(src / "c.bmp")
    Image.fromarray(_rand_img(24, 40, seed=3)).save(src / "d.tiff")
    (src / ".cache").mkdir()                                   # hidden: never entered, even with -r
    Image.fromarray(_rand_img(24, 40, seed=4)).save(src / ".cache" / "e.jpg", quality=30)
    Image.fromarray(_rand_img(24, 40, seed=5)).save(src / ".f.jpg", quality=30)
    assert _run_cli(src, "--model", tiny_weights) == 0
    assert (src / "a_restored.png").is_file() and (src / "c_restored.png").is_file()
    assert (src / "d_restored.png").is_file()
    assert not (src / "sub" / "b_restored.png").exists()  # not recursive
    out = tmp_path / "out"
    assert _run_cli(src, "-o", out, "--recursive", "--model", tiny_weights) == 0
    # sub-folders mirrored; the earlier outputs (*_restored.png) in the input folder are not inputs
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        ["a_restored.png", "c_restored.png", "d_restored.png", "sub/b_restored.png"]
    im = Image.open(out / "a_restored.png")
    assert im.format == "PNG" and im.size == (40, 24) and im.mode == "RGB"
    assert _run_cli(src / "a.jpg", "-o", out, "--suffix", "_x", "--model", tiny_weights) == 0
    assert (out / "a_x.png").is_file()


def test_cli_heif_input(tmp_path, tiny_weights):
    """A .heic file is restored by the CLI like its decoded pixels by the API.  pillow-heif is in
    the test extra (and README's HEVC model needs it): no skip when it or its encoder fails."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    p = tmp_path / "h.heic"
    Image.fromarray(_rand_img(32, 48)).save(p, quality=30)
    decoded = np.asarray(Image.open(p).convert("RGB"))
    assert decoded.shape == (32, 48, 3)
    assert _run_cli(p, "--model", tiny_weights) == 0
    out = np.asarray(Image.open(tmp_path / "h_restored.png"))
    np.testing.assert_array_equal(out, fastreshuffle.restore(decoded, model=str(tiny_weights), device="cpu"))


def test_cli_no_overwrite_then_overwrite(tmp_path, tiny_weights, capsys):
    p = tmp_path / "a.png"
    Image.fromarray(_rand_img(16, 16)).save(p)
    out = tmp_path / "a_restored.png"
    out.write_bytes(b"keep me")
    assert _run_cli(p, "--model", tiny_weights) == 0
    assert out.read_bytes() == b"keep me"
    assert "1 file(s) whose output exists (use --overwrite" in capsys.readouterr().err   # (-q: counted)
    assert cli_main(["restore", str(p), "--model", str(tiny_weights)]) == 0
    assert "output exists" in capsys.readouterr().err
    assert _run_cli(p, "--model", tiny_weights, "--overwrite") == 0
    assert Image.open(out).size == (16, 16)


def test_cli_never_replaces_an_input(tmp_path, tiny_weights, capsys):
    p = tmp_path / "a.png"
    Image.fromarray(_rand_img(16, 16)).save(p)
    before = p.read_bytes()
    assert _run_cli(p, "--model", tiny_weights, "--suffix", "", "--overwrite") == 1   # no output as asked
    assert p.read_bytes() == before
    err = capsys.readouterr().err
    assert "error:" in err and "would replace an input" in err, err


def test_cli_same_stem_collision(tmp_path, tiny_weights, capsys):
    Image.fromarray(_rand_img(16, 16)).save(tmp_path / "x.png")
    Image.fromarray(_rand_img(16, 16, seed=1)).save(tmp_path / "x.jpg")
    assert _run_cli(tmp_path, "--model", tiny_weights) == 1      # one of them has no output: exit 1
    err = capsys.readouterr().err
    assert "same name" in err and "or use --format same" in err, err
    assert (tmp_path / "x_restored.png").is_file()
    assert _run_cli(tmp_path, "--model", tiny_weights, "--format", "same") == 0   # as said: both restored
    assert (tmp_path / "x_restored.jpg").is_file()


def test_cli_exif_orientation_alpha_gray(tmp_path, tiny_weights):
    # JPEG stored 40 wide x 24 high with EXIF orientation 6 (rotate 90): displayed 24 x 40.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rand_img(24, 40)).save(tmp_path / "rot.jpg", exif=exif)
    rgba = _rand_img(24, 40, 4, seed=5)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(_rand_img(24, 40, 0, seed=6), "L").save(tmp_path / "gray.png")
    Image.fromarray(_rand_img(24, 40, seed=7)).convert("P").save(tmp_path / "pal.png")
    assert _run_cli(tmp_path, "--model", tiny_weights) == 0
    assert Image.open(tmp_path / "rot_restored.png").size == (24, 40)
    a = Image.open(tmp_path / "alpha_restored.png")
    assert a.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(a)[..., 3], rgba[..., 3])
    assert Image.open(tmp_path / "gray_restored.png").mode == "L"
    assert Image.open(tmp_path / "pal_restored.png").mode == "RGB"


def test_cli_tiled_and_untiled_agree(tmp_path, tiny_weights):
    Image.fromarray(_rand_img(100, 140)).save(tmp_path / "a.png")
    assert _run_cli(tmp_path / "a.png", "--model", tiny_weights, "--tile", "0", "-o", tmp_path / "o0") == 0
    assert _run_cli(tmp_path / "a.png", "--model", tiny_weights, "--tile", "32", "-o", tmp_path / "o1") == 0
    a = np.asarray(Image.open(tmp_path / "o0" / "a_restored.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "o1" / "a_restored.png")).astype(int)
    assert np.abs(a - b).max() <= 1


def test_cli_usage_errors(tmp_path, tiny_weights, capsys):
    Image.fromarray(_rand_img(16, 16)).save(tmp_path / "a.png")
    assert _run_cli(tmp_path / "a.png", "--model", tiny_weights, "--tile", "30") == 2
    assert _run_cli(tmp_path / "a.png", "--model", tmp_path / "missing.safetensors") == 2
    (tmp_path / "empty").mkdir()
    assert _run_cli(tmp_path / "empty", "--model", tiny_weights) == 2
    assert _run_cli(tmp_path / "a.png", "--model", tiny_weights, "--suffix", "a/b") == 2
    err = capsys.readouterr().err
    assert "multiple of 8" in err and "no supported image files" in err and "missing.safetensors" in err


def test_cli_subprocess_entry_point(tmp_path, tiny_weights):
    Image.fromarray(_rand_img(16, 16)).save(tmp_path / "a.png")
    r = subprocess.run([sys.executable, "-m", "fastreshuffle.cli", "restore", str(tmp_path / "a.png"),
                        "--model", str(tiny_weights)], capture_output=True, text=True, env=_env(),
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 restored" in r.stderr
    assert (tmp_path / "a_restored.png").is_file()


# ----------------------------------------------------------------------------- demo
def test_demo(tmp_path, tiny_weights, capsys):
    pytest.importorskip("skimage")
    out = tmp_path / "demo.png"
    assert cli_main(["demo", "-o", str(out), "--model", str(tiny_weights), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "JPEG q10" in text and "PSNR" in text and "restored" in text
    im = Image.open(out)
    assert im.size == (3 * 512 + 2 * 8, 512)
    stamp = out.stat().st_mtime_ns
    assert cli_main(["demo", "-o", str(out), "--model", str(tiny_weights)]) == 2  # never overwrites
    assert out.stat().st_mtime_ns == stamp
    assert "exists" in capsys.readouterr().err
    assert cli_main(["demo", "-o", str(tmp_path / "demo.txt"), "--model", str(tiny_weights)]) == 2
    assert "name the output file NAME.png" in capsys.readouterr().err and not (tmp_path / "demo.txt").exists()
    for name in (str(tmp_path / "x.png") + "/", ".png"):   # (a probe: x.png/ wrote x.png; ".png, got .png")
        assert cli_main(["demo", "-o", name, "--model", str(tiny_weights)]) == 2
        assert f"NAME.png, got {name!r}" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert cli_main(["demo", "-o", str(tmp_path / "a\nb.png"), "--model", str(tiny_weights)]) == 0
    assert "saved " + str(tmp_path / "a\\nb.png") in capsys.readouterr().out     # the name escaped, one line
    (tmp_path / "dir.png").mkdir()                   # refused before the work, even with --overwrite
    assert cli_main(["demo", "-o", str(tmp_path / "dir.png"), "--model", str(tiny_weights), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere.png")   # refused before the work, kept
    assert cli_main(["demo", "-o", str(tmp_path / "link.png"), "--model", str(tiny_weights)]) == 2
    said = capsys.readouterr()
    assert "exists" in said.err and "JPEG q10" not in said.out and (tmp_path / "link.png").is_symlink()
    assert cli_main(["demo", "-o", str(tmp_path / "t.png"), "--model", str(tiny_weights), "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err and not (tmp_path / "t.png").exists()
    assert cli_main(["demo", "-o", str(tmp_path / "t.png"), "--model", str(tiny_weights), "--threads", "1"]) == 0


def test_self_ensemble_is_the_mean_over_the_eight_transforms():
    import torch
    from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
    from fastreshuffle.inference.tiling import restore_tensor, self_ensemble

    torch.manual_seed(0)
    net = ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    x = torch.rand(1, 3, 21, 30)  # sides not multiples of 8: padded before transforming
    with torch.no_grad():
        got = self_ensemble(net, x)
        xp = torch.nn.functional.pad(x, (0, 2, 0, 3), mode="reflect")
        outs = []
        for k in range(4):
            for flip in (False, True):
                t = torch.rot90(xp, k, (2, 3))
                t = t.flip(3) if flip else t
                y = net(t)
                y = y.flip(3) if flip else y
                outs.append(torch.rot90(y, -k, (2, 3)))
        expect = torch.stack(outs).mean(0)[..., :21, :30]
        assert got.shape == x.shape
        assert torch.allclose(got, expect, atol=1e-6)
        # an equivariant "model" (identity) is unchanged by the ensemble
        assert torch.allclose(self_ensemble(lambda t: t, x), x, atol=1e-7)
        # restore_tensor runs it inside the image's mirrored context (sides under 128 px)
        full = restore_tensor(net, x, tile=0, ensemble=True, clamp=False)
        big = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (64, 64), (64, 64)), mode="symmetric"))
        assert torch.allclose(full, self_ensemble(net, big)[..., 64:64 + 21, 64:64 + 30], atol=1e-6)


def test_restore_api_self_ensemble_is_the_mean_of_the_eight_outputs():
    """restore(..., self_ensemble=True) with the shipped model on an image whose sides are not
    multiples of 8, against the definition computed here: reflect-pad to 24 x 32, the model on
    each of the 8 flips / rotations, mapped back, averaged, cropped, then uint8.  The float
    means may differ in the last bit (summation order), so a uint8 value may sit one level
    off where the mean lies on a rounding boundary; measured: 0 such pixels."""
    model = fastreshuffle.load_pretrained("jpeg")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:19, 0:26]
    img = np.clip(np.stack([120 + 90 * np.sin(x / 3.0), 128 + 80 * np.cos(y / 2.5), 60 + 5 * (x + y)], -1)
                  + rng.normal(0, 10, (19, 26, 3)), 0, 255).astype(np.uint8)
    out = fastreshuffle.restore(img, "jpeg", device="cpu", self_ensemble=True, guard=False, precision="fp32")
    assert out.shape == img.shape and out.dtype == np.uint8

    # inside its mirrored context (64 px on each side of a side under 128 px), then to a multiple of 8
    big = np.pad(img, ((64, 64), (64, 64), (0, 0)), mode="symmetric")        # 147 x 154
    t = torch.from_numpy(big).permute(2, 0, 1)[None].float() / 255
    t = torch.nn.functional.pad(t, (0, 160 - 154, 0, 152 - 147), mode="reflect")
    outs = []
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                v = torch.rot90(t, k, (2, 3))
                v = v.flip(3) if flip else v
                r = model(v)
                outs.append(torch.rot90(r.flip(3) if flip else r, -k, (2, 3)))
    mean = torch.stack(outs).double().mean(0)[0, :, 64:64 + 19, 64:64 + 26]
    expect = mean.float().mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    diff = np.abs(out.astype(int) - expect.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())
    plain = fastreshuffle.restore(img, "jpeg", device="cpu", guard=False, precision="fp32")
    assert (plain != out).any()                 # the ensemble did run


def test_restore_guards_a_heif_image_by_its_qp(tmp_path):
    """restore() on a PIL image opened from a HEIF file (path or file object) uses the file's QP,
    as the CLI does: quality 70 (QP 12) comes back unchanged, quality 10 is restored; guard=False
    gives the raw network."""
    import io

    from PIL import Image
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[120:248, 160:288])
    Image.fromarray(a).save(tmp_path / "high.heic", quality=70)
    Image.fromarray(a).save(tmp_path / "low.heic", quality=10)
    high = Image.open(tmp_path / "high.heic")
    dec = np.asarray(high.convert("RGB"))
    out = fastreshuffle.restore(high, device="cpu")            # auto: HEIF -> hevc
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), dec)
    raw = np.asarray(fastreshuffle.restore(Image.open(tmp_path / "high.heic"), device="cpu", guard=False))
    assert not np.array_equal(raw, dec)                       # the raw network would have changed it
    blob = (tmp_path / "high.heic").read_bytes()
    out = fastreshuffle.restore(Image.open(io.BytesIO(blob)), device="cpu")
    assert np.array_equal(np.asarray(out), dec)
    low = Image.open(tmp_path / "low.heic")
    dec = np.asarray(low.convert("RGB"))
    out = np.asarray(fastreshuffle.restore(low, device="cpu"))

    def psnr(x):
        return 10 * np.log10(255.0 ** 2 / np.mean((x.astype(np.float64) - a) ** 2))
    assert psnr(out) > psnr(dec) + 0.05


def test_restore_pil_float_image_is_the_float_array_path(tiny_model):
    """Mode F (32-bit float grey) used to go through RGB, which cut it to 0 and 1."""
    g = _rand_img(20, 28)[..., 0].astype(np.float32) / 255
    out = fastreshuffle.restore(Image.fromarray(g, "F"), model=tiny_model)
    assert out.mode == "F" and out.size == (28, 20)
    want = fastreshuffle.restore(g, model=tiny_model)
    np.testing.assert_array_equal(np.asarray(out), want)
    assert len(np.unique(np.asarray(out))) > 2
    with pytest.raises(ValueError, match="0-255"):
        fastreshuffle.restore(Image.fromarray(g * 255, "F"), model=tiny_model)


def test_restore_api_bad_arguments_are_named(tiny_model):
    img = _rand_img(16, 24)
    for bad in (None, 3):
        with pytest.raises(TypeError, match="model must be"):
            fastreshuffle.restore(img, model=bad)
    for bad in ("512", 64.0, True):
        with pytest.raises(TypeError, match="tile size must be an int"):
            fastreshuffle.restore(img, model=tiny_model, tile=bad)
    with pytest.raises(TypeError, match="tile overlap must be an int"):
        fastreshuffle.restore(img, model=tiny_model, tile=64, overlap=8.0)
    # big-endian samples are the same values: the same result as native ones
    u16 = (_rand_img(16, 24).astype(np.uint16) * 257)
    np.testing.assert_array_equal(fastreshuffle.restore(u16.astype(">u2"), model=tiny_model),
                                  fastreshuffle.restore(u16, model=tiny_model))
    # an empty batch comes back empty; a leaf that requires grad is restored without a warning
    empty = torch.zeros(0, 3, 16, 16)
    assert fastreshuffle.restore(empty, model=tiny_model).shape == (0, 3, 16, 16)
    import warnings
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fastreshuffle.restore(x, model=tiny_model)
    assert not y.requires_grad and y.shape == x.shape


def test_demo_shows_what_restore_gives(tmp_path, capsys):
    """The demo ran the bare network: -1.99 dB printed at q90, -4.89 at q100, where restore gives a
    gain or nothing.  Its middle panel is now restore()'s output on that JPEG, and what it prints."""
    pytest.importorskip("skimage")
    import io
    import re

    from fastreshuffle.cli.demo import demo_photo
    from fastreshuffle.metrics import psnr
    for q in (90, 100):
        out = tmp_path / f"d{q}.png"
        assert cli_main(["demo", "-o", str(out), "--quality", str(q), "--device", "cpu"]) == 0
        said = float(re.search(r"restored:\s+PSNR [\d.]+ dB\s+\(([+-][\d.]+) dB\)", capsys.readouterr().out)[1])
        assert said >= 0, q
        original = demo_photo()
        buf = io.BytesIO()
        Image.fromarray(original).save(buf, format="JPEG", quality=q)
        jpeg = Image.open(io.BytesIO(buf.getvalue()))
        want = np.asarray(fastreshuffle.restore(jpeg, "jpeg", device="cpu"))
        panel = np.asarray(Image.open(out))[:, 512 + 8:2 * 512 + 8]
        np.testing.assert_array_equal(panel, want)
        assert abs(said - (psnr(want, original) - psnr(np.asarray(jpeg.convert("RGB")), original))) < 0.006


def test_cli_threads_option(tmp_path, tiny_weights, capsys):
    """restore takes --threads as eval and train do (it was an unrecognised argument)."""
    import torch
    Image.fromarray(_rand_img(24, 40)).save(tmp_path / "a.jpg", quality=30)
    assert _run_cli(tmp_path / "a.jpg", "--model", tiny_weights, "--threads", "0") == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    before = torch.get_num_threads()
    try:
        assert _run_cli(tmp_path / "a.jpg", "--model", tiny_weights, "--threads", "1") == 0
        assert torch.get_num_threads() == 1 and (tmp_path / "a_restored.png").is_file()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name, quality", [("jpeg-high", 90), ("jpeg-mid", 70), ("jpeg", 90)])
def test_a_loaded_band_model_gets_its_names_strength(name, quality):
    """A model loaded by name and passed as an object is guarded as that name is (docs/restore.md,
    *Python API*): `jpeg-high` and `jpeg-mid` loaded got the general schedule (q90: a quarter of
    the correction instead of three quarters; q70: half instead of all), so a Kodak q90 photo
    restored by the loaded `jpeg-high` came out 0.56 dB behind the same network asked for by name.
    A loaded model brings no bands: `jpeg` loaded restores q90 itself, at the general schedule."""
    import io

    from PIL import Image

    from fastreshuffle.inference.guard import guard_for, strength
    from fastreshuffle.io.jpeg_tables import tables_from_pil
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:64, 0:80]
    photo = np.clip(np.stack([100 + 60 * np.sin(x / 7.0), 120 + 50 * np.cos(y / 5.0), 90 + x + y], -1)
                    + rng.normal(0, 6, (64, 80, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=quality)
    model = fastreshuffle.load_pretrained(name, "cpu")
    assert model.weights_name == name
    g = guard_for(tables_from_pil(Image.open(io.BytesIO(buf.getvalue()))), model)
    assert g.strength == strength(g.quality, name) > 0
    assert name == "jpeg" or g.strength > strength(g.quality, None)       # the band's own schedule
    loaded = np.asarray(fastreshuffle.restore(Image.open(io.BytesIO(buf.getvalue())), model))
    # by name, the same fp32 network (a name other than "jpeg" has no bands either)
    by_name = fastreshuffle.restore(Image.open(io.BytesIO(buf.getvalue())),
                                    name if name != "jpeg" else model, precision="fp32" if name != "jpeg" else "auto")
    assert np.array_equal(loaded, np.asarray(by_name))
    assert fastreshuffle.load_pretrained(fastreshuffle.inference.loading.weights_path(name), "cpu").weights_name is None


def test_a_loaded_model_is_guarded_as_its_name():
    """README's example loads fr.load_pretrained("jpeg"); passed to restore() as an object it ran
    unguarded by default: a q96 JPEG of kodim01 lost 6.9 dB, a never-compressed image was
    changed.  A loaded model knows its file's codec and gets the guard its name would."""
    import io

    from PIL import Image
    model = fastreshuffle.load_pretrained("jpeg", "cpu")
    assert model.codec == "jpeg" and fastreshuffle.load_pretrained("hevc", "cpu").codec == "hevc"
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:64, 0:80]
    photo = np.clip(np.stack([100 + 60 * np.sin(x / 7.0), 120 + 50 * np.cos(y / 5.0), 90 + x + y], -1)
                    + rng.normal(0, 6, (64, 80, 3)), 0, 255).astype(np.uint8)
    assert np.array_equal(fastreshuffle.restore(photo, model), photo)           # never compressed
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=96)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out = fastreshuffle.restore(Image.open(io.BytesIO(buf.getvalue())), model)
    assert np.array_equal(np.asarray(out), decoded)                             # quality ~93+: as decoded
    # the network's own output when asked for, and for a network of unknown codec by default
    assert not np.array_equal(fastreshuffle.restore(photo, model, guard=False), photo)
    from fastreshuffle.inference.loading import model_codec
    built = fastreshuffle.ReshuffleNet(fastreshuffle.ReshuffleNetConfig.preset("tiny")).eval()
    with torch.no_grad():
        built.tail.weight.normal_(0, 0.1)        # its last conv starts at zero: make it change pixels
    assert model_codec(built) is None
    assert not np.array_equal(fastreshuffle.restore(photo, built), photo)


def test_demo_names_its_default_output(tmp_path, tiny_weights, capsys, monkeypatch):
    """Run again without -o, the demo said '-o fastreshuffle_demo.png exists', an option never typed."""
    from fastreshuffle.cli.demo import DEFAULT_OUTPUT
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_OUTPUT).write_bytes(b"earlier")
    assert cli_main(["demo", "--model", str(tiny_weights)]) == 2
    err = capsys.readouterr().err
    assert "the demo's default output" in err and "-o " not in err and "--overwrite" in err
    assert (tmp_path / DEFAULT_OUTPUT).read_bytes() == b"earlier"


def test_unguarded_16bit_array_is_rounded_as_the_tiled_path():
    """restore(uint16 array, guard=False) rounds the network's output to the nearest 16-bit
    level, as restore_pixels (the CLI's path) does -- truncation biased every value down."""
    from fastreshuffle.inference.tiling import restore_pixels
    torch.manual_seed(0)
    model = ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval()
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.05)
    a = np.random.default_rng(1).integers(0, 65536, (40, 56, 3), dtype=np.uint16)
    got = fastreshuffle.restore(a, model, guard=False)
    np.testing.assert_array_equal(got, restore_pixels(model, a))


@pytest.mark.parametrize("h,w", [(100, 2000), (2000, 100), (768, 3000)])
def test_a_panorama_is_tiled_along_its_long_side(h, w):
    """an image within one tile on one side only is still cut along the other, so that no
    window exceeds tile + 2 x overlap on a side (memory bounded by one tile's activations)."""
    tile, ov = 768, 64
    tiles = list(iter_tiles(h, w, tile, ov))
    assert len(tiles) == -(-h // tile) * -(-w // tile)
    for _, (wy0, wy1, wx0, wx1) in tiles:
        assert wy1 - wy0 <= tile + 2 * ov and wx1 - wx0 <= tile + 2 * ov


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("tone", [0, 1])
def test_a_grey_picture_keeps_its_colour(tmp_path, fmt, tone):
    """A black-and-white photo stored as RGB (a JPEG coded in colour, a WebP of a grey image, whose
    decode is off grey by 1-2 levels in a few pixels) came back with faint colour (|R-G|+|G-B| up
    to 5 in 42% of a WebP's pixels, a helper's probe).  Its colour is now the decoded one: exactly
    grey stays exactly grey, and a tone of a level (R = G = Y + 1, B = Y: a review found the
    first rule, the channels' mean, took it off) is kept; by the CLI, restore() on the file and on
    float pixels alike, and it still gains."""
    from skimage import data
    y = np.ascontiguousarray(data.camera()[100:260, 100:260]).astype(np.int16)
    a = np.clip(np.stack([y + tone, y + tone, y], axis=2), 0, 255).astype(np.uint8)
    src = tmp_path / f"g.{fmt.lower()}"
    Image.fromarray(a).save(src, fmt, quality=20)
    assert cli_main(["restore", str(src), "--device", "cpu", "--precision", "fp32"]) == 0
    cli = np.asarray(Image.open(tmp_path / "g_restored.png").convert("RGB")).astype(np.float64)
    api = np.asarray(fastreshuffle.restore(Image.open(src), device="cpu", precision="fp32")).astype(np.float64)
    dec = np.asarray(Image.open(src).convert("RGB")).astype(np.float64)
    np.testing.assert_array_equal(cli, api)
    unguarded = fastreshuffle.restore(dec.astype(np.float32) / 255, "jpeg", device="cpu", precision="fp32",
                                      guard=False) * 255                       # (the float path)
    for out in (cli, unguarded):
        off = lambda z: z - z.mean(axis=2, keepdims=True)                        # noqa: E731
        assert np.abs(off(out) - off(dec)).max() <= 1.0 + 1e-4                   # its colour, to rounding
        if fmt == "JPEG" and tone == 0:
            assert np.ptp(dec, axis=2).max() == 0 and np.ptp(out, axis=2).max() == 0
        assert abs((out[..., 0] - out[..., 2]).mean() - (dec[..., 0] - dec[..., 2]).mean()) < 0.05
    mse = lambda x: np.mean((x - a.astype(np.float64)) ** 2)                     # noqa: E731
    assert 10 * np.log10(mse(dec) / mse(cli)) > 0.5                               # a gain, in dB


@pytest.mark.parametrize("kind", ["file", "array", "tensor"])
def test_a_grey_picture_with_a_small_logo_keeps_its_grey(tmp_path, kind):
    """From a probe (session 52): grey was kept only where the whole picture was grey, so a
    black-and-white photo with a small red logo took colour up to 7.7 levels in 16% of its pixels,
    far from the logo.  A picture grey in at least 99% of its pixels keeps its colour wherever no
    colour is within 8 px; the logo and its surroundings are restored as colour."""
    from skimage import data
    y = np.ascontiguousarray(data.camera()[:, 64:448])
    a = np.repeat(y[..., None], 3, axis=2)
    a[20:34, 320:340] = (220, 30, 30)                                  # the logo
    src = tmp_path / "g.jpg"
    Image.fromarray(a).save(src, "JPEG", quality=20)
    dec = np.asarray(Image.open(src).convert("RGB"))
    if kind == "file":
        out = np.asarray(fastreshuffle.restore(Image.open(src), device="cpu", precision="fp32"))
    elif kind == "array":
        out = fastreshuffle.restore(dec, "jpeg", device="cpu", precision="fp32", guard=False)
    else:
        t = torch.from_numpy(dec.copy()).permute(2, 0, 1)[None].float() / 255
        out = fastreshuffle.restore(t, "jpeg", device="cpu", precision="fp32", guard=False)
        out = np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    colour = np.ptp(dec.astype(int), axis=2) > 2
    assert 0 < colour.mean() < 0.01
    far = ~binary_dilation_np(colour, 9)
    off = lambda z: z.astype(np.float64) - z.mean(axis=2, keepdims=True)      # noqa: E731
    assert np.abs(off(out) - off(dec))[far].max() <= 1.0 + 1e-4              # grey far from the logo, to rounding
    near = binary_dilation_np(colour, 2) & ~colour
    assert np.abs(off(out) - off(dec))[colour | near].max() > 2              # colour restored at the logo
    mse = lambda x: np.mean((x.astype(np.float64) - a) ** 2)                  # noqa: E731
    assert 10 * np.log10(mse(dec) / mse(out)) > 0.5


def binary_dilation_np(m, r):
    from fastreshuffle.inference.jpeg_history import box_sum
    return box_sum(m, r, np.int32) > 0


def test_what_the_guard_leaves_keeps_its_precision_and_edits_are_not_the_files(tmp_path):
    """Findings of a helper's probe of restore()'s inputs:
    * a guarded uint16 or float image came back on the 8-bit grid everywhere, also where the
      guard changed nothing (99% of a uint16 photo's values changed, 72% at 8 bits);
    * a JPEG opened and then drawn on still used its file's tables (they still fit), and the
      guard moved the line by up to 74 levels: it is now restored as its pixels are (an array);
    * an RGBA palette made in memory (convert("P") / quantize() of an RGBA image) lost its alpha."""
    from PIL import ImageDraw
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[:128, :192])
    Image.fromarray(a).save(tmp_path / "q30.jpg", quality=30)
    b = np.asarray(Image.open(tmp_path / "q30.jpg"))
    rng = np.random.default_rng(0)
    u16 = np.clip(b.astype(np.int64) * 257 + rng.integers(-100, 100, b.shape), 0, 65535).astype(np.uint16)
    f32 = np.clip(b / 255 + rng.uniform(-0.0015, 0.0015, b.shape), 0, 1).astype(np.float32)
    o8 = fastreshuffle.restore(b, device="cpu")
    kept = o8 == b
    assert 0.05 < kept.mean() < 0.95                              # the guard changed some, not all
    for x in (u16, f32):
        o = fastreshuffle.restore(x, device="cpu")
        np.testing.assert_array_equal(o[kept], x[kept])
        assert o.dtype == x.dtype and not np.array_equal(o, x)
    im = Image.open(tmp_path / "q30.jpg")
    im.load()
    ImageDraw.Draw(im).line((0, 0, 191, 127), fill=(0, 255, 0), width=3)
    drawn = np.asarray(im).copy()
    np.testing.assert_array_equal(np.asarray(fastreshuffle.restore(im, device="cpu")),
                                  fastreshuffle.restore(drawn, device="cpu"))
    rgba = Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)]), "RGBA").quantize(64)
    assert rgba.mode == "P" and "transparency" not in rgba.info
    out = fastreshuffle.restore(rgba, device="cpu")
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], np.asarray(rgba.convert("RGBA"))[..., 3])


def test_a_closed_image_is_refused_clearly(tmp_path):
    """After ``with Image.open(...) as im: pass`` (or im.close()) Pillow raised a bare
    AssertionError from restore() (a helper's probe)."""
    Image.fromarray(_rand_img(32, 32)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        pass
    shut = Image.open(tmp_path / "a.png")
    shut.close()
    for bad in (im, shut):
        with pytest.raises(ValueError, match="its file was closed before they were"):
            fastreshuffle.restore(bad, device="cpu")
    with Image.open(tmp_path / "a.png") as im:
        im.load()
    assert fastreshuffle.restore(im, device="cpu").size == (32, 32)
