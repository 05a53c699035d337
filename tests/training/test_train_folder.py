"""The run folder and what a resume checks, from an adversarial test of ``train`` (each test
written against what the code did before): two runs on one --out, folders that cannot be made
or written, a damaged log, changed photos under the same names, and errors found before the data
is read leave no folder behind."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import make_images
from PIL import Image

from fastreshuffle.cli import main

COMMON = ["--preset", "tiny", "--batch-size", "4", "--patch", "32", "--quality", "5-30", "--val-every", "3",
          "--log-every", "1", "--no-progress", "--threads", "1", "--val-images", "2", "--steps", "6",
          "--workers", "0"]


def _args(data, out, *more, val=None):
    return ["train", "--data", str(data), "--val", str(val or data), "--out", str(out)] + COMMON + list(more)


def _one_line_error(err):
    return "Traceback" not in err and [ln for ln in err.splitlines() if "error:" in ln]


def test_a_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    from fastreshuffle.training.loop import LOCK_FILE, _lock_run, _unlock
    data = make_images(tmp_path / "imgs", n=3)
    out = tmp_path / "run"
    out.mkdir()
    held = _lock_run(out)              # a run in progress there
    try:
        assert main(_args(data, out)) == 2
        err = capsys.readouterr().err
        assert "in use by another training run" in err and _one_line_error(err)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        _unlock(out, held)
    assert main(_args(data, out)) == 0                 # free again: runs, and leaves no lock behind
    assert not (out / LOCK_FILE).exists() and (out / "best.safetensors").is_file()


def test_an_out_that_cannot_be_made_or_written_is_one_line(tmp_path, capsys, monkeypatch):
    data = make_images(tmp_path / "imgs", n=3)
    (tmp_path / "afile").write_text("x")
    assert main(_args(data, tmp_path / "afile" / "run")) == 2
    err = capsys.readouterr().err
    assert "--out" in err and _one_line_error(err)
    assert main(_args(data, tmp_path / "r", "--encode", "whole", "--coded-cache", str(tmp_path / "afile" / "c"))) == 2
    err = capsys.readouterr().err
    assert "--coded-cache" in err and _one_line_error(err) and not (tmp_path / "r").exists()
    # a resume into a folder it cannot write: said before training (root writes anywhere: simulated)
    out = tmp_path / "ro"
    assert main(_args(data, out, "--stop-at", "2")) == 0
    from fastreshuffle.io import safe_write

    def refuse(folder):
        raise PermissionError(13, "Permission denied (cannot write in this folder)", str(folder))
    monkeypatch.setattr(safe_write, "check_writable", refuse)
    assert main(_args(data, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "resuming" not in err and _one_line_error(err)
    assert main(_args(data, tmp_path / "x", "--encode", "whole", "--versions", "0")) == 2
    assert main(["train", "--data", str(data), "--val", "none", "--out", ""] + COMMON) == 2
    assert "--out is empty" in capsys.readouterr().err


def test_errors_found_before_the_data_is_read_leave_no_folder(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3)
    for more in (["--init", str(tmp_path / "nope.safetensors")], ["--init", str(data / os.listdir(data)[0])],
                 ["--codec", "webp", "--mix", "444=0.5"]):
        out = tmp_path / "never"
        assert main(_args(data, out, *more)) == 2, more
        err = capsys.readouterr().err
        assert _one_line_error(err) and "train data" not in err, (more, err)   # before the images were read
        assert not out.exists(), more


def test_a_damaged_log_does_not_stop_a_resume(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3)
    out = tmp_path / "run"
    assert main(_args(data, out, "--stop-at", "3")) == 0
    with open(out / "log.csv", "ab") as f:
        f.write(b"\0" * 300 + b"abc,1\n")       # what a crash can leave; a row that is not a step
    capsys.readouterr()
    assert main(_args(data, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert "damaged row(s)" in err and "Traceback" not in err
    with open(out / "log.csv") as f:
        steps = [ln.split(",")[0] for ln in f.read().splitlines()[1:]]
    assert steps[:3] == ["1", "2", "3"] and "\0" not in "".join(steps)


def test_resume_sees_the_photos_not_only_their_names(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=4)
    val = make_images(tmp_path / "val", n=2, seed=5)
    out = tmp_path / "run"
    assert main(_args(data, out, "--stop-at", "3", val=val)) == 0
    # the same folder spelled otherwise: nothing to say
    assert main(_args(str(data) + os.sep, out, "--resume", "--stop-at", "4", val=val)) == 0
    assert "--data was" not in capsys.readouterr().err
    name = sorted(os.listdir(data))[0]
    a = np.asarray(Image.open(data / name))
    Image.fromarray(np.ascontiguousarray(a[:, ::-1])).save(data / name)
    assert main(_args(data, out, "--resume", "--stop-at", "5", val=val)) == 0
    assert "the same names, other pixels" in capsys.readouterr().err
    vname = sorted(os.listdir(val))[0]
    v = np.asarray(Image.open(val / vname))
    Image.fromarray(np.ascontiguousarray(v[::-1])).save(val / vname)
    assert main(_args(data, out, "--resume", val=val)) == 2
    err = capsys.readouterr().err
    assert "validation images changed" in err and _one_line_error(err)


def test_config_given_a_file_name_says_it_takes_json(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3)
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"growth": [16, 8, 4], "layers": [2, 3, 2]}')
    assert main(_args(data, tmp_path / "r", "--config", str(cfg))) == 2
    assert "takes the architecture as JSON text" in capsys.readouterr().err


def test_coding_workers_leave_interrupts_to_the_command():
    """(the handlers set first: a test run in the background inherits SIGINT ignored, and the
    old test then passed whatever _pool_worker_init did)"""
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "signal.signal(signal.SIGTERM, lambda *a: None); "
            "from fastreshuffle.training.data import _pool_worker_init; _pool_worker_init(); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_data_workers_leave_interrupts_to_the_command():
    """A DataLoader worker ignores Ctrl-C (the terminal sends it to the whole group: a second one
    in the worker's cleanup printed tracebacks, and torch raised "DataLoader worker ... exited
    unexpectedly"), and a pipe broken as the command ends is not printed from it."""
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from fastreshuffle.training.data import worker_init; worker_init(0); "
            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN); "
            "sys.excepthook(BrokenPipeError, BrokenPipeError(32, 'Broken pipe'), None); "
            "sys.excepthook(ValueError, ValueError('kept'), None)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True"], r.stderr
    assert "kept" in r.stderr and "Broken pipe" not in r.stderr, r.stderr


