"""Two CPU processes (torchrun, gloo) follow the same loss curve as one process with the same global batch."""
import csv
import os
import subprocess
import sys

import pytest
import torch

from helpers import make_images

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def _run(args, nproc, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastreshuffle.cli"] + args
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "fastreshuffle.cli"] + args
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def _losses(run):
    with open(run / "log.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def test_two_processes_match_one(tmp_path):
    data = make_images(tmp_path / "imgs")
    common = ["train", "--data", str(data), "--val", "none", "--preset", "tiny", "--batch-size", "4",
              "--patch", "32", "--quality", "5-30", "--steps", "8", "--log-every", "1", "--workers", "0",
              "--no-progress", "--threads", "1", "--no-zero-tail", "--device", "cpu",
              # fp32: the same arithmetic split over two processes (in bf16 the per-process weight
              # gradients are rounded to bf16 before the all-reduce, and after 8 Adam steps a few
              # near-zero weights differ by more than these tolerances, while the losses still agree)
              "--precision", "fp32"]
    _run(common + ["--out", str(tmp_path / "one")], 1, tmp_path)
    _run(common + ["--out", str(tmp_path / "two")], 2, tmp_path)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, two)
    from safetensors.torch import load_file
    wa = load_file(str(tmp_path / "one" / "last.safetensors"))
    wb = load_file(str(tmp_path / "two" / "last.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-5)


_LEAVE = """
import atexit, sys
from fastreshuffle.training import dist
atexit.register(lambda: print("teardown", flush=True))
print("written", end="")
sys.stderr.write("said")
dist.Dist.joined = {joined}
dist.leave(3)
"""


@pytest.mark.parametrize("joined", [True, False])
def test_leave_skips_teardown_only_after_joining_a_group(joined):
    # a process that joined a group ends without the interpreter's teardown (where gloo's threads
    # can abort it, see dist.leave), with its exit status and its buffered output kept
    p = subprocess.run([sys.executable, "-c", _LEAVE.format(joined=joined)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 3, p.stderr
    assert p.stdout == ("written" if joined else "writtenteardown\n")
    assert p.stderr == "said"


def test_console_ends_through_leave_once_training_was_imported(monkeypatch, capsys):
    from fastreshuffle import cli
    from fastreshuffle.training import dist
    seen = []

    def fake_leave(code):
        seen.append(code)
        raise SystemExit(code)
    monkeypatch.setattr(dist, "leave", fake_leave)
    monkeypatch.setattr(sys, "argv", ["fastreshuffle"])     # no command: help, status 2
    with pytest.raises(SystemExit) as e:
        cli.console()
    assert e.value.code == 2 and seen == [2]
