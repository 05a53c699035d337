"""Training smoke tests on tiny generated images: loss goes down, checkpoints, exact resume, bad input."""
import csv
import json

import numpy as np
from helpers import make_images
import pytest
import torch
from PIL import Image

from fastreshuffle.backends import cpu_has_bf16
from fastreshuffle.cli import main
from fastreshuffle.errors import DataError
from fastreshuffle.training.data import PatchPairs, StepBatchSampler, load_folder, parse_quality_range


COMMON = ["--preset", "tiny", "--batch-size", "4", "--patch", "32", "--quality", "5-30", "--val-every", "5",
          "--log-every", "1", "--no-progress", "--threads", "1", "--val-images", "2", "--steps", "12"]


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_loss_decreases_and_checkpoints(tmp_path):
    data = make_images(tmp_path / "imgs")
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--val", str(data), "--out", str(out), "--workers", "0",
               "--no-zero-tail", "--lr", "2e-3"] + COMMON[:-1] + ["20"])
    assert rc == 0
    rows = [r for r in read_log(out / "log.csv") if r["loss"]]
    assert len(rows) == 20
    first = np.mean([float(r["loss"]) for r in rows[:3]])
    last = np.mean([float(r["loss"]) for r in rows[-3:]])
    assert last < 0.8 * first
    assert any(r["val_psnr"] for r in read_log(out / "log.csv"))
    from fastreshuffle.inference.loading import load_model
    for name in ("last.safetensors", "best.safetensors"):
        model = load_model(out / name)
        assert model.config.layers == (2, 3, 2)
        y = model(torch.rand(1, 3, 16, 24))
        assert y.shape == (1, 3, 16, 24)
    assert json.loads((out / "state.json").read_text())["step"] == 20
    # written files get the usual permissions (umask applied), not mkstemp's 0600 (#16 item 7)
    import os
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert modes and all(m == 0o666 & ~umask for m in modes.values()), modes


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without AVX512-BF16 / AMX"))])
def test_resume_matches_uninterrupted(tmp_path, precision):
    """N steps == N/2 + --resume N/2, up to 1e-6, in float32 and under bf16 autocast (where
    training runs the channels-last reference network on CPU)."""
    from safetensors.torch import load_file
    data = make_images(tmp_path / "imgs")
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["train", "--data", str(data), "--val", str(data), "--precision", precision] + COMMON
    assert main(base + ["--out", str(a), "--workers", "0", "--log-every", "3"]) == 0
    assert json.loads((a / "state.json").read_text())["precision"] == precision
    assert main(base + ["--out", str(b), "--workers", "0", "--stop-at", "4", "--log-every", "3"]) == 0
    older = (b / "state.json").read_text()
    assert main(base + ["--out", str(b), "--workers", "0", "--stop-at", "7", "--log-every", "3", "--resume"]) == 0
    assert json.loads((b / "state.json").read_text())["step"] == 7
    cpu1 = json.loads((b / "state.json").read_text())["cpu_seconds"]
    # a run killed between a checkpoint's two files: the step-7 tensors beside step 4's state.json;
    # the state is read from the tensors' own file, so the resume is still exact
    (b / "state.json").write_text(older)
    # resumed with a different number of workers: batches only depend on (seed, sample index)
    assert main(base + ["--out", str(b), "--workers", "1", "--resume", "--log-every", "3"]) == 0
    # the CPU-time count continues over the resume (state.json and the log)
    assert json.loads((b / "state.json").read_text())["cpu_seconds"] > cpu1 > 0
    cpu_log = [float(r["cpu_seconds"]) for r in read_log(b / "log.csv")]
    assert cpu_log == sorted(cpu_log) and cpu_log[-1] > cpu1
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=k)
    la = [(r["step"], r["loss"], r["val_psnr"], r["grad_norm"]) for r in read_log(a / "log.csv")]
    lb = [(r["step"], r["loss"], r["val_psnr"], r["grad_norm"]) for r in read_log(b / "log.csv")]
    assert la == lb  # including the loss row whose 3-step interval spans the interruption
    assert [r[0] for r in la if r[1]] == ["3", "6", "9", "12"]
    # running again without --resume refuses to overwrite
    assert main(base + ["--out", str(b), "--workers", "0"]) == 2


def test_grad_norm_column(tmp_path):
    """The log's grad_norm is the largest global gradient norm of its interval, taken before
    --grad-clip: runs that differ only in --log-every or a clip agree on it where their
    trajectories agree (step 1: the same weights and batch)."""
    data = make_images(tmp_path / "imgs")
    # fp32: the reference below runs in float32 (on a CPU with AVX512-BF16, "auto" would train
    # under bf16 autocast, and step 4's norm would differ by ~0.5% from the reference's)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0", "--precision", "fp32"] + COMMON[:-1] + ["6"]

    def norms(name, *extra):
        assert main(base + ["--out", str(tmp_path / name), *extra]) == 0
        return {int(r["step"]): float(r["grad_norm"]) for r in read_log(tmp_path / name / "log.csv")
                if r["grad_norm"]}

    every1, every3 = norms("a"), norms("b", "--log-every", "3")
    clipped = norms("c", "--grad-clip", "1e-4")
    assert sorted(every1) == list(range(1, 7)) and sorted(every3) == [3, 6]
    assert every3[3] == max(every1[s] for s in (1, 2, 3)) and every3[6] == max(every1[s] for s in (4, 5, 6))
    assert clipped[1] == every1[1] > 1e-3      # before clipping, not the clipped 1e-4
    # independent reference for step 4: the weights saved after step 3, the 4th batch of indices
    # (the data are a pure function of seed and index), L1, the float64 norm of all gradients
    from fastreshuffle.inference.loading import load_model
    assert main(base + ["--out", str(tmp_path / "d"), "--stop-at", "3"]) == 0
    model = load_model(tmp_path / "d" / "last.safetensors")
    images, _, _ = load_folder(data, min_size=32)
    ds = PatchPairs(images, patch=32, codec="jpeg", qualities=parse_quality_range("5-30"), seed=0)
    comp, orig, _ = (torch.stack(t) for t in zip(*(ds[i] for i in next(iter(StepBatchSampler(3, 4, 4))))))
    torch.nn.functional.l1_loss(model(comp), orig).backward()
    ref = torch.cat([p.grad.double().flatten() for p in model.parameters()]).norm().item()
    assert every1[4] == pytest.approx(ref, rel=1e-4)


def test_dataset_is_reproducible_and_augments(tmp_path):
    data = make_images(tmp_path / "imgs", n=3, size=40)
    images, names, rep = load_folder(data, min_size=32)
    ds1 = PatchPairs(images, patch=32, codec="jpeg", qualities=[5, 50], seed=3)
    ds2 = PatchPairs(images, patch=32, codec="jpeg", qualities=[5, 50], seed=3)
    ds3 = PatchPairs(images, patch=32, codec="jpeg", qualities=[5, 50], seed=4)
    for i in (0, 1, 17):
        c1, o1, q1 = ds1[i]
        c2, o2, q2 = ds2[i]
        assert torch.equal(c1, c2) and torch.equal(o1, o2) and q1 == q2
        assert c1.shape == (3, 32, 32) and 0 <= float(c1.min()) and float(c1.max()) <= 1
    assert not torch.equal(ds1[0][1], ds3[0][1])
    qs = {int(ds1[i][2]) for i in range(20)}
    assert qs == {5, 50}
    s = list(StepBatchSampler(2, 4, 8, rank=1, world=2))
    assert s == [[20, 21, 22, 23], [28, 29, 30, 31]]


