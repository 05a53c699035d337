"""``fastreshuffle restore`` on a generated corpus of awkward and broken inputs.

Every case checks: the documented exit code, a one-line message naming the bad file and the
problem, good files still restored, no temporary/partial output left behind, inputs
byte-identical afterwards (sha256).  The cases are counted in docs/restore.md.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
from fastreshuffle.cli import main as cli_main
from fastreshuffle.io.safe_write import leftover_temp_files
from fastreshuffle.io.weights import save_weights


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval(), path, dtype=torch.float16)
    return path


def _img(h=24, w=32, c=3, seed=0):
    shape = (h, w, c) if c else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A valid-looking 8-bit RGB PNG header claiming width x height pixels, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _sha(folder: Path):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# name -> (file name, bytes factory, expected outcome: "ok" or a fragment of the error message)
CASES = {
    "zero_byte": ("empty.jpg", lambda: b"", "empty file"),
    "truncated_jpeg": ("trunc.jpg", lambda: _jpeg_bytes(Image.fromarray(_img(64, 64)))[:300], "truncated"),
    # damaged in the middle (bit rot, a bad copy): its decoding error was once swallowed as a broken
    # EXIF and the file "restored" mostly black with exit 0
    # cut with an end-of-image marker put back, and a tiny file whose header claims 16000 x 16000:
    # libjpeg filled what was missing with grey (the second after 3.7 GB and minutes), restored, exit 0
    "jpeg_cut_with_eoi": ("cut.jpg", lambda: _cut_in_scan(_jpeg_bytes(Image.fromarray(_img(64, 64)))) + b"\xff\xd9",
                          "truncated image file: its compressed data ends early"),
    "jpeg_header_claims_more": ("claims.jpg", lambda: _claims_more(_jpeg_bytes(Image.fromarray(_img(16, 16)))),
                                "truncated image file: its compressed data ends early"),
    "png_damaged_mid": ("rot.png", lambda: _damaged_middle(_png_bytes(Image.fromarray(_img(200, 200)))),
                        "cannot decode image"),
    "random_bytes": ("noise.png", lambda: np.random.default_rng(1).bytes(4096), "not a recognised image"),
    "wrong_extension": ("actually_png.jpg", lambda: _png_bytes(Image.fromarray(_img())), "ok"),
    "one_pixel": ("one.png", lambda: _png_bytes(Image.fromarray(_img(1, 1))), "ok"),
    "png_16bit": ("deep.png", lambda: _png_bytes(_sixteen_bit()), "ok"),
    "cmyk_jpeg": ("cmyk.jpg", lambda: _jpeg_bytes(Image.fromarray(_img()).convert("CMYK")), "ok"),
    "palette": ("pal.png", lambda: _png_bytes(Image.fromarray(_img()).convert("P")), "ok"),
    "palette_transparent": ("palt.png", lambda: _png_bytes(_palette_with_transparency()), "ok"),
    "la": ("la.png", lambda: _png_bytes(Image.fromarray(_img(c=2), "LA")), "ok"),
    "decompression_bomb": ("bomb.png", bomb_png, "decompression bomb"),
    "html_named_webp": ("page.webp", lambda: b"<html><body>not an image</body></html>", "not a recognised image"),
}


def _cut_in_scan(jpeg: bytes) -> bytes:
    start = jpeg.index(b"\xff\xda")
    return jpeg[:(start + len(jpeg)) // 2]


def _claims_more(jpeg: bytes, side=16000) -> bytes:
    d = bytearray(jpeg)
    i = d.find(b"\xff\xc0")
    d[i + 5:i + 9] = struct.pack(">HH", side, side)
    return bytes(d)


def _damaged_middle(data: bytes) -> bytes:
    d = bytearray(data)
    d[len(d) // 2:len(d) // 2 + 10] = bytes(10)
    return bytes(d)


def _sixteen_bit():
    im = Image.fromarray(np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)
    assert im.mode.startswith("I;16")
    return im


def _palette_with_transparency():
    im = Image.fromarray(_img()).convert("P")
    im.info["transparency"] = 0
    return im


def _good_files(folder: Path):
    Image.fromarray(_img(seed=10)).save(folder / "good1.png")
    Image.fromarray(_img(seed=11)).save(folder / "good2.jpg", quality=20)


@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus_case(case, tmp_path, weights, capsys):
    name, make, expect = CASES[case]
    src = tmp_path / "in"
    src.mkdir()
    _good_files(src)
    (src / name).write_bytes(make())
    before = _sha(src)
    out = tmp_path / "out"
    rc = cli_main(["restore", "--quiet", str(src), "-o", str(out), "--model", str(weights)])
    err = capsys.readouterr().err
    assert _sha(src) == before  # inputs untouched
    assert (out / "good1_restored.png").is_file() and (out / "good2_restored.png").is_file()
    assert not leftover_temp_files(out) and not leftover_temp_files(src)
    stem = Path(name).stem
    if expect == "ok":
        assert rc == 0, err
        res = Image.open(out / f"{stem}_restored.png")
        res.load()
        assert res.size == Image.open(src / name).size
    else:
        assert rc == 1
        lines = [ln for ln in err.splitlines() if name in ln]
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ") and expect in lines[0], lines[0]
        assert not (out / f"{stem}_restored.png").exists()


def test_transparency_and_gray_kept(tmp_path, weights):
    (tmp_path / "la.png").write_bytes(CASES["la"][1]())
    (tmp_path / "palt.png").write_bytes(CASES["palette_transparent"][1]())
    (tmp_path / "deep.png").write_bytes(CASES["png_16bit"][1]())
    assert cli_main(["restore", "-q", str(tmp_path), "--model", str(weights)]) == 0
    assert Image.open(tmp_path / "la_restored.png").mode == "LA"
    assert Image.open(tmp_path / "palt_restored.png").mode == "RGBA"
    assert Image.open(tmp_path / "deep_restored.png").mode == "I;16"  # 16-bit grey stays 16-bit (#16)


def test_mixed_folder(tmp_path, weights, capsys):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    bad = ["zero_byte", "truncated_jpeg", "random_bytes", "decompression_bomb"]
    good = ["wrong_extension", "one_pixel", "cmyk_jpeg", "palette"]
    for i, case in enumerate(bad + good):
        name, make, _ = CASES[case]
        (src / ("nested" if i % 2 else ".") / name).write_bytes(make())
    (src / "notes.txt").write_text("not an image, not picked up from a folder")
    before = _sha(src)
    out = tmp_path / "out"
    rc = cli_main(["restore", "-q", "-r", str(src), "-o", str(out), "--model", str(weights)])
    err = capsys.readouterr().err
    assert rc == 1
    assert _sha(src) == before
    assert sum(ln.startswith("error: ") for ln in err.splitlines()) == len(bad)
    assert len(list(out.rglob("*_restored.png"))) == len(good)
    # the 1x1 image is written as it is (under 8 px): not counted as restored; so is the CMYK JPEG
    # (its tables cannot be used, and no JPEG is found in its RGB pixels: as restore() does with
    # this weights file of no codec, guard.route)
    assert "2 restored, 2 passed through, 0 skipped, 4 failed" in err
    assert not leftover_temp_files(out)


def test_missing_input_path(tmp_path, weights, capsys):
    _good_files(tmp_path)
    rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), str(tmp_path / "nope.png"),
                   "--model", str(weights)])
    assert rc == 1
    assert "nope.png: no such file or folder" in capsys.readouterr().err
    assert (tmp_path / "good1_restored.png").is_file()


def test_output_parent_is_a_file(tmp_path, weights, capsys):
    """Root ignores chmod, so 'unwritable' is an output folder whose parent is a regular file."""
    _good_files(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    before = _sha(tmp_path)
    rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(blocker / "out"),
                   "--model", str(weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "cannot create output folder" in err[0] and "blocker" in err[0]
    assert _sha(tmp_path) == before


def test_output_dir_is_a_file(tmp_path, weights, capsys):
    _good_files(tmp_path)
    (tmp_path / "afile").write_text("x")
    rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(tmp_path / "afile"),
                   "--model", str(weights)])
    assert rc == 2
    assert "not a folder" in capsys.readouterr().err
    # an existing image file named by -o is the output file of the one input: kept unless --overwrite
    before = (tmp_path / "good2.jpg").read_bytes()
    assert cli_main(["restore", str(tmp_path / "good1.png"), "-o", str(tmp_path / "good2.jpg"),
                     "--model", str(weights)]) == 0
    assert "output exists" in capsys.readouterr().err and (tmp_path / "good2.jpg").read_bytes() == before


def test_o_through_a_file_or_empty_is_refused_before_any_work(tmp_path, weights, capsys):
    """``-o afile/x.png`` (a file where a folder should be) failed per file with "File exists:
    afile"; ``-o ''`` (an unset shell variable) wrote next to the input as if -o were not given."""
    _good_files(tmp_path)
    (tmp_path / "afile").write_text("x")
    before = _sha(tmp_path)
    for o, said in ((tmp_path / "afile" / "x.png", "cannot write -o"), (tmp_path / "afile" / "sub" / "x.png", "cannot write -o"),
                    (str(tmp_path / "afile" / "sub") + "/", "cannot create output folder")):
        rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(o), "--model", str(weights)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, (o, err)
        assert said in err[0] and "afile is a file, not a folder" in err[0], err
    for empty in ("", " "):
        assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", empty, "--model", str(weights)]) == 2
        assert "is empty" in capsys.readouterr().err
    assert _sha(tmp_path) == before


