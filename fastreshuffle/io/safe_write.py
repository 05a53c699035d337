"""Atomic, no-clobber file writes.

Every output file is written to a hidden temporary file in the destination folder, flushed
and ``fsync``-ed, then moved into place in one step.  If anything goes wrong -- an exception,
a full disk, ``KeyboardInterrupt`` -- the temporary file is removed and the destination is
left exactly as it was (absent, or the previous file).
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

from ..errors import OutputExistsError

PathLike = Union[str, os.PathLike]

TEMP_PREFIX = ".fastreshuffle-"
TEMP_SUFFIX = ".part"




def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not possible on every platform/filesystem.
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _short(name: str, limit: int = 120) -> str:
    """``name`` cut to at most ``limit`` bytes (a character split at the cut dropped), so that the
    temporary file's name -- prefix, name, random part, suffix -- stays under the usual 255-byte
    limit for any output name that is itself legal."""
    b = os.fsencode(name)
    return name if len(b) <= limit else b[:limit].decode("utf-8", "ignore")


# O_EXCL: a new file or an error, never someone else's file
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _temp_names(folder: Path, stem: str, tries: int = 100) -> Iterator[Path]:
    """Fresh random names for a temporary file in ``folder``.  The caller holds the name before
    it creates the file (``os.open`` with ``_TEMP_FLAGS``), so an interrupt at any point after
    leaves nothing behind: ``tempfile.mkstemp`` tells the name only once the file exists."""
    for _ in range(tries):
        yield folder / f"{TEMP_PREFIX}{_short(stem)}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _refuse_special(path: Path) -> None:
    """Raise OSError if ``path`` is a device, a pipe or a socket: such an entry is never replaced
    by a file (``--overwrite`` once made ``/dev/null`` a regular file, as root).  A regular file,
    a link (replaced itself, not its target) or nothing there passes."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        raise OSError(errno.EINVAL, "is not a regular file (a device, pipe or socket): not replaced; "
                                    "name a file", str(path))


@contextlib.contextmanager
def atomic_open(path: PathLike, *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Open a binary file for writing that appears at ``path`` only if the block succeeds.

    With ``overwrite=False`` an existing ``path`` raises :class:`OutputExistsError`, both
    before writing and at the final step (the file is linked into place with ``os.link``,
    which refuses to replace anything, so a file created meanwhile is not clobbered either).
    Missing folders are created.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _refuse_special(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    tmp: Optional[Path] = None
    try:  # from before the temporary file exists: its name is known when it is made
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            for tmp in _temp_names(folder, path.name):
                try:
                    fd = os.open(tmp, _TEMP_FLAGS, 0o600)
                    break
                except FileExistsError:
                    tmp = None      # not ours
        except OSError as e:   # name the output, not the temporary file's made-up name
            if os.path.lexists(folder) and not os.path.isdir(folder):   # (mkdir: "File exists")
                what = ("a link to a missing folder or a loop of links" if os.path.islink(folder)
                        and not os.path.exists(folder) else "a file has its name")
                raise OSError(errno.ENOTDIR, f"its folder {folder} is not a folder ({what})", str(path)) from None
            raise OSError(e.errno, f"{e.strerror} (cannot write in {folder})", str(path)) from None
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            # created 0600; give the result the usual permissions (umask applied).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        except OSError:
            pass
        if overwrite:
            _refuse_special(path)    # (made meanwhile)
            try:
                os.replace(tmp, path)
            except OSError as e:   # e.g. the output path is a folder: name it, not the temporary file
                raise OSError(e.errno, e.strerror, str(path)) from None
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExistsError(path) from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                # Filesystem without hard links: check-then-rename (small race window).
                if os.path.lexists(path):
                    raise OutputExistsError(path) from None
                os.replace(tmp, path)
        _fsync_dir(folder)
    finally:  # also runs on KeyboardInterrupt / SystemExit -- and finishes through a second one
        pending = None      # (Ctrl-C pressed twice, SIGTERM then SIGINT: raised inside the removal,
        while tmp is not None:   # it left the temporary file behind; a helper's probe, 3 runs in 6)
            try:
                _remove_quietly(tmp)
                tmp = None
            except BaseException as e:   # (KeyboardInterrupt / SystemExit from a signal handler)
                pending = e
        if pending is not None:
            raise pending


def check_writable(folder: PathLike) -> None:
    """Raise OSError naming ``folder`` unless a file can be created in it (created and removed:
    permissions, read-only mounts and immutable folders all show), so that a batch learns it
    before spending time on the first image."""
    folder = Path(folder)
    probe: Optional[Path] = None
    try:
        for probe in _temp_names(folder, "probe"):
            try:
                os.close(os.open(probe, _TEMP_FLAGS, 0o600))
                break
            except FileExistsError:
                probe = None
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror} (cannot write in this folder)", str(folder)) from None
    finally:
        if probe is not None:
            _remove_quietly(probe)


def check_output_file(path: PathLike, *, overwrite: bool = False) -> None:
    """Before any work, refuse an output file that could not be written at the end: a folder
    (IsADirectoryError), an existing entry -- a link too, dangling or not -- without
    ``overwrite`` (:class:`OutputExistsError`), a file where one of its folders should be
    (NotADirectoryError), or a folder it cannot be created in (OSError naming it).  Nothing is
    created: missing folders are made when the file is written (:func:`atomic_open`), so a run
    that fails before then leaves none behind."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; name a file", str(path))
    _refuse_special(path)
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(path)
    _check_can_make(path.parent)      # the output's folder, or the one its missing folders would be made in


def check_output_folder(path: PathLike) -> None:
    """Before any work, refuse a folder to write into that could not be made or written: a file
    there or where one of its folders should be (NotADirectoryError), or a folder it cannot be
    created or written in (OSError naming it).  Nothing is created."""
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    _check_can_make(path)             # the folder, or the one its missing folders would be made in


def _check_can_make(folder: PathLike) -> None:
    """``folder``, or the nearest of its parents that exists (its missing folders would be made
    in it), is a folder this process can write in; else NotADirectoryError / OSError naming it."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    check_writable(folder)


def atomic_write_bytes(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, overwrite=overwrite) as f:
        f.write(data)
    return Path(path)


def atomic_write_with(path: PathLike, writer: Callable[[BinaryIO], None], *, overwrite: bool = False) -> Path:
    """Call ``writer(file_object)`` and publish the result at ``path`` atomically."""
    with atomic_open(path, overwrite=overwrite) as f:
        writer(f)
    return Path(path)


def save_image_atomic(image, path: PathLike, *, overwrite: bool = False, format: Optional[str] = None,
                      **save_kwargs) -> Path:
    """Save a PIL image (or a uint8 numpy array) to ``path`` atomically (PNG by default)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    path = Path(path)
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                     ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    return atomic_write_with(path, lambda f: image.save(f, format=fmt, **save_kwargs), overwrite=overwrite)


def is_temp_name(path: PathLike) -> bool:
    """Whether ``path`` is named as this module's temporary files are."""
    name = os.path.basename(os.fspath(path))
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def leftover_temp_files(folder: PathLike, recursive: bool = True):
    """Temporary files of ours in ``folder`` (and its sub-folders with ``recursive``): another run's
    still being written, or one a killed run (SIGKILL, a power cut) could not remove."""
    folder = Path(folder)
    found = folder.rglob(TEMP_PREFIX + "*") if recursive else folder.glob(TEMP_PREFIX + "*")
    try:
        return sorted(p for p in found if is_temp_name(p))
    except OSError:
        return []
