"""tools/gpu_train.sh, the prepared GPU training run, dry-run on CPU with a tiny budget: it trains
on the packed data for its time budget, checkpoints on the clock, stops with a checkpoint, and a
second call continues the run it is given (as a device call would with the folder brought back)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import make_images

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_train.sh"
TINY = ("--preset tiny --patch 32 --batch-size 2 --steps 100000 --val-every 100000 --workers 0 --threads 1 "
        "--val-images 2 --log-every 5")


def run_script(tmp_path, out, seconds, resume, status=0, **extra):
    env = dict(os.environ, **extra, OUT=str(out), GPU_TRAIN_DATA=str(tmp_path / "gpu_data"), GPU_TRAIN_DEVICE="cpu",
               GPU_TRAIN_SKIP_BUILD="1", GPU_TRAIN_SECONDS=str(seconds), GPU_TRAIN_CKPT_EVERY="1.5",
               GPU_TRAIN_ARGS=TINY, GPU_TRAIN_RESUME=str(resume),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == status, r.stdout[-3000:] + r.stderr[-2000:]
    return r.stdout


def test_gpu_train_script_parses():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_gpu_train_dry_run_checkpoints_and_resumes(tmp_path):
    make_images(tmp_path / "gpu_data" / "train", n=3, size=48)
    make_images(tmp_path / "gpu_data" / "val", n=2, size=40, seed=1)
    out1 = tmp_path / "out1"
    log = run_script(tmp_path, out1, 6, tmp_path / "nothing")
    run = out1 / "run"
    assert {"last.safetensors", "state.json", "state.safetensors", "log.csv"} <= {p.name for p in run.iterdir()}
    ckpts = [int(s) for s in re.findall(r"checkpoint: step (\d+)", log)]
    assert len(ckpts) >= 2 and ckpts == sorted(ckpts), log[-2000:]      # on the clock, more than once
    step1 = json.loads((run / "state.json").read_text())["step"]
    assert f"stopped at step {step1} (--time-budget 6 s)" in log
    assert step1 == ckpts[-1] and 0 < step1 < 100000
    assert json.loads((run / "state.json").read_text())["precision"] == "bf16"
    # the last step's weights, exported as a shipped model file (what comes back of a paper run)
    from fastreshuffle.io.weights import read_weights
    exported = out1 / "weights_fp16.safetensors"
    (cfg, state, meta), (cfg_last, state_last, _) = read_weights(exported), read_weights(run / "last.safetensors")
    assert cfg == cfg_last and state.keys() == state_last.keys()
    for name, t in state.items():
        assert t.dtype == torch.float16 and torch.equal(t, state_last[name].half()), name
    assert meta["steps"] == str(step1)

    # a second call continues the run brought back from the first
    back = tmp_path / "gpu_resume"
    shutil.copytree(run, back)
    (back / "state.json").unlink()        # a copy: train resumes from state.safetensors alone
    out2 = tmp_path / "out2"
    park = tmp_path / "park"
    state_kib = (back / "state.safetensors").stat().st_size / 1024
    log2 = run_script(tmp_path, out2, 3, back, GPU_TRAIN_PARK=str(park), GPU_TRAIN_RETURN_KIB=str(int(state_kib) - 1))
    assert f"resuming {out2 / 'run'} at step {step1}" in log2
    # files over the return limit leave $OUT (the device tool would not bring them back); the rest stay
    assert (park / "state.safetensors").is_file() and not (out2 / "run" / "state.safetensors").exists()
    assert f"parked {out2 / 'run' / 'state.safetensors'}" in log2
    assert (out2 / "weights_fp16.safetensors").is_file() and (out2 / "run" / "state.json").is_file()
    step2 = json.loads((out2 / "run" / "state.json").read_text())["step"]
    assert step2 > step1
    steps = [int(r.split(",")[0]) for r in (out2 / "run" / "log.csv").read_text().splitlines()[1:]]
    assert min(steps) <= step1 < max(steps)                                # the first call's rows are kept
    # that run folder, brought back without its (parked) state, cannot be resumed: said before the
    # build, not after it as a failing train --resume
    log3 = run_script(tmp_path, tmp_path / "out3", 3, out2 / "run", status=2)
    assert "holds no state.safetensors" in log3 and "=== train" not in log3
    # an OUT that holds an earlier call's output is not reused (its train.log was overwritten and
    # its run exported again although train refused to start)
    log_before = (out1 / "train.log").read_bytes()
    assert "already holds a gpu_train output" in run_script(tmp_path, out1, 3, tmp_path / "nothing", status=2)
    assert (out1 / "train.log").read_bytes() == log_before


def test_pack_copies_data_within_its_cap(tmp_path):
    from tools import gpu_train_pack

    train = make_images(tmp_path / "train", n=4, size=48)
    val = make_images(tmp_path / "val", n=3, size=40, seed=1)
    sizes = [p.stat().st_size for p in sorted(train.iterdir())]
    cap = (sizes[0] + sizes[1] + sizes[2] / 2) / 2 ** 20                 # room for two files and a half
    out = tmp_path / "gpu_data"
    from fastreshuffle.io.weights import save_weights
    from fastreshuffle.nn import ReshuffleNet, ReshuffleNetConfig
    init = tmp_path / "grown.safetensors"
    save_weights(ReshuffleNet(ReshuffleNetConfig.preset("tiny")), init)
    assert gpu_train_pack.main(["--train", str(train), "--val", str(val), "--val-images", "2", "--max-mib",
                                str(cap), "--no-wheel", "--out", str(out), "--init", str(init)]) == 0
    assert (out / "init.safetensors").read_bytes() == init.read_bytes()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["img0.png", "img1.png"]
    assert sorted(p.name for p in (out / "val").iterdir()) == ["img0.png", "img1.png"]
    assert (out / "train" / "img1.png").read_bytes() == (train / "img1.png").read_bytes()
    assert "train: 2 files" in (out / "MANIFEST.txt").read_text() and not (out / "wheels").exists()


def test_pack_never_removes_what_is_not_a_pack(tmp_path, capsys):
    """--out used to be deleted first, whatever it held: a user's folder, the images to pack."""
    from tools import gpu_train_pack

    train = make_images(tmp_path / "train", n=2, size=32)
    val = make_images(tmp_path / "val", n=2, size=32, seed=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    a_file = tmp_path / "a.txt"
    a_file.write_text("keep")
    base = ["--val", str(val), "--no-wheel"]
    for argv, said in ((["--train", str(train), "--out", str(mine)], "not a previous pack"),
                       (["--train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")], "holds no images"),
                       (["--train", str(train), "--out", str(train)], "not a previous pack"),
                       (["--train", str(train), "--out", str(tmp_path)], "not a previous pack"),
                       (["--train", str(train), "--out", str(a_file)], "not a folder"),
                       (["--train", str(train), "--out", str(tmp_path / "p"), "--init", str(a_file)], "--init"),
                       (["--train", str(train), "--out", str(tmp_path / "p"), "--max-mib", "0"], "--max-mib")):
        assert gpu_train_pack.main(base + argv) == 2, argv
        assert said in capsys.readouterr().err, argv
    assert (mine / "notes.txt").read_text() == "keep" and a_file.read_text() == "keep"
    assert len(list(train.iterdir())) == 2 and not (tmp_path / "p").exists()
    out = tmp_path / "pack"                                # a previous pack is replaced
    assert gpu_train_pack.main(base + ["--train", str(train), "--out", str(out)]) == 0
    (out / "train" / "stale.png").write_bytes(b"x")
    assert gpu_train_pack.main(base + ["--train", str(train), "--out", str(out)]) == 0
    assert not (out / "train" / "stale.png").exists()
    empty = tmp_path / "empty"                             # ... and an empty folder filled
    empty.mkdir()
    assert gpu_train_pack.main(base + ["--train", str(train), "--out", str(empty)]) == 0


