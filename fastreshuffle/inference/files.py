"""Restoring image files: which files a list of inputs names, where each output goes, and
one file restored (read once, restored tile by tile, written atomically, never clobbering).

The ``restore`` command (:mod:`fastreshuffle.cli.restore`) drives these over a batch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Extensions picked up when a folder is given (an explicitly named file is always tried).
FOLDER_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp",
                     ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".gif", ".tga"}

__all__ = ["FOLDER_EXTENSIONS", "collect_inputs", "output_path_for", "write_png", "restore_file"]


def _is_earlier_output(path: Path, suffix: str) -> bool:
    return bool(suffix) and path.suffix.lower() == ".png" and path.stem.endswith(suffix)


def collect_inputs(inputs: Sequence[str], recursive: bool, suffix: str):
    """-> (list of (file, base folder or None), list of error lines, count of skipped earlier outputs)."""
    files: List[Tuple[Path, Optional[Path]]] = []
    errors: List[str] = []
    skipped_outputs = 0
    seen = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = []
            for f in it:
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
    return files, errors, skipped_outputs


def output_path_for(src: Path, base: Optional[Path], outdir: Optional[Path], suffix: str) -> Path:
    name = f"{src.stem}{suffix}.png"
    if outdir is None:
        return src.parent / name
    if base is not None:
        rel = src.parent.relative_to(base) if src.parent != base else Path()
        return outdir / rel / name
    return outdir / name


def write_png(path: Path, rgb: np.ndarray, alpha: Optional[np.ndarray], gray: bool, *, overwrite: bool,
              icc: Optional[bytes] = None) -> None:
    """Write the restored image as PNG atomically (grayscale / alpha re-attached as in the source)."""
    from PIL import Image
    from ..io.safe_write import save_image_atomic

    if gray:
        color = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        arr, mode = (color, "L") if alpha is None else (np.dstack([color, alpha]), "LA")
    else:
        arr, mode = (rgb, "RGB") if alpha is None else (np.dstack([rgb, alpha]), "RGBA")
    img = Image.fromarray(np.ascontiguousarray(arr), mode)
    kwargs = {"compress_level": 4}
    if icc and not gray:
        kwargs["icc_profile"] = icc
    save_image_atomic(img, path, overwrite=overwrite, format="PNG", **kwargs)


def restore_file(model, src: Path, out: Path, *, tile: Optional[int] = None, overlap: Optional[int] = None,
                 ensemble: bool = False, overwrite: bool = False) -> None:
    """Read ``src`` once, restore it with ``model`` and write the PNG ``out`` atomically."""
    from ..io.images import load_image_file
    from .tiling import DEFAULT_OVERLAP, restore_uint8

    f = load_image_file(src)
    restored = restore_uint8(model, f.rgb, tile=tile, overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                             ensemble=ensemble)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, restored, f.alpha, f.gray, overwrite=overwrite, icc=f.icc_profile)
