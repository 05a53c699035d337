"""Restoring image files: which files a list of inputs names, where each output goes, and
one file restored (read once, restored tile by tile, written atomically, never clobbering).

The ``restore`` command (:mod:`fastreshuffle.cli.restore`) drives these over a batch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

# Extensions picked up when a folder is given (an explicitly named file is always tried).
FOLDER_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp",
                     ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".gif", ".tga"}

__all__ = ["FOLDER_EXTENSIONS", "Collected", "collect_inputs", "output_path_for", "restore_file"]


def _is_earlier_output(path: Path, suffix: str) -> bool:
    """Named like an output of this run's ``suffix``, or marked as ours in its metadata."""
    from ..io.output import EXTENSIONS, is_restored_output
    if bool(suffix) and path.stem.endswith(suffix) and path.suffix.lower() in set(EXTENSIONS.values()):
        return True
    return is_restored_output(path)


class Collected(NamedTuple):
    files: List[Tuple[Path, Optional[Path]]]  # (file, the folder it was found in, or None)
    errors: List[str]                         # one line per input path that does not exist
    skipped_outputs: int                      # files in folders that are our own earlier outputs
    skipped_folders: int                      # sub-folders not entered (no --recursive)


def collect_inputs(inputs: Sequence[str], recursive: bool, suffix: str) -> Collected:
    """The image files that ``inputs`` (files and folders) name, each once, sorted per folder.

    In folders, hidden files, other extensions and our own earlier outputs (by name or by
    their EXIF mark, whatever suffix they were written with) are left out and counted."""
    files: List[Tuple[Path, Optional[Path]]] = []
    errors: List[str] = []
    skipped_outputs = skipped_folders = 0
    seen = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = []
            for f in it:
                if not recursive and f.is_dir() and not f.name.startswith("."):
                    skipped_folders += 1
                    continue
                if not f.is_file() or f.name.startswith(".") or f.suffix.lower() not in FOLDER_EXTENSIONS:
                    continue
                if _is_earlier_output(f, suffix):
                    skipped_outputs += 1
                    continue
                found.append(f)
            for f in sorted(found):
                key = os.path.realpath(f)
                if key not in seen:
                    seen.add(key)
                    files.append((f, p))
        elif p.exists():
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                files.append((p, None))
        else:
            errors.append(f"error: {item}: no such file or folder")
    return Collected(files, errors, skipped_outputs, skipped_folders)


def output_path_for(src: Path, base: Optional[Path], outdir: Optional[Path], suffix: str,
                    extension: str = ".png") -> Path:
    name = f"{src.stem}{suffix}{extension}"
    if outdir is None:
        return src.parent / name
    if base is not None:
        rel = src.parent.relative_to(base) if src.parent != base else Path()
        return outdir / rel / name
    return outdir / name


def planned_format(src: Path, requested: str) -> Tuple[str, Optional[str]]:
    """The output format for ``src`` (``requested`` may be "same": then the header is read)."""
    from ..io.output import resolve_format
    fmt = None
    if requested == "same":
        try:
            from PIL import Image
            with Image.open(src) as im:
                fmt = im.format
        except Exception:
            fmt = None
    return resolve_format(requested, fmt)


def restore_file(model, src: Path, out: Path, *, fmt: str = "png", quality: Optional[int] = None,
                 tile: Optional[int] = None, overlap: Optional[int] = None, ensemble: bool = False,
                 overwrite: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """Read ``src`` once, restore it with ``model`` and write ``out`` as ``fmt`` atomically.

    16-bit samples are restored at 16 bits (and kept where ``fmt`` holds them); ICC, EXIF and
    XMP are carried over (see :mod:`fastreshuffle.io.output`).  ``progress(done, total)`` is
    called in pixels after each tile.  Returns notes for the user (conversions, dropped frames).
    """
    from ..io.images import load_image_file
    from ..io.output import DEFAULT_QUALITY, write_restored
    from .tiling import DEFAULT_OVERLAP, restore_pixels

    from .tiling import too_small

    f = load_image_file(src)
    pixels = f.rgb16 if f.rgb16 is not None else f.rgb
    alpha = f.alpha16 if (f.rgb16 is not None and f.alpha16 is not None) else f.alpha
    total = pixels.shape[0] * pixels.shape[1]
    done = [0]

    def tick(n):
        done[0] += n
        progress(done[0], total)

    restored = restore_pixels(model, pixels, tile=tile, overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                              ensemble=ensemble, progress=tick if progress is not None else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = list(f.notes)
    if too_small(*pixels.shape[:2]):
        notes.append(f"{pixels.shape[1]}x{pixels.shape[0]} is under 8 pixels on a side: pixels written unchanged")
    notes += write_restored(out, restored, alpha, f.gray, fmt, quality=quality or DEFAULT_QUALITY,
                            icc=f.icc_profile, exif=f.exif, xmp=f.xmp, overwrite=overwrite)
    return notes