def test_a_failed_pack_leaves_the_previous_one(tmp_path, capsys, monkeypatch):
    """The previous pack used to be deleted first: a cap nothing fits in, --max-mib inf, a pip
    failure or --init naming the pack's own init.safetensors left none (and lost that file)."""
    from tools import gpu_train_pack

    train = make_images(tmp_path / "train", n=2, size=32)
    val = make_images(tmp_path / "val", n=2, size=32, seed=1)
    init = tmp_path / "grown.safetensors"
    from fastreshuffle.io.weights import save_weights
    from fastreshuffle.nn import ReshuffleNet, ReshuffleNetConfig
    save_weights(ReshuffleNet(ReshuffleNetConfig.preset("tiny")), init)
    out = tmp_path / "gpu_data"
    base = ["--train", str(train), "--val", str(val), "--no-wheel", "--out", str(out)]
    assert gpu_train_pack.main(base + ["--init", str(init)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def failing_pip(*a, **k):
        return subprocess.CompletedProcess(a, 1)
    with_wheel = [a for a in base if a != "--no-wheel"]
    for args, said in ((base + ["--max-mib", "0.0001"], "fits in --max-mib"), (base + ["--max-mib", "inf"], "--max-mib"),
                       (with_wheel, "pip download")):
        if args is with_wheel:
            monkeypatch.setattr(gpu_train_pack.subprocess, "run", failing_pip)
        assert gpu_train_pack.main(args) == 2, args
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, args
    monkeypatch.undo()
    monkeypatch.setattr(gpu_train_pack, "CARRY_LIMIT", 1)    # a pack the device call could not carry
    monkeypatch.setattr(gpu_train_pack, "tree_bytes", lambda **k: 0)   # (a checkout without git says None)
    assert gpu_train_pack.main(base) == 2
    assert "exceed" in capsys.readouterr().err
    monkeypatch.undo()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # the previous pack's own init, named again: read before anything is replaced
    assert gpu_train_pack.main(base + ["--init", str(out / "init.safetensors")]) == 0
    assert (out / "init.safetensors").read_bytes() == init.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".gpu_data")] == []