def test_quality_ranges():
    assert parse_quality_range("5-8") == [5, 6, 7, 8]
    assert parse_quality_range("10") == [10]
    assert parse_quality_range("10,20") == [10, 20]
    # ranges in a list, overlapping ranges weight their qualities
    assert parse_quality_range("5-7,6-7,40") == [5, 6, 7, 6, 7, 40]
    assert parse_quality_range("5-50,5-30") == list(range(5, 51)) + list(range(5, 31))
    for bad in ("50-5", "10,x", "5-", ",", "5-50,30-20"):
        with pytest.raises(ValueError, match="bad quality"):
            parse_quality_range(bad)


def test_bad_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--val", "none", "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert "not found" in capsys.readouterr().err
    # a missing --val folder is named as such (it was said as missing training data)
    good = make_images(tmp_path / "good", n=2, size=40)
    assert main(["train", "--data", str(good), "--val", str(tmp_path / "nonexist"), "--out", str(tmp_path / "r"),
                 "--steps", "1", "--patch", "32", "--workers", "0"]) == 2
    assert f"--val {tmp_path / 'nonexist'}: no such folder" in capsys.readouterr().err
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), "--patch", "30"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    for clip in ("-1", "nan", "inf"):
        assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), "--grad-clip", clip]) == 2
        assert "--grad-clip must be" in capsys.readouterr().err
    # corrupt and too-small files: named and counted
    data = make_images(tmp_path / "imgs", n=2, size=40)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(data / "tiny.png")
    msgs = []
    images, names, rep = load_folder(data, min_size=32, small="skip", warn=msgs.append)
    assert len(images) == 2 and len(rep.unreadable) == 1 and len(rep.too_small) == 1
    assert any("broken.png" in m for m in msgs)
    images, names, rep = load_folder(data, min_size=32, small="pad", warn=msgs.append)
    assert len(images) == 3 and images[-1].shape == (32, 32, 3) and len(rep.padded) == 1
    # ``limit`` (--val-images) counts images kept, not files tried: broken.png sorts first
    images, names, rep = load_folder(data, min_size=32, small="skip", warn=msgs.append, limit=2)
    assert names == ["img0.png", "img1.png"] and len(rep.unreadable) == 1
    (data / "img0.png").unlink(); (data / "img1.png").unlink(); (data / "tiny.png").unlink()
    with pytest.raises(DataError, match="no usable images"):
        load_folder(data, min_size=32)


def test_val_split_holds_out_training_images(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3, size=40)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--val", "split", "--val-images", "1", "--preset", "tiny",
                 "--steps", "2", "--batch-size", "2", "--patch", "32", "--workers", "0", "--no-progress",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "training on 2" in err
    assert main(["train", "--data", str(data), "--val", "split", "--val-images", "3", "--steps", "1",
                 "--out", str(tmp_path / "r2")]) == 2


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_budget_clock(tmp_path, capsys, monkeypatch, clock):
    """--budget-clock cpu counts the process's CPU time (here a fake clock that runs 10 s per
    reading), so the budget stops the run early; the wall clock, over the same short run, does not.
    The log carries both clocks."""
    import itertools
    import time
    ticks = itertools.count()
    monkeypatch.setattr(time, "process_time", lambda: 10.0 * next(ticks))
    data = make_images(tmp_path / "imgs")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(out), "--workers", "0",
                 "--time-budget", "30", "--budget-clock", clock] + COMMON) == 0
    err = capsys.readouterr().err
    step = json.loads((out / "state.json").read_text())["step"]
    rows = read_log(out / "log.csv")
    assert all(r["cpu_seconds"] and r["seconds"] for r in rows)
    if clock == "cpu":
        assert step < 12 and "--time-budget 30 s of CPU time" in err
        assert float(rows[-1]["cpu_seconds"]) > float(rows[-1]["seconds"])
    else:
        assert step == 12 and "--time-budget" not in err


def test_mix_444_replaces_a_chroma_setting_however_written(tmp_path):
    """--mix 444 on a spec that names its chroma as subsampling=420: the 4:4:4 samples replace it
    (once 'given twice' in a data worker, mid-run); with 420 written alone, the same."""
    from fastreshuffle.io.codecs import jpeg
    from fastreshuffle.training.data import Mix
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=2, size=64), min_size=32)
    for codec in ("jpeg:subsampling=420", "jpeg:420"):
        c, o, q = PatchPairs(images, patch=32, codec=codec, qualities=[20], mix=Mix(s444=1.0), seed=1).sample(0)
        assert np.array_equal(c, jpeg(o, 20, subsampling="444").image)


def test_the_test_encode_is_patch_sized(tmp_path, capsys):
    """The codec is tried on one picture before anything is made, at the patch size: x265's
    placebo preset, which cannot code 16 px, trains on 32-px patches."""
    pytest.importorskip("pillow_heif")
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r"), "--workers", "0",
                 "--codec", "hevc:preset=placebo", "--quality", "20"] + COMMON[:4] + ["--steps", "1",
                                                                                       "--no-progress"]) == 0


def test_full_range_mix(tmp_path, capsys):
    """--mix: uncompressed samples come back as their own target; 4:4:4 and double compression
    are what the codec gives for them; offset patches have their coding grid off the 8-pixel grid
    (found by the blockiness phase); no mix draws nothing extra (old runs reproduce)."""
    from fastreshuffle.io.codecs import jpeg
    from fastreshuffle.training.data import Mix, parse_mix
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=3, size=64), min_size=32)
    kw = dict(patch=32, codec="jpeg", qualities=[8], seed=5)
    plain, zero = PatchPairs(images, **kw), PatchPairs(images, mix=Mix(), **kw)
    for i in range(4):
        assert all(np.array_equal(a, b) for a, b in zip(plain.sample(i)[:2], zero.sample(i)[:2]))
    none = PatchPairs(images, mix=parse_mix("none=1"), **kw)
    for i in range(4):
        c, o, q = none.sample(i)
        assert q == 100 and np.array_equal(c, o)
    s444 = PatchPairs(images, mix=parse_mix("444=1"), **kw)
    c, o, q = s444.sample(0)
    assert np.array_equal(c, jpeg(o, 8, "444").image) and not np.array_equal(c, jpeg(o, 8).image)
    double = PatchPairs(images, mix=parse_mix("double=1"), **{**kw, "qualities": [8, 50]})
    differs = 0
    for i in range(6):
        c, o, q = double.sample(i)
        assert any(np.array_equal(c, jpeg(jpeg(o, q0).image, q).image) for q0 in (8, 50))
        differs += not np.array_equal(c, jpeg(o, q).image)
    assert differs >= 2

    def grid_phase(img):  # column phase of the largest mean jump between neighbours
        d = np.abs(np.diff(img.astype(np.float64).mean(axis=2), axis=1)).mean(axis=0)
        return int(np.argmax([d[k::8].mean() for k in range(8)]))

    off = PatchPairs(images, mix=parse_mix("offset=1"), **kw)
    al = PatchPairs(images, mix=parse_mix("offset=0.000001"), **kw)   # crops of p + 8, aligned
    assert sum(grid_phase(al.sample(i)[0]) == 7 for i in range(12)) >= 10
    assert sum(grid_phase(off.sample(i)[0]) != 7 for i in range(12)) >= 8
    for bad in ("none", "none=2", "foo=0.1", "none=x"):
        with pytest.raises(ValueError, match="bad --mix"):
            parse_mix(bad)
    data = make_images(tmp_path / "imgs2")
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r"),
                 "--mix", "offset=3"] + COMMON) == 2
    assert "bad --mix item 'offset=3'" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r2"), "--workers", "0",
                 "--mix", "none=0.2,444=0.3,offset=0.5,double=0.2"] + COMMON) == 0


