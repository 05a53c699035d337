"""io.safe_write: an interrupt at any point of an atomic write leaves no temporary file behind."""
import os

import pytest

from fastreshuffle.io.safe_write import TEMP_PREFIX, atomic_write_bytes, check_writable, leftover_temp_files


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