def test_tree_bytes_counts_what_travels(tmp_path):
    """The working tree a device call carries: tracked and untracked files, not ignored ones."""
    from tools import gpu_train_pack
    assert gpu_train_pack.tree_bytes(tmp_path) is None                    # not a git checkout
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/gpu_data/\n")
    (tmp_path / "a.txt").write_bytes(b"x" * 100)
    (tmp_path / "gpu_data").mkdir()
    (tmp_path / "gpu_data" / "big.bin").write_bytes(b"y" * 5000)
    assert gpu_train_pack.tree_bytes(tmp_path) == 100 + len("/gpu_data/\n")
    # a pack made in a folder git does not ignore is left out where named (it is counted apart)
    (tmp_path / "pack" / "sub").mkdir(parents=True)
    (tmp_path / "pack" / "sub" / "c.bin").write_bytes(b"z" * 700)
    assert gpu_train_pack.tree_bytes(tmp_path) == 800 + len("/gpu_data/\n")
    assert gpu_train_pack.tree_bytes(tmp_path, exclude=[tmp_path / "pack"]) == 100 + len("/gpu_data/\n")


def test_a_pack_inside_the_tree_is_counted_once(tmp_path, capsys, monkeypatch):
    """--out in a folder git does not ignore: the pack (and the folder it is made in beside
    --out) is part of the tree too, and was counted twice against the device call's limit."""
    from tools import gpu_train_pack
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "code.py").write_bytes(b"x" * 1000)
    train = make_images(tmp_path / "train", n=2, size=32)
    val = make_images(tmp_path / "val", n=2, size=32, seed=1)
    real = gpu_train_pack.tree_bytes
    monkeypatch.setattr(gpu_train_pack, "tree_bytes", lambda **k: real(repo, **k))
    argv = ["--train", str(train), "--val", str(val), "--no-wheel", "--out", str(repo / "pack")]
    assert gpu_train_pack.main(argv) == 0
    total = sum(p.stat().st_size for p in (repo / "pack").rglob("*") if p.is_file())
    assert f"with the working tree {(1000 + total) / 2 ** 20:.1f} MiB" in capsys.readouterr().out
    monkeypatch.setattr(gpu_train_pack, "CARRY_LIMIT", 1000 + total)    # exactly fits: made again
    assert gpu_train_pack.main(argv) == 0, capsys.readouterr().err
    monkeypatch.setattr(gpu_train_pack, "CARRY_LIMIT", 1000 + total - 1)
    assert gpu_train_pack.main(argv) == 2 and "exceed" in capsys.readouterr().err