def test_a_dash_is_not_standard_input_or_output(tmp_path, weights, capsys, monkeypatch):
    """``-o -`` made a folder named "-" and wrote into it, exit 0 (a Unix user expects stdout);
    an input "-" said "no such file or folder" (a helper's probe): both say what is not supported.
    A real folder named "-" is still one."""
    _good_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["restore", "-q", "good1.png", "-o", "-", "--model", str(weights)]) == 2
    assert "writing to standard output is not supported" in capsys.readouterr().err
    assert not os.path.exists("-")
    assert cli_main(["restore", "-q", "-", "--model", str(weights)]) == 2
    assert "reading an image from standard input ('-') is not supported" in capsys.readouterr().err
    os.mkdir("-")
    assert cli_main(["restore", "-q", "good1.png", "-o", "-", "--model", str(weights)]) == 0
    assert os.listdir("-") == ["good1_restored.png"]


def test_o_names_the_output_file_of_one_input(tmp_path, weights, capsys):
    """``restore photo.jpg -o out.png`` made a folder named out.png (then it was refused): it now
    writes that file, in the format its extension names."""
    _good_files(tmp_path)
    src = tmp_path / "good1.png"
    assert cli_main(["restore", "-q", str(src), "-o", str(tmp_path / "sub" / "clean.jpg"),
                     "--model", str(weights)]) == 0
    assert Image.open(tmp_path / "sub" / "clean.jpg").format == "JPEG"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["clean.jpg"]
    for more, said in (([str(tmp_path / "good2.jpg"), "-o", str(tmp_path / "x.png")], "give one input file"),
                       (["-o", str(tmp_path / "x.bmp")], "writes .png, .jpg, .webp or .tif"),
                       # (Pillow's and other programs' picture names had made a folder named x.ico)
                       (["-o", str(tmp_path / "x.ico")], "writes .png, .jpg, .webp or .tif"),
                       (["-o", str(tmp_path / "x.JXL")], "writes .png, .jpg, .webp or .tif"),
                       ([str(tmp_path / "good2.jpg"), "-o", str(tmp_path / "x.psd")], "give one input file"),
                       (["-o", str(tmp_path / "x.png"), "--format", "jpeg"], "disagree"),
                       (["-o", str(tmp_path / "x.png"), "--output-quality", "80"], "not PNG")):
        assert cli_main(["restore", "-q", str(src)] + more + ["--model", str(weights)]) == 2, more
        assert said in capsys.readouterr().err, more
    assert not any((tmp_path / n).exists() for n in ("x.png", "x.bmp", "x.ico", "x.JXL", "x.psd"))
    (tmp_path / "folder.png").mkdir()       # an existing folder of that name is a folder
    assert cli_main(["restore", "-q", str(src), "-o", str(tmp_path / "folder.png"),
                     "--model", str(weights)]) == 0
    assert (tmp_path / "folder.png" / "good1_restored.png").is_file()