def test_mix_dark_and_bright(tmp_path):
    """--mix dark / bright: the target is the very crop a mix without them draws, darkened (or moved
    towards white) by one factor in [EXPOSURE_MIN, 1/2] up to rounding, the input that target
    coded; the factors span the range; parse_mix takes both."""
    from fastreshuffle.io.codecs import jpeg
    from fastreshuffle.training.data import EXPOSURE_MIN, Mix, expose, parse_mix
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=3, size=64), min_size=32)
    kw = dict(patch=32, codec="jpeg", qualities=[30], seed=7)
    assert parse_mix("dark=0.1,bright=0.05") == Mix(dark=0.1, bright=0.05)
    x = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    assert np.array_equal(expose(x, 0.5), np.rint(x * 0.5).astype(np.uint8))
    assert np.array_equal(expose(x, 0.5, bright=True), (255 - np.rint((255.0 - x) * 0.5)).astype(np.uint8))
    plain = PatchPairs(images, mix=parse_mix("dark=1e-12"), **kw)   # the same draws, never darkened
    for name, mix in (("dark", "dark=1"), ("bright", "bright=1"), ("either", "dark=1,bright=1")):
        factors = []
        for i in range(24):
            c, o, q = PatchPairs(images, mix=parse_mix(mix), **kw).sample(i)
            p = plain.sample(i)[1].astype(np.float64)
            o64 = o.astype(np.float64)
            up = name == "bright" or (name == "either" and o64.mean() > p.mean())
            if up:
                p, o64 = 255.0 - p, 255.0 - o64
            nz = p > 0      # the factors f with rint(f p) = o everywhere: an interval
            lo, hi = ((o64[nz] - 0.5) / p[nz]).max(), ((o64[nz] + 0.5) / p[nz]).min()
            assert lo <= hi + 1e-9 and np.all(o64[~nz] == 0), (name, i)
            assert max(lo, EXPOSURE_MIN) <= min(hi, 0.5) + 1e-9, (name, i, lo, hi)
            f = (max(lo, EXPOSURE_MIN) + min(hi, 0.5)) / 2
            assert np.array_equal(c, jpeg(o, q).image)
            factors.append((f, up))
        fs = [f for f, _ in factors]
        assert min(fs) < 0.06 and max(fs) > 0.25, (name, fs)
        if name == "either":
            assert 4 <= sum(up for _, up in factors) <= 20


def test_mix_sharpen(tmp_path, monkeypatch):
    """--mix sharpen: the target is the very crop the same mix at a vanishing sharpen probability
    draws, through Pillow's unsharp mask (called here on its own) of a radius and percent in the
    documented ranges, the input that target coded; with double, the mask comes between the two
    codings at the first quality the mix drew (the target is the sharpened first decode); radius and
    percent span their ranges; the sharpen draws come last, so a mix gives the samples it gave
    before sharpen existed."""
    from fastreshuffle.io.codecs import jpeg
    from fastreshuffle.training import data as data_mod
    from fastreshuffle.training.data import SHARPEN_PERCENT, SHARPEN_RADIUS, Mix, parse_mix
    from PIL import Image, ImageFilter
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=3, size=64), min_size=32)
    kw = dict(patch=32, codec="jpeg", qualities=[30, 90], seed=9)
    assert parse_mix("sharpen=0.2,double=0.1") == Mix(sharpen=0.2, double=0.1)
    assert SHARPEN_RADIUS == (0.5, 2.5) and SHARPEN_PERCENT == (50, 250)
    calls = []
    real = data_mod.sharpen
    monkeypatch.setattr(data_mod, "sharpen", lambda a, r, p: calls.append((a.copy(), r, p)) or real(a, r, p))

    def unsharp(a, r, p):
        return np.asarray(Image.fromarray(a).filter(ImageFilter.UnsharpMask(r, p, 0)))

    plain = PatchPairs(images, mix=parse_mix("sharpen=1e-12"), **kw)   # the same draws, never sharpened
    params = []
    for i in range(24):
        calls.clear()
        c, o, q = PatchPairs(images, mix=parse_mix("sharpen=1"), **kw).sample(i)
        _, src, q_plain = plain.sample(i)
        assert len(calls) == 1 and np.array_equal(calls[0][0], src), i
        _, r, p = calls[0]
        assert 0.5 <= r <= 2.5 and 50 <= p <= 250, (r, p)
        assert np.array_equal(o, unsharp(src, r, p)) and not np.array_equal(o, src), i
        assert q == q_plain and np.array_equal(c, jpeg(o, q).image), i
        params.append((r, p))
    rs, ps = [r for r, _ in params], [p for _, p in params]
    assert min(rs) < 0.8 and max(rs) > 1.6 and min(ps) < 110 and max(ps) > 190, params
    # double + sharpen: target = mask(first decode), input = that target coded again
    both = PatchPairs(images, mix=parse_mix("sharpen=1,double=1"), **kw)
    dbl = PatchPairs(images, mix=parse_mix("sharpen=1e-12,double=1"), **kw)
    for i in range(6):
        calls.clear()
        c, o, q = both.sample(i)
        (first, r, p), = calls
        c_dbl, o_dbl, q_dbl = dbl.sample(i)
        q0s = [q0 for q0 in (30, 90) if np.array_equal(c_dbl, jpeg(jpeg(o_dbl, q0).image, q_dbl).image)]
        assert len(q0s) == 1 and q == q_dbl, (i, q0s)     # the first quality this sample drew
        assert np.array_equal(first, jpeg(o_dbl, q0s[0]).image), i
        assert np.array_equal(o, unsharp(first, r, p)) and np.array_equal(c, jpeg(o, q).image), i
    # a mix with the other items draws the same samples with sharpen absent as before it existed:
    # the same crops, exposures and codings as with sharpen at a vanishing probability
    for mix in ("double=0.5,dark=0.3,bright=0.2,offset=0.5,none=0.1", "dark=1"):
        old, new = (PatchPairs(images, mix=parse_mix(m), **kw) for m in (mix, mix + ",sharpen=1e-12"))
        for i in range(8):
            assert all(np.array_equal(a, b) for a, b in zip(old.sample(i)[:2], new.sample(i)[:2])), (mix, i)


