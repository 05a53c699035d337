"""``train`` as a probe of the command found it (each test written against what the code did
before): a run in progress judged by its files, a full disk under log.csv, --threads far too
many, --stop-at on a validation step, a relative --coded-cache, a cache entry of another shape,
a stale best.safetensors without validation, and an empty --init."""
import errno
import json
import os

import numpy as np
import torch
from helpers import make_images

from fastreshuffle.cli import main
from fastreshuffle.io.weights import read_metadata

COMMON = ["--preset", "tiny", "--batch-size", "2", "--patch", "32", "--quality", "5-30", "--val-every", "2",
          "--log-every", "1", "--no-progress", "--threads", "1", "--val-images", "2", "--steps", "4",
          "--workers", "0"]


def _args(data, out, *more, val="none"):
    return ["train", "--data", str(data), "--val", str(val), "--out", str(out)] + COMMON + list(more)


def _one_line_error(err):
    return "Traceback" not in err and [ln for ln in err.splitlines() if "error:" in ln]


def test_a_run_in_progress_is_in_use_whatever_files_it_has_written(tmp_path, capsys):
    """A second run on the --out of a live one was told "it has no training state: remove those
    files" (before the live run's first checkpoint) or "use --resume" (after it): both judged the
    live run's files as a dead run's."""
    from fastreshuffle.training.loop import _lock_run, _unlock
    data = make_images(tmp_path / "imgs", n=3, size=40)
    out = tmp_path / "run"
    out.mkdir()
    held = _lock_run(out)
    try:
        (out / "log.csv").write_text("step\n1\n")               # logged, not yet checkpointed
        for extra in ((), ("--resume",)):
            assert main(_args(data, out, *extra)) == 2
            err = capsys.readouterr().err
            assert "in use by another training run" in err and _one_line_error(err), (extra, err)
            assert "remove those files" not in err and "no training state" not in err
        (out / "state.safetensors").write_bytes(b"")             # its first checkpoint
        assert main(_args(data, out)) == 2
        err = capsys.readouterr().err
        assert "in use by another training run" in err and "use --resume" not in err, err
        assert (out / "log.csv").read_text() == "step\n1\n"      # nothing of the live run touched
    finally:
        _unlock(out, held)
    (out / "log.csv").unlink()
    (out / "state.safetensors").unlink()
    assert main(_args(data, out, "--steps", "1")) == 0            # a lock left unheld is not "in use"


def test_a_full_disk_writing_the_log_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC writing log.csv was a traceback (the checkpoint's own failure was one line)."""
    from fastreshuffle.training import checkpoint
    data = make_images(tmp_path / "imgs", n=2, size=40)
    real_write, real_row = checkpoint.atomic_write_bytes, checkpoint.CsvLog.row

    def full(path, *a, **kw):
        if path.name == "log.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, *a, **kw)
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)       # the first row, before any checkpoint
    out = tmp_path / "r"
    assert main(_args(data, out)) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err), err
    assert (f"cannot write the log of step 1 to {out / 'log.csv'}: No space left on device; no checkpoint was "
            "saved") in err, err
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)

    rows = []

    def row(self, **kw):                  # the third row (step 3), after the checkpoint of step 2
        rows.append(kw["step"])
        if len(rows) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_row(self, **kw)
    monkeypatch.setattr(checkpoint.CsvLog, "row", row)
    out = tmp_path / "r2"
    assert main(_args(data, out)) == 2
    err = capsys.readouterr().err
    assert _one_line_error(err), err
    assert (f"cannot write the log of step 3 to {out / 'log.csv'}: No space left on device; the last one saved "
            "is step 2: free space, then --resume") in err, err


def _no_crashing_threads(monkeypatch):
    """torch.set_num_threads replaced by one that raises above 1000 (the real one would crash the
    test process); -> the real one, to set the count back."""
    real = torch.set_num_threads

    def set_num_threads(n):
        if n > 1000:
            raise RuntimeError(f"torch.set_num_threads({n}) would crash")
        return real(n)
    monkeypatch.setattr(torch, "set_num_threads", set_num_threads)
    return real


def test_threads_far_too_many_are_refused_as_restore_refuses_them(tmp_path, capsys, monkeypatch):
    """--threads 100000 crashed torch's thread pool (a segfault, no message); restore refuses it."""
    real = _no_crashing_threads(monkeypatch)
    data = make_images(tmp_path / "imgs", n=2, size=40)
    try:
        assert main(_args(data, tmp_path / "r", "--threads", "100000")) == 2
    finally:
        real(1)
    err = capsys.readouterr().err
    assert "--threads 100000: at most" in err and _one_line_error(err), err
    assert not (tmp_path / "r").exists()