def test_the_command_lets_later_interrupts_go_once_it_is_ending():
    """The first Ctrl-C / SIGTERM ends a command; those that follow while it cleans up (a data
    loader stopping its workers, a checkpoint) came out as tracebacks: they are let go now.
    Outside the command the handlers are as they were."""
    import os
    import signal

    from fastreshuffle.cli._common import Terminated, signals_as_interrupts
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for first, kind in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
            cleaned = []
            with pytest.raises(KeyboardInterrupt) as e:
                with signals_as_interrupts():
                    try:
                        os.kill(os.getpid(), first)
                    finally:                       # the command's cleanup, interrupted again and again
                        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
                            os.kill(os.getpid(), sig)
                        cleaned.append(True)
            assert type(e.value) is kind and cleaned == [True]      # the first one, the cleanup whole
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)           # ignored when it starts: stays so
        with signals_as_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_train_from_python_with_a_config(tmp_path):
    """The training library takes a TrainConfig (the command's options and defaults), not the
    command's argparse namespace."""
    import argparse

    from fastreshuffle.cli import train as cli_train
    from fastreshuffle.training.config import TrainConfig
    from fastreshuffle.training.loop import train
    p = argparse.ArgumentParser()
    cli_train.add_arguments(p)
    parsed = {k: getattr(v, "value", v) for k, v in vars(p.parse_args(["--out", "x"])).items()}
    assert parsed == {**TrainConfig.defaults(), "out": "x"}    # one set of defaults
    data = make_images(tmp_path / "imgs", n=3)
    cfg = TrainConfig(out=str(tmp_path / "run"), data=str(data), val="none", preset="tiny", batch_size=4, patch=32,
                      steps=3, workers=0, threads=1, progress=False)
    assert train(cfg) == 0 and (tmp_path / "run" / "last.safetensors").is_file()