def test_whole_image_pairs(tmp_path, monkeypatch, capsys):
    """--encode whole: every pair is an 8-aligned crop of (one orientation of a training image, that
    oriented image coded whole), checked against an independent search and coding; the versions are
    fixed by the seed; the cache is reused without coding again; a pool codes the same arrays."""
    from fastreshuffle.io.codecs import jpeg
    from fastreshuffle.training import data as data_mod
    from fastreshuffle.training.data import WholeImagePairs
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=3, size=72), min_size=32)
    images = [np.ascontiguousarray(im[:, :56]) for im in images]    # 72 x 56: orientation is visible
    kw = dict(patch=32, codec="jpeg", qualities=[8, 30], seed=5, versions=3, rot90=True)
    ds = WholeImagePairs(images, **kw)
    assert len(ds.versions) == 9 and {v.quality for v in ds.versions} == {8, 30}
    assert len({(v.flip_v, v.flip_h, v.rot) for v in ds.versions}) >= 3
    orients = [np.rot90(f, k) for im in images for f in (im, im[::-1], im[:, ::-1], im[::-1, ::-1])
               for k in range(4)]
    seen = set()
    for i in range(24):
        c, o, q = ds.sample(i)
        assert c.shape == o.shape == (32, 32, 3)
        hits = [(ori, y, x) for ori in orients for y in range(0, ori.shape[0] - 31, 8)
                for x in range(0, ori.shape[1] - 31, 8) if np.array_equal(ori[y:y + 32, x:x + 32], o)]
        assert hits, i
        assert any(np.array_equal(jpeg(np.ascontiguousarray(ori), q).image[y:y + 32, x:x + 32], c)
                   for ori, y, x in hits), i
        seen.add((hits[0][1], hits[0][2]))
    assert len(seen) >= 3                                        # crops at several positions
    plain = WholeImagePairs(images, **{**kw, "rot90": False}, flips=False)
    assert all(not (v.flip_v or v.flip_h or v.rot) for v in plain.versions)
    assert not WholeImagePairs(images, **{**kw, "seed": 6}).versions == ds.versions

    cache = tmp_path / "cache"
    first = WholeImagePairs(images, **kw, cache_dir=cache, processes=2)
    assert len(list(cache.glob("*.npy"))) == 9
    monkeypatch.setattr(data_mod, "_encode_version", lambda job: pytest.fail("coded again"))
    again = WholeImagePairs(images, **kw, cache_dir=cache)
    for a, b, c in zip(ds.coded, first.coded, again.coded):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    for i in (0, 5):
        assert all(np.array_equal(a, b) for a, b in zip(ds.sample(i)[:2], again.sample(i)[:2]))
    monkeypatch.undo()
    damaged = sorted(cache.glob("*.npy"))[0]            # a damaged entry is coded again, and said
    damaged.write_bytes(b"\x93NUMPY garbage")
    said = []
    healed = WholeImagePairs(images, **kw, cache_dir=cache, say=said.append)
    assert any(str(damaged) in m and "coding it again" in m for m in said)
    assert all(np.array_equal(a, b) for a, b in zip(ds.coded, healed.coded))
    assert any(np.array_equal(np.load(damaged), c) for c in ds.coded)   # and stored again

    data = make_images(tmp_path / "imgs2")
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r"),
                 "--encode", "whole", "--mix", "none=0.5"] + COMMON) == 2
    assert "--mix is for --encode patch" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r1"),
                 "--encode", "whole", "--versions", "0"] + COMMON) == 2
    assert "--versions must be at least 1" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r2"), "--workers", "0",
                 "--encode", "whole", "--versions", "2", "--coded-cache", str(tmp_path / "c2")] + COMMON) == 0
    assert "coding 8 of 8 whole-image versions" in capsys.readouterr().err
    assert json.loads((tmp_path / "r2" / "state.json").read_text())["encode"] == "whole"


def test_data_wait_column(tmp_path, monkeypatch):
    """The log's data_wait is the data's share of each interval (waiting for batches vs the steps):
    0.4 / 0.45 for the one step whose four samples take 0.1 s each against a 0.05 s step, 0 for
    the others (the count restarts at every row).  The timer reads a clock only this test moves:
    on the wall clock a loaded machine made steps 4-6 read up to 0.61 (1 run in 5 to 15 failed)."""
    import types

    import torch.nn.functional as F

    from fastreshuffle.training import loop
    clock = [1000.0]
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=loop.time.time, process_time=loop.time.process_time,
                                                            perf_counter=lambda: clock[0]))
    data = make_images(tmp_path / "imgs")
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0", "--precision", "fp32"] + COMMON[:-1] + ["6"]
    slow_indices = set(next(iter(StepBatchSampler(2, 3, 4))))          # the batch of step 3
    sample, l1 = PatchPairs.sample, F.l1_loss

    def slow_sample(self, i):
        clock[0] += 0.1 if i in slow_indices else 0.0
        return sample(self, i)

    def timed_l1(*a, **k):                                              # every step "takes" 0.05 s
        clock[0] += 0.05
        return l1(*a, **k)
    monkeypatch.setattr(PatchPairs, "sample", slow_sample)
    monkeypatch.setattr(F, "l1_loss", timed_l1)
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    waits = {int(r["step"]): float(r["data_wait"]) for r in read_log(tmp_path / "run" / "log.csv") if r["loss"]}
    assert sorted(waits) == list(range(1, 7))
    assert waits[3] == pytest.approx(0.4 / 0.45, abs=1e-6), waits
    assert all(waits[s] == 0 for s in (1, 2, 4, 5, 6)), waits


def test_timed_batches_counts_both_sides():
    """_TimedBatches: waiting (including the iterator's start-up) and the steps, each at least
    the time slept on its side; share() restarts the count."""
    import time as _time
    from fastreshuffle.training.loop import _TimedBatches

    class Slow:
        def __iter__(self):
            _time.sleep(0.05)                      # like workers starting
            for i in range(3):
                _time.sleep(0.02)
                yield i

    timed = _TimedBatches(Slow())
    for _ in timed:
        _time.sleep(0.03)
        timed.stepped()
        _time.sleep(0.05)                          # validation: on neither side
    assert timed.waited >= 0.05 + 3 * 0.02 and timed.busy >= 3 * 0.03
    assert timed.busy < 3 * 0.05                   # the time after stepped() is not counted
    share = timed.share()
    assert 0 < share < 1 and timed.waited == timed.busy == 0.0


def test_training_codes_hevc_with_shared_out_threads(tmp_path, monkeypatch):
    """Each coding process gets CPUs // processes x265 threads; the spec naming the run and the
    whole-image cache key do not depend on them (the coded bytes do not)."""
    from fastreshuffle.training import data as data_mod
    from fastreshuffle.training.data import WholeImagePairs, encoder_threads
    monkeypatch.setattr(data_mod.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [encoder_threads(n) for n in (0, 1, 2, 15, 40)] == [16, 16, 8, 1, 1]
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=1, size=40), min_size=32)
    assert str(PatchPairs(images, patch=32, codec="hevc", threads=1).codec) == "hevc:threads=1"
    assert str(PatchPairs(images, patch=32, codec="jpeg", threads=1).codec) == "jpeg"
    kw = dict(patch=32, codec="hevc:30", qualities=[30], versions=1)
    one = WholeImagePairs(images, **kw, threads=1)
    many = WholeImagePairs(images, **{**kw, "codec": "hevc:30:threads=3"})
    assert np.array_equal(one.coded[0], many.coded[0])
    assert one._cache_path(tmp_path, one.versions[0]) == many._cache_path(tmp_path, many.versions[0])


