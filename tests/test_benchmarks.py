"""The benchmark scripts run (tiny shapes, one round) and fail -- exit code 1 -- when a variant
gives a wrong result or raises, instead of printing the error and exiting 0 (which made
benchmarks/gpu_check.sh report OK).  bench_upsamplers has its own tests in tests/nn/test_modules.py.

The torch.compile variants are left out of the smoke runs (``--no-compile``): compiling eager
code with inductor takes 25-50 s per call on the 2-core VM; a raising variant, the failure
path they would take, is injected below instead.
"""
from __future__ import annotations

import ast
import builtins
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import make_images

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--rounds", "1", "--repeats", "1", "--warmup", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ bench_dense_layer
def test_bench_dense_layer_smoke(capsys):
    from benchmarks import bench_dense_layer

    assert bench_dense_layer.main(["--tiny", "--no-compile", *FAST]) == 0
    out = capsys.readouterr().out
    assert "fused" in out and "prealloc" in out and "FAILED" not in out and "CPU flags:" in out
    assert out.count("max rel err vs float32 reference") == len(bench_dense_layer.TINY)


def test_bench_dense_layer_fails_on_a_wrong_result(monkeypatch, capsys):
    from benchmarks import bench_dense_layer

    real = bench_dense_layer.dense_layer_

    def off_by_a_bit(buf, m, *wts):          # 1e-3 of the output range: 10x the fp32 tolerance
        real(buf, m, *wts)
        buf[:, m:] += 1e-3 * buf[:, m:].abs().max()

    monkeypatch.setattr(bench_dense_layer, "dense_layer_", off_by_a_bit)
    assert bench_dense_layer.main(["--tiny", "--no-compile", *FAST]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "fused" in out


def test_bench_dense_layer_fails_when_a_variant_raises(monkeypatch, capsys):
    from benchmarks import bench_dense_layer

    def broken(*a, **k):
        raise RuntimeError("kernel launch failed")

    monkeypatch.setattr(bench_dense_layer, "dense_layer_", broken)
    assert bench_dense_layer.main(["--tiny", "--no-compile", *FAST]) == 1
    assert "raised RuntimeError: kernel launch failed" in capsys.readouterr().out


# ------------------------------------------------------------------ bench_guard
def test_bench_guard_smoke(capsys):
    from benchmarks import bench_guard

    assert bench_guard.main(["--size", "200x136", "--quality", "75", "--rounds", "1", "--network"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "FAILED" not in out
    for row in ("reference (whole image)", "project, 1 thread", "keep_uniform, 1 thread", "restore()"):
        assert row in out


def test_bench_guard_restore_only(capsys):
    from benchmarks import bench_guard

    assert bench_guard.main(["--size", "96x64", "--restore-only", "--rounds", "1"]) == 0
    assert "the guard adds" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["project", "keep_uniform"])
def test_bench_guard_fails_on_a_wrong_result(monkeypatch, capsys, which):
    from benchmarks import bench_guard
    from fastreshuffle.inference import guard, jpeg_consistency

    monkeypatch.setattr(guard, "strip_workers", lambda: 2)     # (the tests run torch on one thread)
    if which == "project":    # threaded strips that leave the input as it is
        real = jpeg_consistency.project
        monkeypatch.setattr(jpeg_consistency, "project",
                            lambda d, r, t, workers=1, **k: r.copy() if workers > 1 else real(d, r, t, **k))
    else:
        real_ku = guard.keep_uniform
        monkeypatch.setattr(guard, "keep_uniform", lambda d, o, *a, workers=1, **k:
                            o if workers > 1 else real_ku(d, o, *a, **k))
    assert bench_guard.main(["--size", "640x480", "--rounds", "1"]) == 1   # (keeps 1.4% as decoded)
    assert "FAILED" in capsys.readouterr().out


# ------------------------------------------------------------------ bench_network
NET = ["--preset", "tiny", "--sizes", "24x16", "--no-compile", *FAST]


def test_bench_network_smoke(tmp_path):
    """Every non-compile variant, with the per-variant memory subprocesses.  In a fresh process, as
    users run it: in this one, after tests/training's runs, an in-process OpenVINO / ONNX Runtime
    peer has crashed the interpreter (SIGSEGV; not isolated further)."""
    import json
    import sys

    from benchmarks import bench_network

    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_network", *NET, "--json", str(tmp_path / "net.json")],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "FAILED" not in r.stdout
    doc = json.loads((tmp_path / "net.json").read_text())
    rows = doc["results"][0]["variants"]
    from benchmarks import peers

    from fastreshuffle import backends

    want = {"eager", "eager_cl", "fast", "fast_bf16"} | {p for p in peers.PEERS if peers.available(p)}
    if backends.cpu_bf16_kernel() and not backends.cpu_bf16_uses_kernel():   # AMX: the kernel by name too
        want.add("fast_bf16_kernel")
    assert set(rows) == want and doc["failures"] == []
    # a bfloat16 peak only where the CPU computes bfloat16 (emulated, its 2048^3 mm takes a minute)

    assert sorted(doc["peaks"]) == (["bfloat16", "float32"] if backends.cpu_has_bf16() else ["float32"])
    for v, r in rows.items():
        assert r["peak_mib"] is not None, v                  # the memory subprocess ran
        tol = (bench_network.MIXED_BF16_TOL if v in bench_network.BF16_VARIANTS
               else bench_network.ABS_TOL["cpu-float32"])
        assert r["max_abs_err_vs_reference"] <= tol, v
        assert r["gflops"] > 0, v
        if r["precision"] in doc["peaks"]:
            assert r["peak_share"] > 0, v
        else:
            assert r["peak_share"] is None, v
    if want & set(peers.PEERS):
        assert doc["results"][0]["fastest_peer"] in peers.PEERS
        assert doc["results"][0]["ours_best"] in bench_network.OURS


def test_bench_network_peak_precisions():
    """The peaks a run measures: its dtype, and bfloat16 for a bf16 variant, only where native."""
    from benchmarks.bench_network import peak_precisions

    assert peak_precisions("float32", ["eager", "fast", "fast_bf16"], True) == ["float32", "bfloat16"]
    assert peak_precisions("float32", ["eager", "fast", "fast_bf16"], False) == ["float32"]
    assert peak_precisions("float32", ["eager", "fast"], True) == ["float32"]
    assert peak_precisions("bfloat16", ["fast", "ov_bf16"], True) == ["bfloat16"]
    assert peak_precisions("bfloat16", ["fast"], False) == []
    assert peak_precisions("float16", ["fast"], True) == []          # no float16 peak is measured


@pytest.mark.parametrize("fault", ["wrong", "raises"])
def test_bench_network_fails(monkeypatch, capsys, fault):
    from benchmarks import bench_network

    real_build = bench_network.build

    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + 1e-3           # 10x the CPU float32 tolerance

    def build(variant, *a):
        model, fmt = real_build(variant, *a)
        if variant == "fast" and fault == "wrong":
            model = Shifted(model)
        if variant == "fast" and fault == "raises":
            raise RuntimeError("no kernel for this shape")
        return model, fmt

    monkeypatch.setattr(bench_network, "build", build)
    assert bench_network.main(NET + ["--variants", "eager,fast", "--no-memory"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "fast at 24x16" in out


def test_bench_network_memory_child_failure_fails(monkeypatch, capsys):
    from benchmarks import bench_network

    class Done:
        returncode, stdout, stderr = 1, "", "Traceback ...\nMemoryError"

    monkeypatch.setattr(bench_network.subprocess, "run", lambda *a, **k: Done())
    assert bench_network.main(NET + ["--variants", "eager,fast"]) == 1
    assert "memory subprocess for fast failed" in capsys.readouterr().out


# ------------------------------------------------------------------ bench_reshuffle
def test_bench_reshuffle_smoke(capsys):
    from benchmarks import bench_reshuffle

    assert bench_reshuffle.main(["--tiny", "--rounds", "1", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("channels_last") >= 6 and "FAILED" not in out and "CPU flags:" in out


@pytest.mark.parametrize("which", ["allocating", "out="])
def test_bench_reshuffle_fails_on_a_wrong_result(monkeypatch, capsys, which):
    from benchmarks import bench_reshuffle

    real = bench_reshuffle.fastreshuffle.reshuffle_down

    def wrong(x, s, out=None):
        if (out is None) == (which == "allocating"):
            y = real(x, s, out=out)
            y.view(-1)[0] += 1
            return y
        return real(x, s, out=out)

    monkeypatch.setattr(bench_reshuffle.fastreshuffle, "reshuffle_down", wrong)
    assert bench_reshuffle.main(["--tiny", "--rounds", "1", "--repeats", "1", "--warmup", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out


# ------------------------------------------------------------------ bench_train_step
def test_bench_train_step_smoke(capsys, tmp_path):
    import json

    from benchmarks import bench_train_step

    assert bench_train_step.main(["--tiny", *FAST, "--json", str(tmp_path / "step.json")]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "train --precision auto` here runs:" in out and "FAILED" not in out
    doc = json.loads((tmp_path / "step.json").read_text())
    rows = doc["results"][0]["variants"]
    assert set(rows) == set(bench_train_step.VARIANTS) and doc["failures"] == []
    for v, r in rows.items():
        want = "bfloat16" if v.startswith("bf16") else "float32"
        assert set(r["op_dtypes"]) == {want}, (v, r["op_dtypes"])
        assert r["median"] > 0 and r["speedup_vs_fp32"] > 0


def test_bench_train_step_fails_when_autocast_misses_the_fused_blocks(monkeypatch, capsys):
    """Without the explicit cast of its fused dense blocks, FastReshuffleNet under autocast runs
    them in float32: the dtype audit must catch it (the loss alone stays close)."""
    from benchmarks import bench_train_step
    import fastreshuffle.nn.fast as fast

    monkeypatch.setattr(fast, "_autocast_dtype", lambda t: None)
    assert bench_train_step.main(["--tiny", *FAST]) == 1
    out = capsys.readouterr().out
    assert "bf16_fast" in out and "FAILED" in out and "expected all in bfloat16" in out


def test_bench_train_step_fails_on_a_wrong_loss_or_a_raise(monkeypatch, capsys):
    from benchmarks import bench_train_step

    real = bench_train_step.Step.loss

    def off(self):
        loss = real(self)
        return loss * 1.001 if self.variant == "fp32_cl" else loss       # 100x the fp32 tolerance

    monkeypatch.setattr(bench_train_step.Step, "loss", off)
    assert bench_train_step.main(["--tiny", *FAST]) == 1
    assert "fp32_cl: loss" in capsys.readouterr().out

    def broken(self):
        if self.variant == "bf16_cl":
            raise RuntimeError("oneDNN bf16 unsupported")
        return real(self)

    monkeypatch.setattr(bench_train_step.Step, "loss", broken)
    assert bench_train_step.main(["--tiny", *FAST]) == 1
    assert "bf16_cl: raised RuntimeError: oneDNN bf16 unsupported" in capsys.readouterr().out


def test_bf16_curves_smoke(tmp_path, capsys):
    """The script behind docs/bf16_training.md: two tiny runs, CSV + table (+ plot)."""
    import csv

    from benchmarks import bf16_curves
    from helpers import make_images

    data = make_images(tmp_path / "imgs", n=3, size=40)
    assert bf16_curves.main(["--preset", "tiny", "--steps", "4", "--val-every", "2", "--log-every", "2", "--batch", "2",
                             "--patch", "32", "--val-images", "2", "--workers", "0", "--data", str(data), "--val",
                             str(data), "--runs", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")]) == 0
    out = capsys.readouterr().out
    assert "| 2 |" in out and "| 4 |" in out and "bf16 - fp32" in out
    with open(tmp_path / "docs" / "bf16_training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["2", "4"]
    assert all(r["val_psnr_fp32"] and r["val_psnr_bf16"] and r["loss_fp32"] and r["loss_bf16"] for r in rows)


# ------------------------------------------------------------------ gpu_check.sh
def _python_snippets(script: str):
    """The Python code gpu_check.sh hands to ``python -c "..."`` and ``python - <<'PY'``."""
    joined = script.replace("\\\n", "")
    for m in re.finditer(r'python -c "((?:[^"\\]|\\.)*)"', joined):
        yield m.group(1).replace('\\"', '"')
    for m in re.finditer(r"python - [^\n]*<<'PY'\n(.*?)\nPY\n", script, re.S):
        yield m.group(1)


def _undefined_names(code: str):
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
            bound |= {a.arg for a in node.args.args} if isinstance(node, ast.FunctionDef) else set()
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound)


def test_gpu_check_script_parses_and_its_python_names_are_defined():
    """gpu_check.sh runs only on the GPU machine (minutes of a scarce budget): its shell syntax and
    the Python it embeds are checked here.  (It printed d._HAS_TRITON, a name never defined, so
    its first CUDA check failed before any test ran.)"""
    path = ROOT / "benchmarks" / "gpu_check.sh"
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    snippets = list(_python_snippets(path.read_text()))
    assert len(snippets) == 3, snippets
    for code in snippets:
        compile(code, "gpu_check.sh", "exec")
        assert _undefined_names(code) == [], (_undefined_names(code), code[:200])


# ------------------------------------------------------------------ figures in README / docs
def test_bench_cpu_details_smoke(capsys):
    """The script behind the GFLOP/s, page-fault and in-cache figures of docs/performance.md and the per-layer ms
    of docs/dense_layer.md."""
    from benchmarks import bench_cpu_details

    assert bench_cpu_details.main(["--tiny", "--rounds", "1", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    for part in ("GFLOP/s", "one dense layer", "first touch", "GB/s", "CPU flags:"):
        assert part in out, part


@pytest.mark.parametrize("repeats", [1, 3, 9, 30])
def test_measure_percentiles_bracket_the_median(repeats, monkeypatch):
    """With fewer than 10 repeats measure() gave the fastest call as p20 and p80 (p80 < median)."""
    from benchmarks import common
    times = [0.001 * (i % 7 + 1) for i in range(repeats)]
    monkeypatch.setattr(common, "call_times", lambda fn, **kw: list(times))
    res = common.measure(lambda: None, warmup=0, repeats=repeats)
    assert res["p20"] <= res["median"] <= res["p80"] and res["n"] == repeats
    assert repeats < 3 or res["p20"] < res["median"] < res["p80"]


def test_eval_photos_cli(capsys):
    from benchmarks import eval_photos

    assert eval_photos.main(["--photos", "chelsea"]) == 0
    assert "chelsea" in capsys.readouterr().out


def test_eval_photos_save(tmp_path, capsys):
    """--save writes the outside photos (pixels exactly scikit-image's) and never into a folder
    that has files (no user file is overwritten)."""
    import numpy as np
    from PIL import Image

    from benchmarks import eval_photos
    assert eval_photos.main(["--save", str(tmp_path / "out")]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(f"{n}.png" for n in eval_photos.OUTSIDE) and "colorwheel.png" in files
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "chelsea.png")),
                                  eval_photos.photo("chelsea"))
    keep = tmp_path / "full"
    keep.mkdir()
    (keep / "mine.png").write_bytes(b"user data")
    assert eval_photos.main(["--save", str(keep)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in keep.iterdir()] == ["mine.png"] and (keep / "mine.png").read_bytes() == b"user data"


def test_every_script_the_docs_name_exists():
    text = "".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    # a module path (benchmarks.x, benchmarks/x.py), not tests/test_benchmarks.py or a pattern (bench_<op>)
    named = set(re.findall(r"(?<![\w/])benchmarks[./](\w+)(?![\w<*])", text)) - {"gpu_check", "py"}
    assert {"bench_cpu_details", "eval_photos", "bench_network", "bench_reshuffle"} <= named
    for name in named:
        assert (ROOT / "benchmarks" / f"{name}.py").is_file(), name


def test_harm_curve_names_each_image(tmp_path, capsys):
    """harm_curve's JSON keeps every image's gain under its name, and the worst one's name, so a
    harmed photo can be found (photos are not in the repo: the check on them is by name)."""
    from benchmarks import harm_curve
    make_images(tmp_path / "photos", n=3, size=64)
    out = tmp_path / "harm.json"
    assert harm_curve.main(["--data", str(tmp_path / "photos"), "--qualities", "10", "90",
                            "--json", str(out), "--plot", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["quality"] for r in rows] == [10, 90]
    for r in rows:
        for k in ("raw", "guarded", "blind", "blind_crop", "raw_crop"):
            per = r[k]["per_image"]
            assert sorted(per) == ["img0.png", "img1.png", "img2.png"]
            assert r[k]["worst"] == min(per.values()) and r[k]["worst_image"] == min(per, key=per.get)
            assert abs(r[k]["mean"] - sum(per.values()) / 3) < 1e-12
        harmed = [k for k in ("guarded", "blind", "blind_crop") if r[k]["worst"] < 0]
        line = [s for s in printed.splitlines() if s.strip().startswith(f"worse at q{r['quality']}:")]
        assert bool(line) == bool(harmed)
        for k in harmed:
            assert f"{k} {r[k]['worst_image']}" in line[0]


def test_harm_curve_exposure(tmp_path, capsys):
    """--exposure F: the photos darkened (or, with --bright, moved towards white) by F before
    coding, as train --mix dark / bright does; the codec's figures are those of the darkened
    photos; bad values are refused."""
    import numpy as np
    from PIL import Image

    from benchmarks import harm_curve
    from fastreshuffle.training.data import expose
    make_images(tmp_path / "photos", n=3, size=64)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "photos").iterdir())]
    for bright in (False, True):
        out = tmp_path / f"harm{bright}.json"
        assert harm_curve.main(["--data", str(tmp_path / "photos"), "--qualities", "30", "--exposure", "0.1",
                                "--json", str(out)] + (["--bright"] if bright else [])) == 0
        doc = json.loads(out.read_text())
        assert doc["exposure"] == 0.1 and doc["bright"] is bright
        want = np.mean([harm_curve._psnr(e, harm_curve._encode(e, 30, 2)[1])
                        for e in (expose(a, 0.1, bright=bright) for a in photos)])
        assert abs(doc["rows"][0]["codec_psnr_mean"] - want) < 1e-9
        assert ("towards white" if bright else "darkened: exposure x 0.1") in capsys.readouterr().out
    for bad in (["--exposure", "0"], ["--exposure", "1.5"], ["--bright"]):
        with pytest.raises(SystemExit):
            harm_curve.main(["--data", str(tmp_path / "photos")] + bad)
        assert "--exposure" in capsys.readouterr().err


def test_harm_curve_sharpen(tmp_path, capsys):
    """--sharpen R:P: each photo sharpened (Pillow's UnsharpMask) before coding and measured
    against the sharpened photo; with --first, the first decode is sharpened (an edited camera
    JPEG); bad values are refused."""
    import numpy as np
    from PIL import Image, ImageFilter

    from benchmarks import harm_curve
    make_images(tmp_path / "photos", n=2, size=64)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "photos").iterdir())]

    def usm(a):
        return np.asarray(Image.fromarray(a).filter(ImageFilter.UnsharpMask(1.0, 150, 0)))
    for first in (None, 60):
        out = tmp_path / f"harm{first}.json"
        assert harm_curve.main(["--data", str(tmp_path / "photos"), "--qualities", "30", "--sharpen", "1:150",
                                "--json", str(out)] + (["--first", "60", "--against", "first"] if first else [])) == 0
        doc = json.loads(out.read_text())
        assert doc["sharpen"] == [1.0, 150]
        refs = [usm(a) if first is None else usm(harm_curve._encode(a, 60, 2)[1]) for a in photos]
        assert not any(np.array_equal(r, a) for r, a in zip(refs, photos))
        want = np.mean([harm_curve._psnr(r, harm_curve._encode(r, 30, 2)[1]) for r in refs])
        assert abs(doc["rows"][0]["codec_psnr_mean"] - want) < 1e-9
        assert "sharpened: unsharp mask radius 1, 150%" in capsys.readouterr().out
    for bad in (["--sharpen", "1"], ["--sharpen", "0:150"], ["--sharpen", "1:x"], ["--sharpen", "nan:150"],
                ["--sharpen", "1:150", "--first", "60"]):
        with pytest.raises(SystemExit):
            harm_curve.main(["--data", str(tmp_path / "photos")] + bad)
        assert "--sharpen" in capsys.readouterr().err


def test_harm_curve_first_codes_twice_and_measures_against_the_chosen_reference(tmp_path, capsys):
    """--first Q: each photo coded at Q first, then at each quality; the codec's figure is the second
    decode against the photo (--against photo) or against the first decode (--against first);
    bad values are refused."""
    import numpy as np
    from PIL import Image

    from benchmarks import harm_curve
    make_images(tmp_path / "photos", n=2, size=64)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "photos").iterdir())]
    firsts = [harm_curve._encode(a, 60, 2)[1] for a in photos]
    for against, refs in (("photo", photos), ("first", firsts)):
        out = tmp_path / f"harm_{against}.json"
        assert harm_curve.main(["--data", str(tmp_path / "photos"), "--qualities", "40", "--first", "60",
                                "--against", against, "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["first"] == 60 and doc["against"] == against and "never_compressed" not in doc
        want = np.mean([harm_curve._psnr(r, harm_curve._encode(f, 40, 2)[1]) for r, f in zip(refs, firsts)])
        assert abs(doc["rows"][0]["codec_psnr_mean"] - want) < 1e-9
        assert sorted(doc["rows"][0]["codec_psnr"]) == ["img0.png", "img1.png"]     # each image's, by name
        assert abs(np.mean(list(doc["rows"][0]["codec_psnr"].values())) - want) < 1e-9
        assert f"coded at q60 first, measured against the {'photo' if against == 'photo' else 'first decode'}" \
            in capsys.readouterr().out
    for bad in (["--first", "0"], ["--first", "101"], ["--against", "first"], ["--first", "90", "--codec", "hevc"]):
        with pytest.raises(SystemExit):
            harm_curve.main(["--data", str(tmp_path / "photos")] + bad)
        assert "--first" in capsys.readouterr().err


def test_harm_curve_strengths_on_shrunk_photos(tmp_path, capsys):
    """--strengths --reduce 2: each photo halved first (data.shrink), then per fixed strength the
    guarded gain of every image, recomputed here from the shrunk photo."""
    import numpy as np
    from PIL import Image

    from benchmarks import harm_curve
    from fastreshuffle.inference.guard import Guard, apply_guard, guard_for
    from fastreshuffle.inference.loading import get_model
    from fastreshuffle.inference.tiling import restore_uint8
    from fastreshuffle.io.jpeg_tables import tables_from_pil
    from fastreshuffle.training.data import shrink
    make_images(tmp_path / "photos", n=2, size=96)
    out = tmp_path / "s.json"
    assert harm_curve.main(["--data", str(tmp_path / "photos"), "--strengths", "--reduce", "2",
                            "--qualities", "90", "--json", str(out)]) == 0
    assert "shrunk 2x" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["reduce"] == 2
    row, = doc["rows"]
    net = get_model("jpeg", "cpu")
    for s in (1.0, 0.75, 0.5, 0.25):
        per = row[f"strength_{s}"]["per_image"]
        assert sorted(per) == ["img0.png", "img1.png"]
        for name, got in per.items():
            a = shrink(np.asarray(Image.open(tmp_path / "photos" / name).convert("RGB")), 2)
            im, dec, _ = harm_curve._encode(a, 90, 2)
            assert dec.shape == (48, 48, 3)
            g = guard_for(tables_from_pil(im))
            y = apply_guard(dec, restore_uint8(net, dec, tile=0), Guard(g.tables, g.quality, s))
            assert abs(got - (harm_curve._psnr(a, y) - harm_curve._psnr(a, dec))) < 1e-9, (s, name)


def test_harm_curve_hevc(tmp_path, capsys):
    """--codec hevc: raw vs guarded per quality, with the QP read from each file; at quality 70
    (QP 12) the guard passes every image through (gain exactly 0)."""
    pytest.importorskip("pillow_heif")
    from benchmarks import harm_curve
    make_images(tmp_path / "photos", n=2, size=64)
    out = tmp_path / "harm.json"
    import warnings
    with warnings.catch_warnings(record=True) as caught:   # the timed restores are of opened HEIF files
        warnings.simplefilter("always")
        assert harm_curve.main(["--data", str(tmp_path / "photos"), "--codec", "hevc", "--model", "hevc",
                                "--qualities", "10", "70", "--json", str(out), "--plot", str(tmp_path / "h.png")]) == 0
    assert not [w for w in caught if "not an opened HEIF file" in str(w.message)]
    rows = json.loads(out.read_text())["rows"]
    assert [r["quality"] for r in rows] == [10, 70] and rows[0]["qp_mean"] > rows[1]["qp_mean"]
    assert rows[1]["guarded"]["per_image"] == {"img0.png": 0.0, "img1.png": 0.0}
    assert rows[1]["raw"]["worst"] != 0.0           # the raw network does change them
    assert (tmp_path / "h.png").stat().st_size > 0
    # never compressed, as pixels: what restore(array, "hevc") returns, measured here independently
    import numpy as np
    from PIL import Image

    import fastreshuffle
    never = json.loads(out.read_text())["never_compressed_pixels"]["per_image"]
    assert sorted(never) == ["img0.png", "img1.png"]
    for name, got in never.items():
        x = np.asarray(Image.open(tmp_path / "photos" / name).convert("RGB"))
        y = np.asarray(fastreshuffle.restore(x, "hevc", device="cpu", precision="fp32"))
        assert (y != x).any()
        want = 10 * np.log10(255.0 ** 2 / np.mean((x.astype(np.float64) - y) ** 2))
        assert abs(got - want) < 1e-9, (name, got, want)
    printed = capsys.readouterr().out
    assert "never compressed, as pixels" in printed and "HEIF quality 15 128x128:" in printed
    assert json.loads(out.read_text())["seconds_per_megapixel"] > 0


def test_harm_curve_webp(tmp_path, capsys):
    """--codec webp: raw vs guarded per quality, the index read from each file; the guarded gain is
    that of restore() on the WebP file itself (recomputed here), 0 at quality 95 (passed through)."""
    import io

    import numpy as np
    from PIL import Image

    import fastreshuffle
    from benchmarks import harm_curve
    make_images(tmp_path / "photos", n=2, size=64)
    out = tmp_path / "harm.json"
    assert harm_curve.main(["--data", str(tmp_path / "photos"), "--codec", "webp", "--model", "webp",
                            "--qualities", "20", "95", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["quality"] for r in rows] == [20, 95] and rows[0]["qp_mean"] > rows[1]["qp_mean"]
    assert rows[1]["guarded"]["per_image"] == {"img0.png": 0.0, "img1.png": 0.0}
    for name, got in rows[0]["guarded"]["per_image"].items():
        a = np.asarray(Image.open(tmp_path / "photos" / name).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="WEBP", quality=20, method=4)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        y = np.asarray(fastreshuffle.restore(Image.open(io.BytesIO(buf.getvalue())), "webp", device="cpu",
                                             precision="fp32", tile=0).convert("RGB"))
        assert abs(got - (harm_curve._psnr(a, y) - harm_curve._psnr(a, dec))) < 1e-9, name
    assert "WebP quality 30" in capsys.readouterr().out


def test_harm_curve_hevc_strengths(tmp_path, capsys):
    """--codec hevc --strengths: per quality, the raw output blended at fixed strengths, each
    recomputed here from restore()'s unguarded output and the blend written out."""
    pytest.importorskip("pillow_heif")
    import numpy as np
    from PIL import Image

    import fastreshuffle
    from benchmarks import harm_curve
    from fastreshuffle.io import codecs
    make_images(tmp_path / "photos", n=2, size=64)
    out = tmp_path / "strengths.json"
    assert harm_curve.main(["--data", str(tmp_path / "photos"), "--codec", "hevc", "--model", "hevc",
                            "--strengths", "--qualities", "30", "--json", str(out)]) == 0
    row, = json.loads(out.read_text())["rows"]
    assert row["quality"] == 30
    for s in (1.0, 0.75, 0.5, 0.25):
        gains = []
        for name in ("img0.png", "img1.png"):
            a = np.asarray(Image.open(tmp_path / "photos" / name).convert("RGB"))
            dec = codecs.hevc(a, 30).image
            y = np.asarray(fastreshuffle.restore(dec, "hevc", device="cpu", precision="fp32", guard=False, tile=0))
            mixed = np.clip(np.round(dec + s * (y.astype(np.float64) - dec)), 0, 255)
            gains.append(harm_curve._psnr(a, mixed.astype(np.uint8)) - harm_curve._psnr(a, dec))
        got = row[f"strength_{s}"]
        assert abs(got["mean"] - np.mean(gains)) < 1e-9 and abs(got["worst"] - min(gains)) < 1e-9, (s, got, gains)
    assert "q 30  s=1.00" in capsys.readouterr().out


def test_same_format_rows(tmp_path, capsys):
    """same_format's columns are changes over the JPEG input: recomputed here image by image."""
    import numpy as np
    from PIL import Image

    import fastreshuffle as fr
    from benchmarks import same_format as sf
    from fastreshuffle.training.data import shrink
    make_images(tmp_path / "photos", n=2, size=64)
    out = tmp_path / "same.json"
    assert sf.main(["--data", str(tmp_path / "photos"), "--quality", "50", "99", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["quality"] for r in rows] == [50, 99]
    assert rows[1]["mean"][0] == 0.0                  # q99 is passed through: png column unchanged
    want = []
    for name in ("img0.png", "img1.png"):
        img = np.asarray(Image.open(tmp_path / "photos" / name))
        im, dec = sf.jpeg_roundtrip(img, 50)
        restored = np.asarray(fr.restore(im, "jpeg", device="cpu"))
        base = sf.psnr(dec, img)
        want.append([sf.psnr(restored, img) - base, sf.psnr(sf.jpeg_roundtrip(restored, 95, 0)[1], img) - base])
    assert rows[0]["worst"][:2] == [round(min(a, b), 3) for a, b in zip(*want)]
    assert rows[0]["mean"][:2] == [round((a + b) / 2, 3) for a, b in zip(*want)]
    # --reduce 2: each photo halved first (data.shrink), as for CBSD432's q95 originals
    assert sf.main(["--data", str(tmp_path / "photos"), "--quality", "50", "--reduce", "2", "--limit", "1",
                    "--json", str(out)]) == 0
    img = shrink(np.asarray(Image.open(tmp_path / "photos" / "img0.png")), 2)
    im, dec = sf.jpeg_roundtrip(img, 50)
    base = sf.psnr(dec, img)
    assert json.loads(out.read_text())[0]["mean"][0] == round(
        sf.psnr(np.asarray(fr.restore(im, "jpeg", device="cpu")), img) - base, 3)
    with pytest.raises(SystemExit):
        sf.main(["--data", str(tmp_path / "photos"), "--reduce", "0"])
    assert "--reduce must be 1 to 8" in capsys.readouterr().err


def test_tile_seams_smoke(capsys):
    """benchmarks/tile_seams.py: one model, two overlaps; the overlap that covers the network's
    reach gives a smaller difference than the one that does not."""
    from benchmarks.tile_seams import main as seams
    assert seams(["--models", "jpeg", "--overlaps", "8", "96", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("jpeg ")]
    assert [r[1] for r in rows] == ["8", "96"] and "CPU flags:" in out
    assert float(rows[1][2]) < float(rows[0][2])


def test_small_images_smoke(capsys):
    """The script behind the uniform-area and mirrored-context figures (inference/guard.py,
    inference/tiling.py, docs/restore.md): runs its variants and puts the settings back."""
    pytest.importorskip("skimage")
    from benchmarks import small_images
    from fastreshuffle.inference import guard, tiling
    shipped = guard.UNIFORM_RADIUS, tiling.MIN_CONTEXT, guard.PLANAR_STEP
    assert small_images.main(["--sizes", "8", "24", "--crops", "1", "--qualities", "30", "--photos", "astronaut",
                              "--planar"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "both r16" in out and "before" in out and "both r16 uniform only" in out
    assert len([ln for ln in out.splitlines() if ln.split()[:1] in (["8"], ["24"])]) == 2
    assert (guard.UNIFORM_RADIUS, tiling.MIN_CONTEXT, guard.PLANAR_STEP) == shipped


def test_blind_crops_smoke(tmp_path, capsys):
    """The script behind docs/restore.md's figures for decoded JPEGs in small crops: each crop
    that fits is coded, restored blind and from its file, and the never-compressed crops are
    checked to come back unchanged (its exit status says so)."""
    from benchmarks import blind_crops
    make_images(tmp_path / "photos", n=2, size=210)
    out = tmp_path / "b.json"
    assert blind_crops.main(["--data", str(tmp_path / "photos"), "--qualities", "10", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU flags:" in printed and "never-compressed crops returned unchanged: 2 of 2" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["size"], r["quality"]) for r in rows] == [([96, 96], 10)]      # the larger crops do not fit
    assert len(rows[0]["results"]) == 4 and all({"blind", "file", "found"} <= set(r) for r in rows[0]["results"])


def test_other_tables_smoke(tmp_path, capsys):
    """The script behind the 4:4:4 / flat-table figures (docs/other_tables.md): each
    table pair at each sampling, restored now and with the guard before (--before); the guard is
    put back; an IJG q97 4:4:4 file is now passed through and read as q97."""
    from benchmarks import other_tables
    from fastreshuffle.inference import guard
    shipped = guard.guard_for
    make_images(tmp_path / "photos", n=2, size=64)
    out = tmp_path / "t.json"
    assert other_tables.main(["--data", str(tmp_path / "photos"), "--tables", "ijg-97", "flat-6", "--before",
                              "--json", str(out)]) == 0
    assert guard.guard_for is shipped
    assert "CPU flags:" in capsys.readouterr().out
    res = {(r["tables"], r["sampling"]): r for r in json.loads(out.read_text())["results"]}
    assert len(res) == 6 and all(len(r["now"]["per_image"]) == len(r["before"]["per_image"]) == 2 for r in res.values())
    assert res["ijg-97", "4:4:4"]["quality"] == 97 and res["ijg-97", "4:4:4"]["now"]["per_image"] == [0.0, 0.0]
    assert res["flat-6", "4:2:0"]["quality"] == 93 and res["flat-6", "4:4:4"]["quality"] == 96
    assert [res[t, s]["file_sampling"] for t, s in res if t == "ijg-97"] == [[2, 2], [1, 1], None]


def test_other_tables_samplings_4_2_2(tmp_path):
    """--samplings 4:2:2 writes 4:2:2 files (chroma halved across only: (v, h) = (1, 2)), which
    are read as subsampled: IJG q97 gets a quarter of the correction, not 4:4:4's none."""
    from benchmarks import other_tables
    make_images(tmp_path / "photos", n=1, size=64)
    out = tmp_path / "t.json"
    assert other_tables.main(["--data", str(tmp_path / "photos"), "--tables", "ijg-97", "--samplings", "4:2:2",
                              "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert (r["sampling"], r["file_sampling"], r["quality"]) == ("4:2:2", [1, 2], 97)
    with pytest.raises(SystemExit):
        other_tables.main(["--samplings", "4:1:1"])


def test_graphics_smoke(capsys):
    """The script behind the non-photo figures (docs/restore.md): every picture and quality runs, a
    never-compressed picture comes back unchanged (else exit 1), the switch is put back."""
    from benchmarks import graphics
    from fastreshuffle.inference import guard
    shipped = guard.PLANAR_STEP
    for extra in ([], ["--uniform-only"]):
        assert graphics.main(["--size", "64", "--qualities", "90"] + extra) == 0
        out = capsys.readouterr().out
        assert "CPU flags:" in out and all(name in out for name in graphics.DEFAULT)
        assert "black and white" not in out and "dithered" not in out   # (named only: the docs' figures are over the six)
        assert ("uniform areas only" in out) == bool(extra)
        assert guard.PLANAR_STEP == shipped
    assert graphics.main(["--size", "64", "--qualities", "90", "--pictures", "black and white,dithered"]) == 0
    out = capsys.readouterr().out
    assert "black and white" in out and "dithered" in out
    assert graphics.main(["--pictures", "nope"]) == 2


def test_pixelated_smoke(capsys):
    """The script behind the pixelated-picture figures (docs/quality.md): both variants run, the
    rule's switch is put back, bad --cells are refused."""
    from benchmarks import pixelated
    from fastreshuffle.inference import guard
    shipped = guard._CELL_SHARE, guard._CELL_FLAT_SHARE
    assert pixelated.main(["--size", "64", "--qualities", "90", "--cells", "8", "8+4", "--samplings", "444",
                           "--photos", "chelsea"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "with keep_cells" in out and (guard._CELL_SHARE, guard._CELL_FLAT_SHARE) == shipped
    rows = [line.split() for line in out.splitlines() if line.startswith(("8 ", "8+4 "))]
    assert [r[:3] for r in rows] == [["8", "444", "q90"], ["8+4", "444", "q90"]]
    assert rows[0][4] == "+0.000"               # on the grid, the cells come back as decoded
    photo = torch.arange(300).reshape(10, 10, 3).to(torch.uint8).numpy()
    assert pixelated.pixelated(photo, 8, 4, 16).shape == (16, 16, 3)
    for bad in (["--cells", "x"], ["--cells", "8+8"], ["--size", "32"]):
        assert pixelated.main(bad) == 2


def test_annotations_smoke(capsys):
    """benchmarks.annotations (README, *Where it can still lose*): one photo, one quality, one
    colour; a colour that is not R,G,B is refused."""
    from benchmarks import annotations
    assert annotations.main(["--photos", "astronaut", "--size", "96", "--qualities", "30", "--colours", "0,255,0"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("  astronaut")]
    assert len(rows) == 1 and rows[0].count("->") == 2 and "CPU flags:" in out, out
    before, after = (float(v) for v in re.findall(r"([\d.]+) ->\s+([\d.]+) dB", rows[0])[0])
    assert 20 < before < 60 and 20 < after < 60
    with pytest.raises(SystemExit):
        annotations.main(["--colours", "0,255"])


def test_annotations_pasted_smoke(capsys):
    """--pasted (docs/quality.md, *Pasted pictures*): a page and a bar per colour, with --file,
    --subsampling 444, --replicated and --at; --file goes with --pasted, not with --replicated."""
    from benchmarks import annotations
    base = ["--pasted", "--photos", "camera", "--size", "64", "--qualities", "30", "--colours", "30,60,200"]
    for extra in ([], ["--file"], ["--subsampling", "444", "--at", "61"], ["--replicated"]):
        assert annotations.main(base + extra) == 0, extra
        rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  camera")]
        assert len(rows) == 2 and all(r.count("->") == 2 for r in rows), (extra, rows)
    for bad in (["--file"], base + ["--file", "--replicated"], base + ["--at", "0"]):
        with pytest.raises(SystemExit):
            annotations.main(bad)


def test_chroma_check_smoke(tmp_path, capsys):
    """benchmarks.chroma_check: each kind of decode restored with and without the check, the
    check's limit put back afterwards."""
    from benchmarks import chroma_check
    from fastreshuffle.inference import jpeg_history
    shipped = jpeg_history._CHROMA_VETO
    make_images(tmp_path / "photos", n=2, size=64)
    assert chroma_check.main(["--data", str(tmp_path / "photos"), "--qualities", "30"]) == 0
    out = capsys.readouterr().out
    assert jpeg_history._CHROMA_VETO == shipped and "CPU flags:" in out
    assert [line.split()[0] for line in out.splitlines() if " q30 " in line and "mean" in line] == list(chroma_check.KINDS)