def test_format_same_and_o_agree_when_same_is_that_format(tmp_path, weights, capsys):
    """``--format same -o out.jpg`` on a JPEG was refused as "disagree", though same is JPEG there;
    on a PNG it is a disagreement still."""
    _good_files(tmp_path)
    jpg, png = tmp_path / "good2.jpg", tmp_path / "good1.png"
    assert cli_main(["restore", "-q", str(jpg), "--format", "same", "-o", str(tmp_path / "same.jpg"),
                     "--model", str(weights)]) == 0
    assert Image.open(tmp_path / "same.jpg").format == "JPEG"
    assert cli_main(["restore", "-q", str(png), "--format", "same", "-o", str(tmp_path / "x.jpg"),
                     "--model", str(weights)]) == 2
    assert "disagree" in capsys.readouterr().err and not (tmp_path / "x.jpg").exists()


def test_format_same_keeps_a_float_colour_tiff_a_tiff(tmp_path, weights, capsys):
    """A float colour TIFF (read through tifffile: Pillow cannot open it) restored with --format
    same was written as PNG, "this format is not written"."""
    tifffile = pytest.importorskip("tifffile")
    a = (np.random.default_rng(0).random((40, 48, 3)) * 0.8 + 0.1).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", a)
    assert cli_main(["restore", "-q", str(tmp_path / "f.tif"), "--format", "same", "-o", str(tmp_path / "out"),
                     "--model", str(weights)]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["f_restored.tif"]
    assert "not written" not in capsys.readouterr().err


def test_write_error_per_file(tmp_path, weights, capsys, monkeypatch):
    """An unwritable destination for one file (injected EACCES at write time): reported, rest done."""
    _run_with_failing_save(tmp_path, weights, capsys, monkeypatch, errno.EACCES, "Permission denied")


def test_disk_full(tmp_path, weights, capsys, monkeypatch):
    """ENOSPC in the middle of writing the 2nd output: partial temp removed, others written."""
    _run_with_failing_save(tmp_path, weights, capsys, monkeypatch, errno.ENOSPC, "No space left on device")


def _run_with_failing_save(tmp_path, weights, capsys, monkeypatch, code, text):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_img(seed=i)).save(src / f"f{i}.png")
    before = _sha(src)
    real_save = Image.Image.save
    calls = {"n": 0}

    def flaky_save(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            fp.write(b"\x89PNG partial data")  # something lands in the temp file first
            raise OSError(code, os.strerror(code))
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    out = tmp_path / "out"
    rc = cli_main(["restore", "-q", str(src), "-o", str(out), "--model", str(weights)])
    err = capsys.readouterr().err
    assert rc == 1
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "f1.png" in line[0] and text in line[0]
    assert sorted(p.name for p in out.iterdir()) == ["f0_restored.png", "f2_restored.png"]
    assert not leftover_temp_files(out)
    assert _sha(src) == before


def _interrupt():
    raise KeyboardInterrupt


def _sigterm():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)                      # the handler raises here, at once
    raise AssertionError("SIGTERM was not turned into an interrupt")


@pytest.mark.parametrize("stop,code,said", [(_interrupt, 130, "interrupted"),
                                            (_sigterm, 128 + signal.SIGTERM, "terminated (SIGTERM)")])
def test_interrupt_during_write_in_process(tmp_path, weights, capsys, monkeypatch, stop, code, said):
    """Ctrl-C, or SIGTERM (timeout, docker stop, systemd), while a file is being written: exit
    130 / 143, temp removed, earlier output kept, the old SIGTERM handler back afterwards."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_img(seed=i)).save(src / f"f{i}.png")
    real_save = Image.Image.save
    calls = {"n": 0}

    def interrupted_save(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            fp.write(b"partial")
            stop()
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    rc = cli_main(["restore", "-q", str(src), "-o", str(out), "--model", str(weights)])
    assert rc == code
    assert said in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["f0_restored.png"]
    assert not leftover_temp_files(out)
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_killed_runs_temporary_file_is_named(tmp_path, weights, capsys):
    """A run killed by SIGKILL cannot remove its temporary file: the next run into the folder
    restores the files and names the file it finds (it never removes it: another run may be
    writing it), and says nothing where there is none."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_img()).save(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".fastreshuffle-a_restored.png.1a2b3c.part"
    stale.write_bytes(b"half an image")
    assert cli_main(["restore", str(src), "-o", str(out), "--model", str(weights)]) == 0
    err = capsys.readouterr().err
    assert f"1 temporary file(s) of an interrupted or killed earlier run (or of another run writing there now) " \
           f"in the output folder(s): {stale}" in err, err
    assert stale.exists() and (out / "a_restored.png").is_file()
    stale.unlink()
    assert cli_main(["restore", str(src), "-o", str(out), "--model", str(weights), "--overwrite"]) == 0
    assert "temporary file" not in capsys.readouterr().err