@pytest.mark.parametrize("extra, said", [
    (["--quality", "0-5"], "quality must be in 1..100, got 0"),
    (["--quality", "5-101"], "quality must be in 1..100, got 101"),
    (["--quality=-5"], "quality must be in 1..100, got -5"),
    (["--val-quality", "150"], "--val-quality: jpeg quality must be in 1..100, got 150"),
    (["--codec", "hevc:qp=99"], "HEVC QP must be a whole number in 0..51"),
    (["--codec", "hevc:qp=45", "--quality", "20"], "fixes the QP"),
    (["--codec", "jpeg:15", "--quality", "20"], "names the quality"),
    (["--min-lr", "-1"], "--min-lr must be in [0, --lr]"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--warmup", "-3"], "--warmup must be at least 0"),
    (["--workers", "-1"], "--workers must be at least 0"),
    (["--coded-cache", "x"], "--coded-cache is for --encode whole"),
    # these gave a traceback, or trained without a word on a wrong setting
    (["--weight-decay=-0.1"], "--weight-decay must be 0 or a positive number"),
    (["--seed=-1"], "--seed must be in 0..2^63-1"),
    (["--seed", str(2 ** 70)], "--seed must be in 0..2^63-1"),
    (["--schedule", "step", "--step-every=-1"], "--step-every must be at least 1"),
    (["--schedule", "step", "--step-gamma=-1"], "--step-gamma must be in (0, 1]"),
    (["--val", "split", "--val-images=-1"], "--val-images must be at least 1"),
    (["--val-crop", "4"], "--val-crop must be 0 (the whole image) or at least 8"),
    (["--codec", "jpeg:20", "--quality", "10"], "names the quality"),       # a given 10 is not the default
    (["--codec", "hevc:qp=30", "--val-quality", "50"], "give no --val-quality"),
    # bad codec option values: a traceback in a data worker at the first sample; a huge range: out of memory
    (["--codec", "jpeg:subsampling=411"], "subsampling must be 420, 422 or 444"),
    (["--codec", "jpeg:420:444"], "chroma sampling given twice"),
    (["--codec", "jpeg:preset=x"], "unknown option 'preset' for codec 'jpeg'"),
    (["--codec", "webp:method=9"], "WebP method must be a whole number in 0..6"),
    (["--quality", "1-1000000000"], "qualities lie within 0-100"),
    (["--quality", "5-150"], "--quality 5-150: jpeg quality must be in 1..100"),   # (said "got 101" alone)
])
def test_bad_training_options_are_refused_up_front(tmp_path, capsys, extra, said):
    """Each used to be a traceback from deep inside (a DataLoader worker, the codec), or, worse,
    accepted: 101 crashed only when drawn, a negative --min-lr trained uphill."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "r"
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(out), "--steps", "2"] + extra) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not out.exists()                              # refused before anything was created


def test_resume_checks_the_images_it_was_given(tmp_path, capsys):
    """A resume on other validation images is refused (the run's best was chosen on the old ones);
    other training images are said (it once went on silently, --val split then holding out
    another image)."""
    data = make_images(tmp_path / "imgs", n=4, size=40)
    out = tmp_path / "r"
    base = (["train", "--data", str(data), "--val", "split", "--val-images", "1", "--out", str(out), "--workers", "0"]
            + [a for a in COMMON if a not in ("--val-images", "2")])
    assert main(base + ["--stop-at", "3"]) == 0
    last = sorted(data.iterdir())[-1]
    extra = data / (last.stem + "_z" + last.suffix)           # sorts last: the new held-out image
    extra.write_bytes(last.read_bytes())
    capsys.readouterr()
    assert main(base + ["--resume", "--stop-at", "4"]) == 2
    assert "the validation images changed" in capsys.readouterr().err
    extra.unlink()
    sorted(data.iterdir())[0].unlink()                         # one training image fewer
    assert main(base + ["--resume", "--stop-at", "4"]) == 0
    assert "the training images changed since the run was saved (3 -> 2 files)" in capsys.readouterr().err
    # a run without validation may be resumed with it (nothing was chosen on any images)
    quiet = [a for a in base if a not in ("split",)]
    quiet[quiet.index("--val") + 1:quiet.index("--val") + 1] = ["none"]
    out2 = tmp_path / "r2"
    quiet[quiet.index("--out") + 1] = str(out2)
    assert main(quiet + ["--stop-at", "3"]) == 0
    val = make_images(tmp_path / "vimgs", n=2, size=40)
    withval = list(quiet)
    withval[withval.index("--val") + 1] = str(val)
    capsys.readouterr()
    assert main(withval + ["--resume", "--stop-at", "4"]) == 0, capsys.readouterr().err
    # a run killed between its checkpoint's two files (state.json gone) is still a run to resume
    (out2 / "state.json").unlink()
    assert main(withval + ["--stop-at", "5"]) == 2
    assert "use --resume to continue it" in capsys.readouterr().err


def test_log_rewritten_on_resume_is_never_lost(tmp_path, monkeypatch):
    """A resumed run's log keeps its rows up to the step it resumed at; they are written to a new
    file that replaces the old at once (the old one was truncated first: a kill then lost them)."""
    from fastreshuffle.training import checkpoint
    path = tmp_path / "log.csv"
    log = checkpoint.CsvLog(path, keep_upto=None)
    for step in range(1, 6):
        log.row(step=step, loss=0.5)
    log.close()
    whole = path.read_text()

    def killed(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.CsvLog(path, keep_upto=3).row(step=4, loss=0.25)
    assert path.read_text() == whole
    monkeypatch.undo()
    log = checkpoint.CsvLog(path, keep_upto=3)
    log.row(step=4, loss=0.25)
    log.close()
    assert [r["step"] for r in read_log(path)] == ["1", "2", "3", "4"] and read_log(path)[-1]["loss"] == "0.25"


def test_out_is_never_a_file_or_a_folder_with_run_files(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--steps", "2"] + COMMON[:4]
    a_file = tmp_path / "f.txt"
    a_file.write_text("mine")
    assert main(base + ["--out", str(a_file)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and a_file.read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "log.csv").write_text("my own log")
    assert main(base + ["--out", str(mine)]) == 2
    assert "already holds a run" in capsys.readouterr().err and (mine / "log.csv").read_text() == "my own log"
    assert main(base + ["--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no training state" in capsys.readouterr().err and not (tmp_path / "nothing").exists()


def test_resume_says_what_it_cannot_change(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "r"
    base = ["train", "--data", str(data), "--val", "none", "--out", str(out), "--workers", "0"] + COMMON
    assert main(base + ["--stop-at", "3"]) == 0
    capsys.readouterr()
    assert main(base + ["--resume", "--weight-decay", "0.1", "--stop-at", "4", "--rot90", "--step-gamma", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "--weight-decay 0.1 is not used" in err and "--rot90 was False" in err and "--step-gamma was 0.5" in err
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(out), "--resume"]
                + COMMON[:1] + ["small"] + COMMON[2:]) == 2
    assert "pass the same --preset/--config" in capsys.readouterr().err   # the config, not a tensor list


def test_loss_option(tmp_path, capsys):
    """--loss mse trains on the squared error: with the zero tail the first step's network is the
    identity, so the same seed's first batch logs L1 = mean|e| and MSE = mean e^2 of the same errors
    (|e| < 1, so L1^2 <= MSE < L1); a resume with another --loss says so."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    first = {}
    for loss in ("l1", "mse"):
        out = tmp_path / loss
        assert main(["train", "--data", str(data), "--val", "none", "--out", str(out), "--workers", "0",
                     "--loss", loss] + COMMON[:-1] + ["2"]) == 0
        first[loss] = float(read_log(out / "log.csv")[0]["loss"])
    assert first["l1"] ** 2 <= first["mse"] < 0.5 * first["l1"], first
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "l1"), "--workers", "0",
                 "--resume", "--loss", "mse"] + COMMON[:-1] + ["3"]) == 0
    assert "--loss was 'l1'" in capsys.readouterr().err