def test_validation_set_up_that_says_little_is_warned(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3)
    assert main(_args(data, tmp_path / "r", "--val-images", "5")) == 0      # --val is --data, 3 images
    err = capsys.readouterr().err
    assert "fewer than --val-images 5" in err and "--val is the training folder" in err
    assert main(_args(data, tmp_path / "r2", "--mix", "none=0.1,none=0.2")) == 2
    assert "none is given twice" in capsys.readouterr().err


def test_resume_continues_the_run_as_it_was_started(tmp_path, capsys):
    """``train --out RUN --resume`` with only some of the options took the defaults for the others
    (quality 10 for 5-30, 2000 steps for 6, ...), changing the run with two warnings; the options
    not given again are now the saved run's, and the result is the uninterrupted run's."""
    from safetensors.torch import load_file
    data = make_images(tmp_path / "imgs", n=3)
    ref, out = tmp_path / "ref", tmp_path / "run"
    more = ["--lr", "3e-3", "--seed", "5", "--rot90"]
    assert main(_args(data, ref, *more)) == 0
    assert main(_args(data, out, *more, "--stop-at", "3")) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--resume: the run's own" in err and "--lr 0.003" in err and "will differ" not in err
    a, b = load_file(str(ref / "last.safetensors")), load_file(str(out / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an option given again is that one (and said to change the run)
    assert main(_args(data, out, *more, "--steps", "8", "--resume")) == 0
    assert "steps was 6 in the saved run, now 8" in capsys.readouterr().err


def test_fine_tuning_a_shipped_model_by_name(tmp_path, capsys):
    """--init jpeg was refused ("weights file not found") where restore/eval/export take the name;
    the starting point is validated first, and the default --lr (for training from scratch) said."""
    data = make_images(tmp_path / "imgs", n=3)
    assert main(["train", "--data", str(data), "--val", str(data), "--out", str(tmp_path / "ft"), "--init", "jpeg",
                 "--preset", "small", "--steps", "2", "--batch-size", "2", "--patch", "32", "--val-every", "2",
                 "--workers", "0", "--threads", "1", "--no-progress", "--val-images", "2"]) == 0
    err = capsys.readouterr().err
    assert "validation of the --init weights before training" in err and "fine-tuning usually wants less" in err


def test_best_is_never_worse_than_the_init_weights(tmp_path, capsys):
    """With --init, the weights it starts from are validated and count as the run's first best:
    a run whose steps only validate worse (here a learning rate that wrecks the network) keeps
    them as best.safetensors, and its last line says so.  (best.safetensors used to be the best
    trained step, worse than the weights the run started from.)"""
    from safetensors.torch import load_file

    from fastreshuffle.inference.loading import load_model
    data = make_images(tmp_path / "imgs", n=3)
    out = tmp_path / "ft"
    assert main(["train", "--data", str(data), "--val", str(data), "--out", str(out), "--init", "jpeg",
                 "--preset", "small", "--steps", "2", "--batch-size", "2", "--patch", "32", "--val-every", "2",
                 "--lr", "0.02", "--warmup", "0", "--precision", "fp32", "--workers", "0", "--threads", "1", "--no-progress",
                 "--val-images", "2"]) == 0
    err = capsys.readouterr().err
    before = float(err.split("validation of the --init weights before training: ")[1].split()[0])
    after = float(err.split("step 2: val PSNR ")[1].split()[0])
    assert after < before                        # the step validated worse ...
    last = err.strip().splitlines()[-1]
    assert "the --init weights, as no trained step validated better" in last and f"{before:.3f}" in last
    best = load_file(str(out / "best.safetensors"))      # ... and the best file is the start
    init = load_model("jpeg").state_dict()
    assert best.keys() == init.keys() and all(torch.equal(best[k], init[k].float()) for k in best)
    assert not all(torch.equal(v, best[k]) for k, v in load_file(str(out / "last.safetensors")).items())
    import csv
    with open(out / "log.csv") as f:                     # the start's validation is logged too
        rows = [r for r in csv.DictReader(f) if r["val_psnr"]]
    assert [r["step"] for r in rows] == ["0", "2"] and abs(float(rows[0]["val_psnr"]) - before) < 1e-3


def test_validation_default_is_said_and_its_absence_names_val(tmp_path, capsys, monkeypatch):
    data = make_images(tmp_path / "imgs", n=3)
    monkeypatch.setenv("FASTRESHUFFLE_DATA", str(tmp_path / "nowhere"))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r")] + COMMON) == 2
    err = capsys.readouterr().err
    assert "--val FOLDER" in err and "--val split" in err and "Pass --data" not in err
    assert main(_args(data, tmp_path / "r2")) == 0
    assert "(codec " in capsys.readouterr().err.splitlines()[-1]       # the last line: best, codec, gain


def test_a_lock_file_removed_as_it_is_locked_is_taken_again(tmp_path, monkeypatch):
    """The run that held the lock ended between our open and our lock, removing the file: the
    lock on the removed file is worth nothing, so the file is opened and locked again."""
    import fcntl

    from fastreshuffle.training import loop
    real, calls = fcntl.flock, []

    def flock(fd, op):
        if not calls:
            (tmp_path / loop.LOCK_FILE).unlink()     # the run that held it ended meanwhile (and removed it)
        calls.append(op)
        return real(fd, op)
    monkeypatch.setattr(fcntl, "flock", flock)
    held = loop._lock_run(tmp_path)
    try:
        assert len(calls) == 2 and os.fstat(held.fileno()).st_ino == os.stat(tmp_path / loop.LOCK_FILE).st_ino
    finally:
        loop._unlock(tmp_path, held)


def test_bad_data_leaves_no_folder_but_keeps_one_that_was_there(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_args(empty, tmp_path / "new", val="none")) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    assert main(_args(empty, tmp_path / "mine", val="none")) == 2
    assert (tmp_path / "mine").is_dir()


def test_a_run_started_in_the_folder_meanwhile_is_not_written_over(tmp_path, capsys, monkeypatch):
    from fastreshuffle.training import loop
    data = make_images(tmp_path / "imgs", n=3)
    out = tmp_path / "run"
    real = loop._lock_run

    def lock(run_dir):
        (run_dir / "state.json").write_text("{}")     # another run wrote its first files meanwhile
        return real(run_dir)
    monkeypatch.setattr(loop, "_lock_run", lock)
    assert main(_args(data, out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "state.json").read_text() == "{}"


def test_pixel_digest_tells_shapes_apart():
    from fastreshuffle.training.loop import _files_record
    a, b = np.zeros((2, 6, 3), np.uint8), np.zeros((6, 2, 3), np.uint8)
    assert _files_record(["x"], [], [a])["train_pixels"] != _files_record(["x"], [], [b])["train_pixels"]


def test_resume_sees_a_held_out_photo_changed(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=5)
    out = tmp_path / "run"
    assert main(_args(data, out, "--stop-at", "3", val="split")) == 0
    last = sorted(os.listdir(data))[-1]                  # held out for validation
    a = np.asarray(Image.open(data / last))
    Image.fromarray(np.ascontiguousarray(a[::-1])).save(data / last)
    capsys.readouterr()
    assert main(_args(data, out, "--resume", val="split")) == 2
    assert "validation images changed" in capsys.readouterr().err


def test_versions_zero_is_refused_by_name(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=3)
    assert main(_args(data, tmp_path / "x", "--encode", "whole", "--versions", "0")) == 2
    err = capsys.readouterr().err
    assert "--versions must be at least 1" in err
    assert "train data" not in err and not (tmp_path / "x").exists()     # said before the images are read


def test_a_log_row_behind_nul_bytes_is_kept(tmp_path):
    from fastreshuffle.training.checkpoint import _read_log
    p = tmp_path / "log.csv"
    p.write_bytes(b"step,loss\n1,0.5\n\0\0\0" + b"2,0.4\n")
    rows, dropped = _read_log(p, 10)
    assert [r["step"] for r in rows] == ["1", "2"] and dropped == 0


def test_a_folder_made_but_not_writable_is_said_before_training(tmp_path, capsys, monkeypatch):
    """(a umask of 0o277, say): the made --out is checked too, and removed again."""
    from pathlib import Path

    from fastreshuffle.io import safe_write
    data = make_images(tmp_path / "imgs", n=3)
    out = tmp_path / "run"
    real = safe_write.check_writable

    def refuse(folder):
        if Path(folder).absolute() == out.absolute():
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)
    monkeypatch.setattr(safe_write, "check_writable", refuse)
    assert main(_args(data, out)) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and "train data" not in err
    assert not out.exists()


def test_shrink_is_the_mean_of_each_block():
    """data.shrink against a plain mean of n x n blocks (the last partial block: the mean of what it
    has), rounded half up."""
    from fastreshuffle.training.data import shrink
    rng = np.random.default_rng(3)
    for h, w, n in ((12, 18, 2), (13, 17, 2), (11, 10, 3), (5, 7, 4)):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = shrink(a, n)
        want = np.empty((-(-h // n), -(-w // n), 3))
        for i in range(want.shape[0]):
            for j in range(want.shape[1]):
                want[i, j] = a[i * n:(i + 1) * n, j * n:(j + 1) * n].reshape(-1, 3).mean(0)
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.abs(got - np.floor(want + 0.5)).max() == 0, (h, w, n)


def test_reduce_shrinks_training_and_validation_photos(tmp_path, capsys):
    """--reduce 2: the photos (training and validation) are shrunk before anything else (here to
    24 px, under the 32-px patch: padded, said); a resume keeps it; out of range is refused by name."""
    data = make_images(tmp_path / "imgs", n=3)           # 48 x 48
    assert main(_args(data, tmp_path / "bad", "--reduce", "0")) == 2
    err = capsys.readouterr().err
    assert "--reduce must be 1" in err and "train data" not in err and not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    assert main(_args(data, out, "--reduce", "2", "--stop-at", "3")) == 0
    err = capsys.readouterr().err
    assert "each shrunk 2x" in err and "padded 3 image(s) smaller than 32x32" in err
    assert main(["train", "--out", str(out), "--resume", "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--reduce 2" in err and "each shrunk 2x" in err and "will differ" not in err
    # the validation photos (here the first 2 of the folder) were shrunk too: their pixels' digest
    import json

    from fastreshuffle.training.data import load_folder, shrink
    from fastreshuffle.training.loop import _files_record
    imgs, names, _ = load_folder(data)
    want = _files_record([], names[:2], [], [shrink(a, 2) for a in imgs[:2]])["val_pixels"]
    assert json.loads((out / "state.json").read_text())["files"]["val_pixels"] == want
    # another --reduce on resume: refused by name (the validation photos would change)
    assert main(["train", "--out", str(out), "--resume", "--reduce", "1", "--steps", "8", "--workers", "0",
                 "--threads", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--reduce was 2 in the saved run, now 1" in err and "Traceback" not in err
    assert main(_args(data, tmp_path / "plain", "--stop-at", "1")) == 0
    assert "padded" not in capsys.readouterr().err


def test_also_shrunk_adds_the_training_photos_shrunk_but_not_the_held_out_ones(tmp_path, capsys):
    """--also-shrunk 2: the training set is the photos and each of them shrunk 2x (padded to the
    patch, said); the photos held out for validation are neither added nor shrunk; out of range
    is refused by name before the data is read."""
    import json

    from fastreshuffle.training.data import _pad_to, load_folder, shrink
    from fastreshuffle.training.loop import _files_record
    data = make_images(tmp_path / "imgs", n=5)            # 48 x 48
    for bad in ("1", "9", "-2"):
        assert main(_args(data, tmp_path / "bad", "--also-shrunk", bad)) == 2
        err = capsys.readouterr().err
        assert "--also-shrunk must be 0 (off) or 2 to 8" in err and "train data" not in err
        assert not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    args = _args(data, out, "--also-shrunk", "2", "--stop-at", "2")
    args[args.index("--val") + 1] = "split"
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "also shrunk 2x: 6 images" in err and "padded 3 photo(s) smaller than 32x32 once shrunk 2x" in err
    imgs, names, _ = load_folder(data)
    want = _files_record(names[:3] + [f"{n}@1/2" for n in names[:3]], names[3:],
                         imgs[:3] + [_pad_to(shrink(a, 2), 32, 32) for a in imgs[:3]], imgs[3:])
    got = json.loads((out / "state.json").read_text())["files"]
    assert {k: got[k] for k in want} == want
    assert main(["train", "--out", str(out), "--resume", "--workers", "0", "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "also shrunk 2x" in err and "will differ" not in err
