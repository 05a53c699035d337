"""io.safe_write: an interrupt at any point of an atomic write leaves no temporary file behind."""
import os
import stat

import pytest

from fastreshuffle.errors import OutputExistsError
from fastreshuffle.io.safe_write import (TEMP_PREFIX, atomic_open, atomic_write_bytes, check_output_folder,
                                         check_writable, leftover_temp_files)


def _interrupt_once_created(monkeypatch):
    """os.open that creates the temporary file, then is interrupted (Ctrl-C) before returning."""
    real = os.open

    def os_open(path, flags, *a, **kw):
        fd = real(path, flags, *a, **kw)
        if os.path.basename(os.fspath(path)).startswith(TEMP_PREFIX):
            os.close(fd)
            raise KeyboardInterrupt
        return fd
    monkeypatch.setattr(os, "open", os_open)


def test_interrupt_as_the_temporary_file_is_made(tmp_path, monkeypatch):
    _interrupt_once_created(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "out.png", b"data")
    with pytest.raises(KeyboardInterrupt):
        check_writable(tmp_path)
    assert not leftover_temp_files(tmp_path) and not list(tmp_path.iterdir())


def test_write_and_no_clobber(tmp_path):
    out = atomic_write_bytes(tmp_path / "sub" / "out.bin", b"one")
    assert out.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        atomic_write_bytes(out, b"two")
    atomic_write_bytes(out, b"two", overwrite=True)
    umask = os.umask(0)
    os.umask(umask)
    assert out.read_bytes() == b"two" and out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp's 0600
    check_writable(tmp_path)
    assert not leftover_temp_files(tmp_path)


def test_atomic_open_never_clobbers_a_file_created_while_writing(tmp_path):
    """the no-clobber promise holds at the final step too (os.link refuses what os.replace
    would silently replace): a file that appears at the output path while ours is being written
    is kept, and ours is dropped."""
    out = tmp_path / "out.png"
    with pytest.raises(OutputExistsError):
        with atomic_open(out) as f:
            f.write(b"ours")
            out.write_bytes(b"someone else's")          # created meanwhile (another process)
    assert out.read_bytes() == b"someone else's"
    assert leftover_temp_files(tmp_path) == []


def test_outputs_get_the_usual_permissions(tmp_path):
    """an output is created as a temporary file (mode 0600) and published with the mode any new
    file gets (0666 less the umask), so that others can read what they could read of any file."""
    import os
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "o.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "o.bin").stat().st_mode & 0o777 == 0o644


def test_a_device_or_pipe_is_never_replaced(tmp_path):
    """``--overwrite`` replaced ``eval --json /dev/null``'s target, as root, with a regular file."""
    import stat

    from fastreshuffle.io.safe_write import atomic_write_bytes, check_output_file
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    entries = [fifo]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        dev = tmp_path / "null.json"
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        entries.append(dev)
    for p in entries:
        before = os.lstat(p).st_mode
        with pytest.raises(OSError, match="not a regular file"):
            check_output_file(p, overwrite=True)
        with pytest.raises(OSError, match="not a regular file"):
            atomic_write_bytes(p, b"{}", overwrite=True)
        assert os.lstat(p).st_mode == before
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(p.name for p in entries)   # no temporary left


def test_a_pipe_is_refused_as_such_without_overwrite_too(tmp_path):
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_pipe_made_while_writing_is_not_replaced(tmp_path):
    out = tmp_path / "o.png"
    with pytest.raises(OSError, match="not a regular file"):
        with atomic_open(out, overwrite=True) as f:
            f.write(b"ours")
            os.mkfifo(out)                       # made meanwhile
    assert stat.S_ISFIFO(os.lstat(out).st_mode) and not leftover_temp_files(tmp_path)


def test_a_folder_is_named_as_a_folder_not_as_a_device(tmp_path):
    d = tmp_path / "d.png"
    d.mkdir()
    with pytest.raises(OSError) as e:
        atomic_write_bytes(d, b"x", overwrite=True)
    assert "not a regular file" not in str(e.value) and e.value.filename == str(d)
    assert d.is_dir() and not leftover_temp_files(tmp_path)


def test_check_output_folder(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        check_output_folder(f)
    with pytest.raises(NotADirectoryError):
        check_output_folder(f / "sub" / "run")
    check_output_folder(tmp_path / "new" / "run")       # made later: its first existing folder is writable
    assert not (tmp_path / "new").exists()


def test_a_second_interrupt_during_the_cleanup_still_removes_the_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C pressed twice (or SIGTERM, then SIGINT): the second interrupt, raised inside the
    removal of the temporary file, left it behind (a helper's probe: 3 runs in 6) while the command
    said "no partial output left behind"."""
    from fastreshuffle.io import safe_write
    real = safe_write._remove_quietly
    calls = []

    def interrupted_once(path):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt      # the second signal, before the file is removed
        real(path)
    monkeypatch.setattr(safe_write, "_remove_quietly", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "out.png") as f:
            f.write(b"half")
            raise KeyboardInterrupt      # the first signal, while writing
    assert len(calls) == 2 and not leftover_temp_files(tmp_path) and not list(tmp_path.iterdir())