def test_sigterm_checkpoints_like_ctrl_c(tmp_path, capsys, monkeypatch):
    """SIGTERM (timeout, a batch scheduler, docker stop) mid-run: the step reached is saved as on
    Ctrl-C, the exit code is 143, and --resume continues from there."""
    import os
    import signal

    import torch.nn.functional as F
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "r"
    real, calls = F.l1_loss, {"n": 0}

    def l1(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)     # the handler raises at the next bytecode
        return real(*a, **k)
    monkeypatch.setattr(F, "l1_loss", l1)
    base = ["train", "--data", str(data), "--val", "none", "--out", str(out), "--workers", "0"] + COMMON
    assert main(base) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "interrupted: saved step" in err and "terminated (SIGTERM)" in err
    step = json.loads((out / "state.json").read_text())["step"]
    assert 3 <= step <= 4
    monkeypatch.setattr(F, "l1_loss", real)
    assert main(base + ["--resume"]) == 0
    assert json.loads((out / "state.json").read_text())["step"] == 12


def test_sigterm_to_the_process_group_with_data_workers_saves_the_step_reached(tmp_path):
    """``timeout``, Slurm and ``kill -TERM -PGID`` signal every process of the group, the
    DataLoader's workers too: a worker killed by it made torch raise "DataLoader worker ... is
    killed by signal" over the interrupt, exit 1, the steps since the last checkpoint lost.  The
    workers now end quietly on it: exit 143, the step reached saved, and no hang at exit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = make_images(tmp_path / "imgs", n=4, size=48)
    out = tmp_path / "g"
    args = ["train", "--data", str(data), "--val", "none", "--out", str(out), "--workers", "1"] + COMMON[:-1] + ["100000"]
    p = subprocess.Popen([sys.executable, "-m", "fastreshuffle.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 240 and p.poll() is None:
            if (out / "log.csv").is_file() and len(read_log(out / "log.csv")) >= 3:
                break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: saved step" in err and "killed by signal" not in err and "RuntimeError" not in err, err
    step = json.loads((out / "state.json").read_text())["step"]
    assert step >= int(read_log(out / "log.csv")[-1]["step"]), err


def test_a_data_worker_ends_quietly_on_sigterm():
    """In a worker, SIGTERM / SIGHUP end it with status 0 (no error to torch), whoever sends it:
    the group's signal, or the DataLoader's own terminate() at shutdown."""
    import multiprocessing
    import os
    import signal
    import time

    from fastreshuffle.training.data import worker_init

    def child(q):
        worker_init(0)
        q.put(os.getpid())
        # not signal.pause(): the kernel may hand the signal to the queue's feeder thread, and a
        # main thread asleep in pause() never ran the handler (a hang, seen under load); a real
        # worker's main thread waits with timeouts, as this loop does
        while True:
            time.sleep(0.05)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        # (a test run under nohup, as CI's, starts with SIGHUP ignored: not the case tested here)
        before = signal.signal(sig, signal.SIG_DFL)
        try:
            q = multiprocessing.get_context("fork").Queue()
            p = multiprocessing.get_context("fork").Process(target=child, args=(q,))
            p.start()
            q.get(timeout=30)
            os.kill(p.pid, sig)
            p.join(timeout=30)
            assert p.exitcode == 0, (sig, p.exitcode)
        finally:
            signal.signal(sig, before)
            if p.is_alive():
                p.kill()
    # under nohup SIGHUP starts ignored: it stays so in the workers (one ending on it would leave
    # the command running without it, and torch would stop the run)
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        q = multiprocessing.get_context("fork").Queue()
        p = multiprocessing.get_context("fork").Process(target=child, args=(q,))
        p.start()
        q.get(timeout=30)
        os.kill(p.pid, signal.SIGHUP)
        p.join(timeout=2)
        assert p.exitcode is None, p.exitcode          # still running
        os.kill(p.pid, signal.SIGTERM)
        p.join(timeout=30)
        assert p.exitcode == 0
    finally:
        signal.signal(signal.SIGHUP, old)
        if p.is_alive():
            p.kill()


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in this process, as in a terminal: a test run started in the
    background by a shell (CI) inherits SIGINT ignored, and Python then leaves it so."""
    import signal
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _states_equal(a, b):
    from safetensors.torch import load_file
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=k)


def test_an_interrupt_inside_the_adam_step_saves_a_whole_step(tmp_path, monkeypatch, ctrl_c):
    """Ctrl-C in the middle of opt.step() (a Python loop over the parameters on CPU) used to save
    the half-updated weights under the previous step's number, so --resume applied that step
    again and ended elsewhere than the uninterrupted run (1 in 10 interrupts); held to the end of
    the step, it must not cost the step its log row either."""
    import os
    import signal
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0"] + COMMON
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(base + ["--out", str(a)]) == 0
    real, calls = torch.optim.Adam.step, {"n": 0}

    def step(self, *args, **kw):
        out = real(self, *args, **kw)
        calls["n"] += 1
        if calls["n"] == 4:                 # the update is done, the step count not yet
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert main(base + ["--out", str(b)]) == 130
    assert json.loads((b / "state.json").read_text())["step"] == 4
    monkeypatch.setattr(torch.optim.Adam, "step", real)
    assert main(base + ["--out", str(b), "--resume"]) == 0
    _states_equal(a, b)
    rows = lambda run: [(r["step"], r["loss"]) for r in read_log(run / "log.csv") if r["loss"]]  # noqa: E731
    assert rows(a) == rows(b) and len(rows(a)) == 12