def test_unreadable_folders_are_named_not_skipped(tmp_path, weights, capsys, monkeypatch):
    """A folder that cannot be listed (given, or met with -r) is one error line and exit 1, the
    readable files still restored -- not a traceback, not silently left out."""
    good = tmp_path / "good.png"
    Image.fromarray(_img()).save(good)
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    Image.fromarray(_img(seed=1)).save(tree / "a.png")
    Image.fromarray(_img(seed=2)).save(tree / "locked" / "b.png")
    locked = {str(tree / "locked"), str(tmp_path / "shut")}
    (tmp_path / "shut").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):            # permissions do not bind root: refuse these two by name
        if os.fspath(path) in locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: (scandir(self), real_iterdir(self))[1])
    out = tmp_path / "out"
    rc = cli_main(["restore", str(good), str(tmp_path / "shut"), str(tree), "-r", "-o", str(out),
                   "--model", str(weights)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"error: {tree / 'locked'}: cannot read the folder: Permission denied" in err
    assert f"error: {tmp_path / 'shut'}: cannot read the folder" in err
    assert "2 restored" in err and "2 input path(s) not read" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_restored.png", "good_restored.png"]


def test_long_but_legal_output_names_are_written(tmp_path, weights):
    """An output name near the 255-byte limit is written: the temporary name is cut, not the output."""
    stem = "z" * 226
    Image.fromarray(_img()).save(tmp_path / f"{stem}.png")
    assert cli_main(["restore", "-q", str(tmp_path / f"{stem}.png"), "--model", str(weights)]) == 0
    assert (tmp_path / f"{stem}_restored.png").is_file()
    assert not leftover_temp_files(tmp_path)


def test_output_that_is_a_folder_is_named_as_such(tmp_path, weights, capsys):
    Image.fromarray(_img()).save(tmp_path / "a.png")
    (tmp_path / "a_restored.png").mkdir()
    assert cli_main(["restore", str(tmp_path / "a.png"), "--model", str(weights), "--overwrite"]) == 1   # no output: an error
    err = capsys.readouterr().err
    assert "is a folder" in err and "use --overwrite" not in err and (tmp_path / "a_restored.png").is_dir()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run(tmp_path, weights, sig):
    """A real SIGINT / SIGTERM to a running ``fastreshuffle restore`` after its first output appears."""
    src = tmp_path / "in"
    src.mkdir()
    n = 8
    for i in range(n):
        Image.fromarray(_img(384, 512, seed=i)).save(src / f"img{i}.png")
    before = _sha(src)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --tile 0: one forward pass per file (~0.1-0.3 s each on one thread)
    p = subprocess.Popen([sys.executable, "-m", "fastreshuffle.cli", "restore", str(src), "-o", str(out),
                          "--model", str(weights), "--tile", "0", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                         # a suite started in the background (`cmd &`) ignores SIGINT, and a child
                         # inherits that: it then finished every file and the test skipped
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 90
        while time.time() < deadline and p.poll() is None:
            if out.is_dir() and any(out.glob("*_restored.png")):
                break
            time.sleep(0.02)
        assert p.poll() is None, "finished before it could be interrupted"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    done = sorted(out.glob("*_restored.png"))
    if p.returncode == 0:  # pragma: no cover - the machine was too fast
        pytest.skip("all files finished before the signal arrived")
    assert p.returncode == 128 + sig, err
    assert ("interrupted" if sig == signal.SIGINT else "terminated (SIGTERM)") in err and "Traceback" not in err
    assert 1 <= len(done) < n
    for f in done:  # every output that exists is complete
        Image.open(f).load()
    assert not leftover_temp_files(out)
    assert _sha(src) == before


def test_corrupt_weights_file_is_a_usage_error(tmp_path, weights, capsys):
    _good_files(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(weights.read_bytes()[:200])
    rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), "--model", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.safetensors" in err[0]
    assert not (tmp_path / "good1_restored.png").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_not_waited_on(tmp_path, weights, capsys):
    """Opening a FIFO blocks until a writer comes: it used to hang restore for ever."""
    import threading
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    rc = []
    t = threading.Thread(target=lambda: rc.append(cli_main(["restore", "-q", str(fifo), "--model", str(weights)])),
                         daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():                       # unblock the reader so the thread can end
        with open(fifo, "wb"):
            pass
        pytest.fail("restore waited on a named pipe")
    assert rc == [1]
    assert "not a regular file" in capsys.readouterr().err
    # with -o FILE the one input was said not to be one ("-o names a file: give one input file")
    assert cli_main(["restore", "-q", str(fifo), "-o", str(tmp_path / "x.png"), "--model", str(weights)]) == 2
    assert "pipe.jpg: not a regular file (a pipe, socket or device)" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_messages_that_cannot_be_written_do_not_stop_the_batch(tmp_path, weights):
    """stderr into a full disk (/dev/full; a pager quit or `| head` is a broken pipe, the same
    path): the first note raised out of the run, one of the files was restored and the exit was 1
    with the traceback lost.  Now the messages are lost, and the work and the exit code are not."""
    _good_files(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "fastreshuffle.cli", "restore", str(tmp_path), "-o",
                            str(tmp_path / "out"), "--model", str(weights), "--overwrite"],
                           stdout=full, stderr=full, env=env, cwd=tmp_path, timeout=300)
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert r.returncode == 0 and made == ["good1_restored.png", "good2_restored.png"], (r.returncode, made)


@pytest.mark.parametrize("closed", ["stderr", "stdout"])
def test_a_closed_stream_loses_messages_not_work(tmp_path, weights, closed):
    """`2>&-` / `>&-`: Python has sys.stderr / sys.stdout None, which the best-effort wrapper
    wrapped: the first message raised AttributeError, restore wrote nothing and exited 1."""
    _good_files(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = ("import sys; from fastreshuffle.cli import main; "
            f"sys.exit(main(['restore', {str(tmp_path)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', "
            f"{str(weights)!r}]))")
    fd = 2 if closed == "stderr" else 1
    r = subprocess.run(["bash", "-c", f'"$0" -c "$1" {fd}>&-', sys.executable, code], env=env, cwd=tmp_path,
                       timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # (then one closed)
    made = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert r.returncode == 0 and made == ["good1_restored.png", "good2_restored.png"], (r.returncode, made)


def test_control_characters_in_names_are_shown_escaped(tmp_path, weights, capsys):
    """A name with a terminal escape (set the window title, clear the screen) reached the
    terminal raw: only line breaks were escaped."""
    from fastreshuffle.cli._common import printable
    assert printable("a\x1b]0;pwned\x07\x1b[2Jb\tc\nd\udcff é 😀\u200d") == \
        "a\\x1b]0;pwned\\x07\\x1b[2Jb\\tc\\nd\\xff é 😀\u200d"
    assert printable("photo\u202egpj.exe") == "photo\\u202egpj.exe"      # shown as "photoexe.jpg" otherwise
    assert printable("a\u200bb\u2028c\u00add") == "a\\u200bb\\u2028c\\xadd"   # invisible, a line break
    bad = tmp_path / "x\x1b[2Jy.png"
    bad.write_bytes(b"not an image")
    assert cli_main(["restore", "-q", str(bad), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "x\\x1b[2Jy.png" in err, err


def test_a_file_replaced_while_restored_is_not_copied_as_it(tmp_path, weights, capsys, monkeypatch):
    """--format same copies a file whose pixels stay as they are (a JPEG q98 here) byte for byte:
    the copy read the path a second time, so a file replaced in between (a sync tool, an editor
    saving over it) was written as the output with the notes of the one decoded."""
    import shutil

    import fastreshuffle.io.images as images
    src, other = tmp_path / "photo.jpg", tmp_path / "other.jpg"
    Image.fromarray(_img(64, 64, seed=1)).save(src, quality=98)
    Image.fromarray(_img(64, 64, seed=2)).save(other, quality=98)
    load = images.load_image_file

    def load_then_replace(path, *a, **k):
        f = load(path, *a, **k)
        if Path(path) == src:
            shutil.copy(other, tmp_path / "new.jpg")
            os.replace(tmp_path / "new.jpg", src)        # someone saves over it
        return f
    out = tmp_path / "out"
    assert cli_main(["restore", str(src), "--format", "same", "-o", str(out), "--model", str(weights)]) == 0
    assert (out / "photo_restored.jpg").read_bytes() == src.read_bytes()     # unchanged: copied
    capsys.readouterr()
    monkeypatch.setattr(images, "load_image_file", load_then_replace)
    rc = cli_main(["restore", str(src), "--format", "same", "-o", str(out), "--model", str(weights), "--overwrite",
                   "--suffix", "_2"])
    err = capsys.readouterr().err
    assert rc == 1 and "the file changed while it was being read and restored" in err, err
    assert not (out / "photo_2.jpg").exists() and not leftover_temp_files(out)


def test_an_output_written_meanwhile_by_another_run_is_a_skip(tmp_path, weights, capsys, monkeypatch):
    """Two runs into one folder: the output the other run wrote first was a failure ("output
    exists", no path) and both runs exited 1, where an output there at the start is a skip."""
    import fastreshuffle.io.images as images
    _good_files(tmp_path)
    out = tmp_path / "out"
    load = images.load_image_file

    def load_while_another_run_writes(path, *a, **k):
        f = load(path, *a, **k)
        out.mkdir(exist_ok=True)
        (out / (Path(path).stem + "_restored.png")).write_bytes(b"the other run's")
        return f
    monkeypatch.setattr(images, "load_image_file", load_while_another_run_writes)
    assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(out), "--model", str(weights)]) == 0
    err = capsys.readouterr().err
    assert f"output exists: {out / 'good1_restored.png'} (written while this one was restored" not in err  # -q
    assert "skipped: 1 file(s) whose output exists" in err, err
    assert (out / "good1_restored.png").read_bytes() == b"the other run's" and not leftover_temp_files(out)


def test_a_write_error_names_the_output_not_the_temporary_file(tmp_path, weights, capsys, monkeypatch):
    """Out of inodes (the final link fails) named the temporary .part file, gone by then."""
    import errno as errno_
    _good_files(tmp_path)
    out = tmp_path / "out"

    def no_inodes(a, b, *args, **kw):
        raise OSError(errno_.ENOSPC, "No space left on device", str(a))
    monkeypatch.setattr(os, "link", no_inodes)
    assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(out), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert f"No space left on device: {out / 'good1_restored.png'}" in err and ".part" not in err, err
    assert not leftover_temp_files(out)


def test_an_overlap_that_leaves_seams_is_noted(tmp_path, weights, capsys):
    """--overlap 0 / 8 were taken without a word, and left seams up to 25 / 7 levels."""
    _good_files(tmp_path)
    for extra, noted in ((["--overlap", "8"], True), (["--overlap", "64"], False), ([], False),
                         (["--overlap", "8", "--tile", "0"], False)):
        assert cli_main(["restore", str(tmp_path / "good1.png"), "--model", str(weights), "--overwrite", *extra]) == 0
        assert ("note: --overlap 8 is under the default 64: the seams between tiles can show"
                in capsys.readouterr().err) == noted, extra


def test_an_output_folder_replaced_by_a_file_mid_run_is_said_so(tmp_path, weights, capsys, monkeypatch):
    """It was "File exists (cannot write in out)"."""
    import shutil

    import fastreshuffle.io.images as images
    _good_files(tmp_path)
    out = tmp_path / "out"
    load = images.load_image_file

    def load_then_replace_folder(path, *a, **k):
        f = load(path, *a, **k)
        if Path(path).name == "good2.jpg":
            shutil.rmtree(out)
            out.write_bytes(b"a file now")
        return f
    monkeypatch.setattr(images, "load_image_file", load_then_replace_folder)
    assert cli_main(["restore", "-q", str(tmp_path), "-o", str(out), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert f"its folder {out} is not a folder (a file has its name)" in err, err
    assert out.read_bytes() == b"a file now"


def test_a_run_that_fails_leaves_no_folder_behind(tmp_path, weights, capsys):
    """From a CLI probe (session 52): -o a/b/x.png or -o a/b/ for an input that fails made a/b
    (the output folder was made before any image work); it is made with its first file now.  And
    -o naming a dangling link said "a file has its name"."""
    bad = tmp_path / "zero.jpg"
    bad.write_bytes(b"")
    for out in (str(tmp_path / "n1" / "a" / "x.png"), str(tmp_path / "n2" / "a") + "/"):
        assert cli_main(["restore", "-q", str(bad), "-o", out, "--model", str(weights)]) == 1
        assert "empty file" in capsys.readouterr().err
    assert not (tmp_path / "n1").exists() and not (tmp_path / "n2").exists()
    _good_files(tmp_path)
    assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(tmp_path / "n3" / "a") + "/",
                     "--model", str(weights)]) == 0
    assert (tmp_path / "n3" / "a" / "good1_restored.png").is_file()     # made when written
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "-o", str(tmp_path / "dangling") + "/",
                     "--model", str(weights)]) == 1
    assert "is not a folder (a link to a missing folder or a loop of links)" in capsys.readouterr().err


def test_absurd_thread_counts_are_refused(tmp_path, weights, capsys, monkeypatch):
    """--threads 100000 crashed (a segfault in torch's thread pool), 30000 gave libgomp's message."""
    _good_files(tmp_path)
    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)    # (were it reached, no crash here)
    assert cli_main(["restore", "-q", str(tmp_path / "good1.png"), "--model", str(weights), "--threads", "100000"]) == 2
    assert "--threads 100000: at most " in capsys.readouterr().err and asked == []


def test_read_only_output_folder_is_named_before_any_image_work(tmp_path, weights, capsys, monkeypatch):
    """A folder no file can be created in (read-only mount, immutable: injected, root ignores
    chmod) is found before the network runs, and the error names it, not a temporary file."""
    from fastreshuffle.inference import files
    _good_files(tmp_path)
    out = tmp_path / "ro"
    out.mkdir()
    real = os.open

    def os_open(path, flags, *a, **kw):     # no file can be created in ``out``
        if Path(path).parent == out and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", os_open)
    ran = []
    monkeypatch.setattr(files, "restore_file", lambda *a, **k: ran.append(a))
    rc = cli_main(["restore", "-q", str(tmp_path / "good1.png"), str(tmp_path / "good2.jpg"), "-o", str(out),
                   "--model", str(weights)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and not ran
    assert len(err) == 2 and all("Read-only file system" in ln and str(out) in ln and ".part" not in ln for ln in err)


def test_a_failed_input_does_not_keep_its_output_name(tmp_path, weights, capsys):
    """x.jpg (corrupt) and x.png share the output name x_restored.png: the failed one wrote
    nothing, so x.png takes the name instead of being skipped for a file that never came."""
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg at all")
    Image.fromarray(_img()).save(tmp_path / "x.png")
    assert cli_main(["restore", str(tmp_path / "x.jpg"), str(tmp_path / "x.png"), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "is also the output of" not in err
    assert (tmp_path / "x_restored.png").is_file()


def test_an_ignored_sighup_stays_ignored(monkeypatch):
    """Under nohup SIGHUP starts ignored: a command must not start catching it (a closed terminal
    would stop a training run); SIGTERM is still caught, and both are as before afterwards."""
    from fastreshuffle.cli._common import signals_as_interrupts
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        term = signal.getsignal(signal.SIGTERM)
        with signals_as_interrupts():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (term, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGHUP, old_hup)


def test_a_signal_inside_a_del_is_raised_on_leaving_not_lost(capsys, monkeypatch):
    """From a CLI probe (session 52): SIGTERM just after restore's last line landed in a progress
    bar's __del__: "Exception ignored in: <function tqdm.__del__>" and a traceback, then exit 0
    (the signal lost).  It is raised as the command leaves now; and Ctrl-C before a command's own
    handling (while Python imports it) says "interrupted", exit 130, instead of a traceback."""
    import os

    from fastreshuffle import cli
    from fastreshuffle.cli._common import Terminated, signals_as_interrupts

    class Dying:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            self.after = True      # (the handler runs here, in __del__)

    reached = []
    with pytest.raises(Terminated):
        with signals_as_interrupts():
            d = Dying()
            del d
            reached.append(True)
    assert reached == [True] and "Exception ignored" not in capsys.readouterr().err
    # a long command is not held to its end (a review: a data loader's __del__ at each epoch):
    # the signal is sent again once the __del__ is over
    import time
    t0 = time.monotonic()
    with pytest.raises(Terminated):
        with signals_as_interrupts():
            d = Dying()
            del d
            for _ in range(300):
                time.sleep(0.01)
            reached.append(True)
    assert reached == [True] and time.monotonic() - t0 < 2.0

    def interrupted_early():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "main", interrupted_early)
    with pytest.raises(SystemExit) as e:
        cli.console()
    assert e.value.code == 130 and capsys.readouterr().err == "fastreshuffle: interrupted\n"


def test_a_damaged_exif_is_said_once_with_the_file_name(tmp_path, weights, capsys):
    """From a CLI probe (session 52): a JPEG whose EXIF is cut short printed Pillow's
    "UserWarning: Corrupt EXIF data ..." twice, with library paths and no file name."""
    import struct
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 2) + b"\x12\x01\x03\x00\x01\x00\x00\x00"
    Image.fromarray(_img()).save(tmp_path / "x.jpg", quality=30, exif=exif)
    assert cli_main(["restore", str(tmp_path / "x.jpg"), "--model", str(weights)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "EXIF" in line]
    assert len(said) == 1 and "x.jpg: its EXIF is damaged (Corrupt EXIF data." in said[0], err
    assert "UserWarning" not in err and "TiffImagePlugin" not in err


def test_an_exif_tag_claiming_more_data_than_the_file_is_the_damaged_exif_note(tmp_path, weights, capsys):
    """From a review: an EXIF tag whose count claims 2 GB (the file: 1 kB) printed Pillow's raw
    "UserWarning: Tag data larger than file. Skipping tag 270" twice, even with -q; it is the
    damaged-EXIF note, once, with the file's name (and nothing with -q)."""
    import struct
    exif = (b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x010E, 2, 0x7FFFFFFF, 100)
            + struct.pack("<I", 0))
    Image.fromarray(_img()).save(tmp_path / "x.jpg", quality=30, exif=exif)
    assert cli_main(["restore", str(tmp_path / "x.jpg"), "--model", str(weights)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "EXIF" in line or "Tag data" in line]
    assert said == [f"note: {tmp_path / 'x.jpg'}: its EXIF is damaged (Tag data larger than file. Skipping tag 270): "
                    "read as far as it goes"], err
    assert "UserWarning" not in err and "TiffImagePlugin" not in err
    assert cli_main(["restore", "-q", "--overwrite", str(tmp_path / "x.jpg"), "--model", str(weights)]) == 0
    assert capsys.readouterr().err == ""


def test_a_line_break_in_a_file_name_keeps_one_line_per_message(tmp_path, weights, capsys):
    bad = tmp_path / "bad\nname.jpg"
    bad.write_bytes(b"not an image")
    assert cli_main(["restore", str(bad), "--model", str(weights)]) == 1
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "bad\\nname.jpg" in errors[0] and not any(line.startswith("name.jpg") for line in lines)


def test_a_bomb_between_pillows_two_limits_is_one_line(tmp_path, weights, capsys):
    """400 Mpixel: above the command's limit (16k x 16k), which is Pillow's warning limit while it
    runs.  The loader refuses it in one line; the format sniffing used to let Pillow's
    DecompressionBombWarning out as well."""
    import warnings
    (tmp_path / "big.png").write_bytes(bomb_png(20_000, 20_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli_main(["restore", "--quiet", str(tmp_path / "big.png"), "-o", str(tmp_path / "out"),
                       "--model", str(weights)])
    err = capsys.readouterr().err
    assert rc == 1 and "Warning" not in err, err
    lines = [ln for ln in err.splitlines() if "big.png" in ln]
    assert len(lines) == 1 and "decompression bomb refused" in lines[0], err
    # the limit in force (Pillow quoted twice it), no advice the command line cannot follow
    assert "the header claims 400,000,000 pixels, over the limit of 268,435,456 pixels" in lines[0], err
    assert "MAX_IMAGE_PIXELS" not in lines[0]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    from fastreshuffle.errors import ImageReadError
    from fastreshuffle.io.images import load_image_file
    with pytest.raises(ImageReadError, match=r"over the limit of 89,478,485 pixels; a real photo this large: raise "
                                             r"PIL.Image.MAX_IMAGE_PIXELS"):   # the library: Pillow's limit
        load_image_file(tmp_path / "big.png")


def test_a_file_named_twice_is_restored_once(tmp_path, capsys):
    """the same file given twice (or by two spellings) is one input: restored once, and its
    second mention is not reported as a skipped file whose output name collides with its own."""
    import os

    from fastreshuffle.cli import main
    src = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(src, quality=30)
    alias = os.path.join(str(tmp_path), ".", "a.jpg")
    assert main(["restore", str(src), alias, "--device", "cpu", "--no-guard"]) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "skipped:" not in text and "0 skipped" in text and (tmp_path / "a_restored.png").is_file()


def test_tile_bar_says_what_follows_the_network(capsys, monkeypatch):
    """A large image's bar reached 100 % at 11 s of a 26 s run (the guard's projection and the
    encoding come after the network): at full it says so instead of looking stuck.  Into a log
    (stderr not a terminal) there is no bar: its escapes garbled redirected output."""
    import sys

    from fastreshuffle.cli.restore import _TileBar
    with _TileBar("log.jpg", quiet=False) as bar:
        bar.update(4_000_000, 24_000_000)
        assert bar.bar is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with _TileBar("big.jpg", quiet=False) as bar:
        bar.update(4_000_000, 24_000_000)
        assert bar.bar.desc == "big.jpg"
        bar.update(24_000_000, 24_000_000)
        assert bar.bar.desc == "big.jpg: network done; guard and writing"
    with _TileBar("one.jpg", quiet=False) as bar:   # one tile: no bar of its own
        bar.update(10, 10)
        assert bar.bar is None


def test_a_100_megapixel_photo_is_not_taken_for_a_bomb_by_the_command(tmp_path, weights, capsys):
    """Pillow's own limit (~89 Mpixel) refused 100- and 200-Mpixel camera photos as "decompression
    bombs"; the commands decode up to 16k x 16k, and put Pillow's limit back after.  (A 100-Mpixel
    header with no pixel data behind it: the command gets as far as decoding it.)"""
    from PIL import Image as PILImage

    from fastreshuffle.errors import ImageReadError
    from fastreshuffle.io.images import read_image
    before = PILImage.MAX_IMAGE_PIXELS
    big = tmp_path / "gfx100.png"
    big.write_bytes(bomb_png(10_000, 10_000))
    assert cli_main(["restore", "-q", str(big), "-o", str(tmp_path / "out"), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "gfx100.png" in err and "decompression bomb" not in err and "truncated" in err, err
    assert PILImage.MAX_IMAGE_PIXELS == before
    with pytest.raises(ImageReadError, match="raise PIL.Image.MAX_IMAGE_PIXELS"):    # the library: the program's limit
        read_image(big)


def test_o_file_with_one_folder_input_is_refused(tmp_path, weights, capsys):
    """-o FILE names the output of one input *file*: a folder (of one image, or of several) is refused."""
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "a.png")
    assert cli_main(["restore", "-q", str(d), "-o", str(tmp_path / "x.png"), "--model", str(weights)]) == 2
    assert "give one input file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_o_that_is_only_an_extension_is_refused(tmp_path, weights, capsys):
    """``-o .png`` (a name that is only an extension; Python sees no suffix in it) once made a
    folder ``.png`` and wrote into it: refused, nothing created; an existing folder of that name
    is still a folder."""
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src)
    for name in (".png", ".JPG", "sub/.webp"):
        assert cli_main(["restore", "-q", str(src), "-o", str(tmp_path / name), "--model", str(weights)]) == 2
        assert f"e.g. -o photo{Path(name).name}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    (tmp_path / ".png").mkdir()
    assert cli_main(["restore", "-q", str(src), "-o", str(tmp_path / ".png"), "--model", str(weights)]) == 0
    assert [p.name for p in (tmp_path / ".png").iterdir()] == ["a_restored.png"]


def test_o_ending_in_a_slash_is_a_folder(tmp_path, weights):
    """``-o clean.png/``: the trailing slash says folder (it once wrote a file ``clean.png``)."""
    src = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src)
    for name in ("clean.png", ".webp"):
        assert cli_main(["restore", "-q", str(src), "-o", str(tmp_path / name) + os.sep, "--model", str(weights)]) == 0
        assert (tmp_path / name).is_dir() and (tmp_path / name / "a_restored.png").is_file()


def test_an_output_that_is_a_folder_fails_and_quiet_reruns_count_the_skipped(tmp_path, weights, capsys):
    """An input whose output path is a folder gets no output: an error line and exit 1 (it was a
    'skipped' line and exit 0, also with --overwrite).  A batch run again with -q ("errors only")
    counts the files whose outputs are already there in one line (one line each, before)."""
    for name in ("a", "b"):
        Image.fromarray(_img(32, 32, seed=len(name))).save(tmp_path / f"{name}.png")
    (tmp_path / "b_restored.png").mkdir()
    for extra in ([], ["--overwrite"]):
        assert cli_main(["restore", "-q", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(weights),
                         *extra]) == 1
        err = capsys.readouterr().err
        assert "error:" in err and "b_restored.png is a folder" in err, err
    (tmp_path / "b_restored.png").rmdir()
    assert cli_main(["restore", "-q", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(weights)]) == 0
    assert (tmp_path / "b_restored.png").is_file() and "1 file(s) whose output exists" in capsys.readouterr().err
    assert cli_main(["restore", "-q", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(weights)]) == 0
    assert capsys.readouterr().err == "skipped: 2 file(s) whose output exists (use --overwrite; " \
                                      "listed without -q)\n"
    assert cli_main(["restore", str(tmp_path / "a.png"), "--model", str(weights)]) == 0
    assert "skipped: " in capsys.readouterr().err                  # without -q they are listed


def test_links_to_folders_are_said_and_links_to_nothing_are_errors(tmp_path, weights, capsys):
    """Links to folders are not followed (loops, files twice), with or without -r: said in a note
    (without -r they were counted among the folders "-r" would search, and -r then dropped them
    without a word); a link named as an image whose target is gone is an error line, not silence."""
    top = tmp_path / "top"
    (top / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(_img(32, 32)).save(top / "real" / "a.png")
    Image.fromarray(_img(32, 32, seed=3)).save(tmp_path / "elsewhere" / "b.png")
    (top / "linked").symlink_to(tmp_path / "elsewhere")
    (top / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert cli_main(["restore", str(top), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "note: 1 sub-folder(s) not searched" in err and "note: 1 link(s) to folders not followed" in err, err
    assert f"error: {top / 'gone.jpg'}: a link to nothing" in err
    assert cli_main(["restore", "-r", str(top), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "not searched" not in err and "note: 1 link(s) to folders not followed" in err and "a link to nothing" in err
    assert (top / "real" / "a_restored.png").is_file() and not (tmp_path / "elsewhere" / "b_restored.png").exists()


def test_a_link_loop_is_named_as_one_and_each_error_is_said_once(tmp_path, weights, capsys):
    """A link that points to itself (or round a loop) was reported as "does not exist" when found
    in a folder and as "no such file or folder" when named; a broken link both named and found in
    a named folder gave its error line twice."""
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    (tmp_path / "c.jpg").symlink_to("d.jpg")
    (tmp_path / "d.jpg").symlink_to("c.jpg")
    (tmp_path / "b.jpg").symlink_to("gone.jpg")
    assert cli_main(["restore", str(tmp_path / "self.jpg"), str(tmp_path / "b.jpg"), str(tmp_path),
                     "--model", str(weights)]) == 1
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == len(set(errors)) == 4, lines
    assert f"error: {tmp_path / 'self.jpg'}: a link that loops (it points to self.jpg, which leads back to it)" in errors
    assert f"error: {tmp_path / 'c.jpg'}: a link that loops (it points to d.jpg, which leads back to it)" in errors
    assert f"error: {tmp_path / 'b.jpg'}: a link to nothing (its target gone.jpg does not exist)" in errors


def test_a_truncated_heif_file_is_one_clean_error_line(tmp_path, weights, capsys):
    """libheif's messages end with a line break, which came out as a literal '\\n' at the end of
    the error line."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.fromarray(_img(64, 64)).save(buf, format="HEIF", quality=50)
    (tmp_path / "cut.heic").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    assert cli_main(["restore", str(tmp_path / "cut.heic"), "--model", str(weights)]) == 1
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:"))
    assert "cannot decode image" in line and not line.endswith("\\n") and line == line.strip(), line


def test_a_tile_small_beside_its_context_is_said(tmp_path, weights, capsys):
    """--tile 8 ran each 8-px tile with 64 px of context on every side, ~289x the work, with no
    word (a helper's probe); such settings are said, the default ones not."""
    _good_files(tmp_path)
    assert cli_main(["restore", str(tmp_path / "good1.png"), "--tile", "16", "--model", str(weights)]) == 0
    assert "warning: --tile 16 with --overlap 64: each tile runs on 144 px squares, 81x the work" in \
        capsys.readouterr().err
    assert cli_main(["restore", str(tmp_path / "good1.png"), "--overwrite", "--model", str(weights)]) == 0
    assert "the work of its own pixels" not in capsys.readouterr().err


def test_a_tile_whose_context_is_many_times_its_work_is_warned_of_even_quiet(tmp_path, weights, capsys):
    """From a review: --tile 8 --overlap 512 ran each 8-px tile on 1032-px squares, 16641x the work,
    which looked like a hang; its note was left out with -q.  Over 16x: a warning, -q or not,
    suggesting a larger tile; 4-16x: the note, which -q leaves out."""
    _good_files(tmp_path)
    args = ["restore", str(tmp_path / "good1.png"), "--overwrite", "--model", str(weights), "-q"]
    assert cli_main(args + ["--tile", "8", "--overlap", "512"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: --tile 8 with --overlap 512: each tile runs on 1032 px squares, 16641x the work of its "
                   "own pixels (very slow); a larger --tile, e.g. --tile 2048, takes 2.2x"], err
    assert cli_main(args + ["--tile", "64"]) == 0                       # 9x: the note, left out with -q
    assert capsys.readouterr().err == ""


def test_ctrl_c_in_the_exit_after_the_work_ends_quietly_with_its_code():
    """A Ctrl-C in the second after train's ``done:`` line (torch's exit handlers running) printed
    a KeyboardInterrupt traceback: the work is done, so the process ends at once with its code."""
    script = ("import atexit, os, signal, time\n"
              "import fastreshuffle.cli as cli\n"
              "cli.main = lambda: 3\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))\n"
              "cli.console()\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (3, "") and time.monotonic() - t0 < 60
    # a program that calls console() and goes on keeps its Ctrl-C (a review: it had been replaced)
    # (its handler as it was: Python's, or SIG_IGN where the test runs in a background job, as in CI)
    script = ("import signal\n"
              "import fastreshuffle.cli as cli\n"
              "before = signal.getsignal(signal.SIGINT)\n"
              "cli.main = lambda: 3\n"
              "try:\n    cli.console()\nexcept SystemExit:\n    pass\n"
              "assert signal.getsignal(signal.SIGINT) is before\n"
              "print('kept')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "kept"), r.stderr