def test_threads_far_too_many_are_refused_by_the_library_too(tmp_path, monkeypatch):
    """``train(TrainConfig(threads=100000))`` had no bound (the command's check was its own)."""
    import pytest
    from fastreshuffle.errors import UserError
    from fastreshuffle.training.config import TrainConfig
    from fastreshuffle.training.loop import train
    real = _no_crashing_threads(monkeypatch)
    data = make_images(tmp_path / "imgs", n=2, size=40)
    try:
        with pytest.raises(UserError, match="--threads 100000: at most"):
            train(TrainConfig(out=str(tmp_path / "r"), data=str(data), val="none", threads=100000))
    finally:
        real(1)
    assert not (tmp_path / "r").exists()


def test_stop_at_on_a_validation_step_says_it_stopped(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=4, size=40)
    assert main(_args(data, tmp_path / "r", "--stop-at", "2", val="split")) == 0
    err = capsys.readouterr().err
    assert "step 2: val PSNR" in err and "stopped at step 2 (--stop-at); continue with --resume" in err, err


def test_a_relative_coded_cache_is_found_from_another_folder(tmp_path, capsys, monkeypatch):
    """--coded-cache was saved as typed: a resume from another working folder coded everything anew
    in a new cache there."""
    make_images(tmp_path / "w" / "tr", n=2, size=40)
    monkeypatch.chdir(tmp_path / "w")
    assert main(_args("tr", "run", "--encode", "whole", "--versions", "1", "--coded-cache", "cache",
                      "--stop-at", "1")) == 0
    assert "coding 2 of 2 whole-image versions" in capsys.readouterr().err
    saved = json.loads((tmp_path / "w" / "run" / "state.json").read_text())["args"]["coded_cache"]
    assert saved == str(tmp_path / "w" / "cache")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", "--out", "w/run", "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "coding" not in err and not (tmp_path / "cache").exists(), err


def test_a_coded_cache_entry_of_another_shape_is_coded_again(tmp_path):
    """A cache entry replaced by a valid array of another shape was cropped as it was: a traceback."""
    from fastreshuffle.training.data import WholeImagePairs, load_folder
    images, _, _ = load_folder(make_images(tmp_path / "imgs", n=2, size=48), min_size=32)
    images = [np.ascontiguousarray(im[:, :40]) for im in images]      # 48 x 40: a turn shows
    kw = {"patch": 32, "codec": "jpeg", "qualities": [10], "seed": 1, "versions": 4, "rot90": True}
    cache = tmp_path / "cache"
    first = WholeImagePairs(images, **kw, cache_dir=cache)
    for bad in (np.zeros((10, 10, 3), np.uint8), np.zeros((48, 40, 3), np.float32)):
        wrong = min(cache.glob("*.npy"))
        np.save(wrong, bad)
        said = []
        healed = WholeImagePairs(images, **kw, cache_dir=cache, say=said.append)
        assert any(str(wrong) in m and "coding it again" in m for m in said), said
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first.coded, healed.coded))
        for i in range(8):
            healed.sample(i)
        assert any(np.array_equal(np.load(wrong), c) for c in first.coded)     # and stored again
    said = []
    WholeImagePairs(images, **kw, cache_dir=cache, say=said.append)   # turned versions: their own shape
    assert not any("coding" in m for m in said), said


def test_without_validation_best_is_every_checkpoint(tmp_path, capsys):
    """--val none: the validation steps saved best.safetensors, a --stop-at (or budget, or Ctrl-C)
    checkpoint only last.safetensors, while the last line named best as the weights."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "r"
    assert main(_args(data, out, "--stop-at", "3")) == 0
    err = capsys.readouterr().err
    assert f"weights in {out / 'best.safetensors'}" in err, err
    assert read_metadata(out / "best.safetensors")["step"] == read_metadata(out / "last.safetensors")["step"] == "3"


def test_an_empty_init_is_refused(tmp_path, capsys):
    """--init '' was taken as no --init: trained from scratch without a word."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(_args(data, tmp_path / "r", "--init", "")) == 2
    err = capsys.readouterr().err
    assert "--init is empty" in err and _one_line_error(err), err
    assert not (tmp_path / "r").exists()