def test_an_exception_is_not_turned_into_the_signal_held_meanwhile(ctrl_c):
    """A diverging step raised its error inside the held block while a Ctrl-C waited: the
    Ctrl-C came out instead, and the diverged weights were saved to be resumed."""
    import os
    import signal
    from fastreshuffle.training.loop import _signals_held
    with pytest.raises(ValueError):
        with _signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError("the block's own error")
    with pytest.raises(KeyboardInterrupt):           # without an error the signal is delivered
        with _signals_held():
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_validation_is_done_on_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C while step 5 was being validated saved step 5 as validated-and-not-best: its
    PSNR row never came and best.safetensors could differ from the uninterrupted run's."""
    from safetensors import safe_open
    from fastreshuffle.training import loop
    data = make_images(tmp_path / "imgs")
    base = ["train", "--data", str(data), "--val", str(data), "--workers", "0"] + COMMON
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(base + ["--out", str(a)]) == 0
    real = loop.validate

    def validate(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "validate", validate)
    assert main(base + ["--out", str(b)]) == 130
    assert json.loads((b / "state.json").read_text())["val_pending"] is True
    monkeypatch.setattr(loop, "validate", real)
    capsys.readouterr()
    assert main(base + ["--out", str(b), "--resume"]) == 0
    assert "validating step 5, whose validation was interrupted" in capsys.readouterr().err
    vals = lambda run: [(r["step"], r["val_psnr"]) for r in read_log(run / "log.csv") if r["val_psnr"]]  # noqa: E731
    assert vals(a) == vals(b) and [s for s, _ in vals(a)] == ["5", "10", "12"]
    _states_equal(a, b)
    meta = {}
    for run in (a, b):
        for name in ("best", "last"):
            with safe_open(str(run / f"{name}.safetensors"), "pt") as f:
                meta[run.name, name] = f.metadata()
    assert meta["a", "best"] == meta["b", "best"]
    # last.safetensors (step 12, validated) carries its own PSNR, best.safetensors the best's
    assert meta["a", "last"]["val_psnr"] == f"{float(vals(a)[-1][1]):.4f}"
    assert meta["a", "best"]["val_psnr"] == f"{max(float(v) for _, v in vals(a)):.4f}"
    # the last step's validation interrupted: the resume used to say "nothing to do" without it
    c = tmp_path / "c"
    calls = {"n": 0}

    def validate_but_the_last(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(loop, "validate", validate_but_the_last)
    assert main(base + ["--out", str(c)]) == 130
    monkeypatch.setattr(loop, "validate", real)
    assert main(base + ["--out", str(c), "--resume"]) == 0
    assert vals(c) == vals(a) and not json.loads((c / "state.json").read_text())["val_pending"]
    _states_equal(a, c)


def test_resume_keeps_the_validation_it_chose_the_best_on(tmp_path, capsys):
    """Another --val (or none) on --resume compared PSNRs of different images, or replaced the
    validated best.safetensors with unvalidated weights; it is refused and says what to do."""
    data = make_images(tmp_path / "imgs")
    other = make_images(tmp_path / "other", n=2, size=48)
    out = tmp_path / "r"
    base = ["train", "--data", str(data), "--workers", "0", "--out", str(out)] + COMMON
    assert main(base + ["--val", str(data), "--stop-at", "6"]) == 0
    before = (out / "best.safetensors").read_bytes()
    # the quality validation runs at follows --quality when --val-quality is not given
    implicit = base[:base.index("--quality") + 1] + ["40-60"] + base[base.index("--quality") + 2:]
    assert main(implicit + ["--val", str(data), "--resume"]) == 2
    for val in (["--val", "none"], ["--val", str(other)], ["--val", str(data), "--val-crop", "16"]):
        capsys.readouterr()
        assert main(base + val + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert "validation was set up otherwise" in err and "--init" in err, err
        assert (out / "best.safetensors").read_bytes() == before
        assert json.loads((out / "state.json").read_text())["step"] == 6
    # the same folder, however it is written, is the same validation
    assert main(base + ["--val", str(data) + "/", "--stop-at", "7", "--resume"]) == 0


def test_a_run_stopped_before_its_first_checkpoint_leaves_a_reusable_folder(tmp_path, monkeypatch, capsys, ctrl_c):
    """Ctrl-C in the first step left log.csv alone in --out, which then refused both a new run
    and --resume."""
    import os
    import signal

    import torch.nn.functional as F
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "r"
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0", "--out", str(out)] + COMMON
    real = F.l1_loss

    def l1(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)
    monkeypatch.setattr(F, "l1_loss", l1)
    assert main(base) == 130
    assert not out.exists() or not list(out.iterdir())
    monkeypatch.setattr(F, "l1_loss", real)
    assert main(base) == 0


def test_a_diverging_run_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import torch.nn.functional as F
    data = make_images(tmp_path / "imgs", n=2, size=40)
    monkeypatch.setattr(F, "l1_loss", lambda out, ref: (out - ref).abs().mean() * float("inf"))
    assert main(["train", "--data", str(data), "--val", "none", "--workers", "0", "--out", str(tmp_path / "r")]
                + COMMON) == 2
    err = capsys.readouterr().err
    assert "loss became" in err and "lower --lr" in err and "Traceback" not in err


def test_a_codec_naming_its_quality_labels_the_weights_with_it(tmp_path):
    """--codec jpeg:30 trains at quality 30 alone: the weights' metadata said quality 10 (the
    --quality default) about them."""
    from fastreshuffle.io.weights import read_weights
    data = make_images(tmp_path / "imgs", n=2, size=40)
    common = [c for c in COMMON if c not in ("--quality", "5-30")]
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r"), "--workers", "0",
                 "--codec", "jpeg:30"] + common[:-1] + ["2"]) == 0
    for name in ("last", "best"):
        meta = read_weights(tmp_path / "r" / f"{name}.safetensors")[2]
        assert meta["quality"] == "30" and meta["codec"] == "jpeg", meta
    pytest.importorskip("pillow_heif")
    assert main(["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "h"), "--workers", "0",
                 "--codec", "hevc:qp=30"] + common[:-1] + ["1"]) == 0
    meta = read_weights(tmp_path / "h" / "last.safetensors")[2]
    assert meta["quality"] == "qp=30" and meta["codec"] == "hevc", meta


def test_resume_says_when_the_thread_count_differs(tmp_path, capsys):
    """--threads is this process's (not taken from the run), but another count splits the bf16 /
    float32 sums otherwise: a resume with another one says so and how to continue exactly."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--out", str(tmp_path / "r"), "--workers", "0"]
    one = [c for c in COMMON[:-1]] + ["2"]                     # (COMMON has --threads 1)
    assert main(base + one) == 0
    capsys.readouterr()
    two = [c if c != "1" or one[i - 1] != "--threads" else "2" for i, c in enumerate(one)]
    assert main(base + ["--resume"] + two[:-1] + ["3"]) == 0
    assert "saved with 1 thread(s) per process, this one has 2" in capsys.readouterr().err
    assert main(base + ["--resume"] + two[:-1] + ["4"]) == 0       # (saved last with 2)
    assert "thread(s) per process" not in capsys.readouterr().err


def test_resume_says_when_the_process_count_differs(tmp_path, capsys):
    """A run resumed by another number of processes (torchrun) sums each step's batch otherwise:
    said, as for the thread count (it was silent).  The saved count is set by hand here: the
    tests run no second process."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    data = make_images(tmp_path / "imgs", n=2, size=40)
    run = tmp_path / "r"
    base = ["train", "--data", str(data), "--val", "none", "--out", str(run), "--workers", "0"] + COMMON[:-1]
    assert main(base + ["2"]) == 0
    assert json.loads((run / "state.json").read_text())["world"] == 1
    st = run / "state.safetensors"
    with safe_open(str(st), "pt") as f:
        meta = f.metadata()
    state = json.loads(meta["state"])
    state["world"] = 2
    save_file(load_file(str(st)), str(st), metadata={**meta, "state": json.dumps(state)})
    capsys.readouterr()
    assert main(base + ["3", "--resume"]) == 0
    assert "saved by 2 training process(es), this one has 1" in capsys.readouterr().err
    assert main(base + ["4", "--resume"]) == 0                     # (saved last by one)
    assert "training process(es)" not in capsys.readouterr().err

def test_resume_keeps_what_the_run_was_started_with(tmp_path, capsys):
    """Two findings of a helper's probe: a segment interrupted before its --stop-at trained on to
    --steps when resumed (--stop-at was not the run's); a run whose --codec names the quality
    (jpeg:90) or fixes the QP could not be resumed at all ("give no --quality beside it": the
    default 10 was saved as if given).  A segment that reached its --stop-at goes on to --steps."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0"] + COMMON[:-1] + ["9"]
    a = tmp_path / "a"
    assert main(base + ["--out", str(a), "--stop-at", "6", "--time-budget", "0.001"]) == 0   # stopped at once
    stopped = json.loads((a / "state.json").read_text())["step"]
    assert stopped < 6
    assert main(base + ["--out", str(a), "--resume"]) == 0
    assert json.loads((a / "state.json").read_text())["step"] == 6
    assert main(base + ["--out", str(a), "--resume"]) == 0          # its segment done: on to --steps
    assert json.loads((a / "state.json").read_text())["step"] == 9
    capsys.readouterr()
    for codec in ("jpeg:90", "webp:30"):
        b = tmp_path / codec.replace(":", "_")
        one = ["train", "--data", str(data), "--val", "none", "--workers", "0", "--preset", "tiny",
               "--batch-size", "4", "--patch", "32", "--no-progress", "--threads", "1", "--steps", "4"]
        assert main(one + ["--codec", codec, "--out", str(b), "--stop-at", "2"]) == 0
        assert main(one + ["--out", str(b), "--resume"]) == 0, capsys.readouterr().err
        assert json.loads((b / "state.json").read_text())["step"] == 4
        from safetensors import safe_open
        with safe_open(str(b / "last.safetensors"), "pt") as f:
            assert f.metadata()["quality"] == codec.split(":")[1]


def test_a_full_disk_at_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """No space left while a checkpoint is saved: a traceback before (a helper's probe, a 300 KB
    tmpfs); now one line saying which step was saved last and what to do."""
    import errno
    import os

    from fastreshuffle.training import loop
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0", "--out", str(tmp_path / "r")]
    real, calls = loop.save_state, []

    def full(run, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(run, *a, **kw)
    monkeypatch.setattr(loop, "save_state", full)
    assert main(base + COMMON[:-1] + ["4", "--stop-at", "2"]) == 0          # step 2 saved
    capsys.readouterr()
    assert main(base + COMMON[:-1] + ["4", "--resume"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("cannot save the checkpoint of step 4 in " + str(tmp_path / "r") + ": No space left on device; "
            "the last one saved is step 2: free space, then --resume") in err, err


def test_resume_from_another_folder_finds_the_runs_folders(tmp_path, monkeypatch, capsys):
    """--data / --val given as relative paths were saved as typed: a resume from another working
    folder looked elsewhere and was refused (a helper's probe).  They are saved absolute now."""
    make_images(tmp_path / "w" / "tr", n=2, size=40)
    make_images(tmp_path / "w" / "val", n=2, size=40)
    monkeypatch.chdir(tmp_path / "w")
    base = ["train", "--data", "tr", "--val", "val", "--workers", "0"] + COMMON[:-1] + ["4"]
    assert main(base + ["--out", "run", "--stop-at", "2"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "w/run", "--threads", "1", "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert json.loads((tmp_path / "w" / "run" / "state.json").read_text())["step"] == 4


def test_init_of_the_wrong_tensors_is_refused_before_the_data_is_read(tmp_path, capsys):
    """--init of a training-state file (not weights): refused only after the data was read, leaving
    an empty --out (a helper's probe); now before anything is read or made, as --help says."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0"] + COMMON[:-1] + ["2"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "state.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "tensors do not match the model" in err and "train data:" not in err, err
    assert not (tmp_path / "b").exists()


def test_preset_metadata_under_config(tmp_path):
    """The weights' "preset" names the architecture trained: under --config the preset it equals,
    else "custom" (it gave --preset's value, whatever --config said)."""
    import json

    from fastreshuffle.io.weights import read_metadata
    from fastreshuffle.nn.config import PRESETS

    data = make_images(tmp_path / "imgs", n=2, size=40)
    opts = [a for a in COMMON if a not in ("--preset", "tiny")] + ["--steps", "1"]
    tiny = json.dumps(PRESETS["tiny"].to_dict())
    custom = json.dumps({**PRESETS["tiny"].to_dict(), "residual": False})
    for config, want in ((tiny, "tiny"), (custom, "custom")):
        out = tmp_path / want
        assert main(["train", "--data", str(data), "--val", "none", "--workers", "0", "--out", str(out),
                     "--preset", "small", "--config", config] + opts) == 0
        assert read_metadata(out / "last.safetensors")["preset"] == want
        assert json.loads((out / "state.json").read_text())["preset"] == want


def test_fixed_qp_validation_line_names_no_quality(tmp_path, capsys):
    """With ``hevc:qp=N`` the QP is what is coded: the validation line said a quality beside it."""
    pytest.importorskip("pillow_heif")
    data = make_images(tmp_path / "imgs", n=3, size=40)
    common = [c for c in COMMON if c not in ("--quality", "5-30", "--val-images", "2")]
    assert main(["train", "--data", str(data), "--val", "split", "--val-images", "1", "--out", str(tmp_path / "h"),
                 "--workers", "0", "--codec", "hevc:qp=30"] + common[:-1] + ["1"]) == 0
    cap = capsys.readouterr()
    line = next(x for x in (cap.out + cap.err).splitlines() if x.startswith("validation:"))
    assert "hevc:qp=30" in line and "quality" not in line, line


def test_a_run_that_fails_before_its_first_file_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """A run that fails after it started but before it wrote anything removes the --out it made
    (it left an empty folder); a folder that was there before, or holds files, stays."""
    from fastreshuffle.errors import UserError
    from fastreshuffle.training import loop

    def fail(self, *a, **k):
        raise UserError("the network's first step failed")
    monkeypatch.setattr(loop._Loop, "run", fail)
    data = make_images(tmp_path / "imgs", n=2, size=40)
    base = ["train", "--data", str(data), "--val", "none", "--workers", "0"] + COMMON
    out = tmp_path / "new" / "run"
    assert main(base + ["--out", str(out)]) == 2
    assert "first step failed" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "new").is_dir()      # (a parent it made too may stay)
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(base + ["--out", str(mine)]) == 2
    assert mine.is_dir() and not any(mine.iterdir())
    # interrupted while the data is read (a review: only the run itself was covered; the folder
    # was left holding the lock file)
    monkeypatch.undo()

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "_load_data", interrupt)
    assert main(base + ["--out", str(out)]) == 130
    assert not out.exists()
