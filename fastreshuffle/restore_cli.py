"""``fastreshuffle restore INPUT... [-o OUTDIR]``: remove compression artifacts from image files.

Output: lossless PNG ``OUTDIR/<stem><suffix>.png`` (default OUTDIR: next to each input;
with ``--recursive`` and ``-o`` the input folder's sub-folders are mirrored under OUTDIR).

Exit codes: 0 all files restored (or skipped because the output exists), 1 some files
failed, 2 usage error (bad option, unknown model, bad weights, no images found, output
folder cannot be created), 130 interrupted (Ctrl-C / SIGINT).

Safety: inputs are never written; an existing output is never replaced without
``--overwrite``; every output is written to a temporary file in the output folder,
fsync-ed and renamed into place, and the temporary file is removed on any error or
interrupt.  Weights are read only from safetensors files.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Extensions picked up when a folder is given (an explicitly named file is always tried).
FOLDER_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".heic", ".heif", ".avif", ".bmp",
                     ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".gif", ".tga"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output-dir", metavar="OUTDIR", default=None,
                   help="folder for the restored PNGs (created if needed; default: next to each input)")
    p.add_argument("--model", default="jpeg", metavar="jpeg|hevc|PATH",
                   help="shipped model name or a .safetensors weights file (default: jpeg)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: auto = CUDA if available)")
    p.add_argument("--tile", type=int, default=None, metavar="SIZE",
                   help="tile size in pixels, a multiple of 8 (default: 512 on CPU, 1024 on CUDA; "
                        "0 = whole image at once)")
    p.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="context pixels around each tile, a multiple of 8 (default: 32)")
    p.add_argument("--half", action="store_true", help="fp16 inference (CUDA only; ignored on CPU)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the model over the 8 flips/rotations of each tile (8x slower, "
                        "+0.03-0.05 dB on Kodak24 JPEG)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--suffix", default="_restored", help="added to each output's stem (default: _restored)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, errors only")


# ----------------------------------------------------------------------------- helpers
def _say(msg: str, bar=None) -> None:
    if bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


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


def _source_mode(path: Path) -> Tuple[Optional[str], bool]:
    """(colour mode, has transparency) from the file header (pixels are not decoded)."""
    try:
        from PIL import Image
        try:
            from .imageio import _register_heif
            _register_heif()
        except Exception:
            pass
        with Image.open(path) as im:
            return im.mode, ("A" in im.getbands() or "transparency" in im.info)
    except Exception:
        return None, True


def read_input(path: Path):
    """-> (rgb uint8 HxWx3, alpha HxW or None, grayscale?).  Raises ImageReadError-like errors."""
    try:
        from .imageio import read_image
    except ImportError:  # pragma: no cover - imageio is part of the package
        read_image = None
    if read_image is not None:
        rgb, alpha = read_image(path, return_alpha=True)
    else:  # pragma: no cover
        from PIL import Image, ImageOps
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            alpha = np.asarray(im.getchannel("A")) if "A" in im.getbands() else None
            rgb = np.asarray(im.convert("RGB"))
    mode, transparent = _source_mode(path)
    if alpha is not None and not transparent:
        alpha = None  # e.g. a palette image without transparency, converted via RGBA
    return rgb, alpha, mode in GRAY_MODES


def _icc_profile(path: Path) -> Optional[bytes]:
    try:
        from PIL import Image
        with Image.open(path) as im:
            icc = im.info.get("icc_profile")
            return icc if isinstance(icc, bytes) and icc else None
    except Exception:
        return None


def write_png(path: Path, rgb: np.ndarray, alpha: Optional[np.ndarray], gray: bool, *, overwrite: bool,
              icc: Optional[bytes] = None) -> None:
    """Write the restored image as PNG atomically (grayscale / alpha re-attached as in the source)."""
    from PIL import Image
    from .safe_io import save_image_atomic

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


def _describe(e: BaseException) -> str:
    from .safe_io import OutputExistsError
    if isinstance(e, OutputExistsError):
        return "output exists"
    reason = getattr(e, "reason", None)
    if reason:
        return str(reason)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    if isinstance(e, MemoryError):
        return "out of memory (try a smaller --tile)"
    return str(e) or type(e).__name__


# ----------------------------------------------------------------------------- main
def run(args) -> int:
    from .cli import UserError

    suffix = args.suffix
    if os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise UserError(f"--suffix must not contain a path separator: {suffix!r}")
    from .tiling import DEFAULT_OVERLAP, check_tile_args
    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    try:
        check_tile_args(0 if args.tile is None else args.tile, overlap)
    except ValueError as e:
        raise UserError(str(e)) from None

    files, errors, skipped_outputs = collect_inputs(args.inputs, args.recursive, suffix)
    for line in errors:
        _say(line)
    if skipped_outputs:
        _say(f"note: skipped {skipped_outputs} file(s) named like earlier outputs (*{suffix}.png)")
    if not files:
        if errors:
            return 1
        raise UserError("no supported image files found in " + ", ".join(args.inputs))

    outdir = Path(args.output_dir) if args.output_dir else None
    if outdir is not None:
        if outdir.exists() and not outdir.is_dir():
            raise UserError(f"output folder {outdir} exists and is not a folder")
        try:
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output folder {outdir}: {e.strerror or e}") from None

    # Model (after argument checks, before any file work).
    from .pretrained import load_pretrained, resolve_device
    from .weights_io import WeightsError
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    half = bool(args.half) and device.type == "cuda"
    if args.half and not half and not args.quiet:
        _say("note: --half only applies on CUDA; running in fp32 on CPU")
    try:
        model = load_pretrained(args.model, device, half=half)
    except WeightsError as e:
        raise UserError(str(e)) from None
    from .tiling import restore_uint8

    input_keys = {os.path.realpath(f) for f, _ in files}
    planned: Dict[str, Path] = {}
    n_ok = n_skip = n_fail = 0

    try:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="file", disable=args.quiet or None, file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    except ImportError:  # pragma: no cover
        bar = None
    t0 = time.time()
    try:
        for src, base in files:
            out = output_path_for(src, base, outdir, suffix)
            key = os.path.realpath(out)
            try:
                if key in input_keys:
                    _say(f"skipped: {src}: output {out} would replace an input file (change --suffix or -o)", bar)
                    n_skip += 1
                    continue
                if key in planned:
                    _say(f"skipped: {src}: output {out} is also the output of {planned[key]} "
                         "(same name); use -o or --suffix", bar)
                    n_skip += 1
                    continue
                planned[key] = src
                if os.path.lexists(out) and not args.overwrite:
                    _say(f"skipped: {src}: output exists: {out} (use --overwrite)", bar)
                    n_skip += 1
                    continue
                rgb, alpha, gray = read_input(src)
                restored = restore_uint8(model, rgb, tile=args.tile, overlap=overlap,
                                         ensemble=args.self_ensemble)
                del rgb
                out.parent.mkdir(parents=True, exist_ok=True)
                write_png(out, restored, alpha, gray, overwrite=args.overwrite, icc=_icc_profile(src))
                del restored
                n_ok += 1
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one bad file never stops the batch
                n_fail += 1
                _say(f"error: {src}: {_describe(e)}", bar)
            finally:
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        _say(f"interrupted: {n_ok + n_skip + n_fail} of {len(files)} file(s) finished "
             f"({n_ok} restored, {n_skip} skipped, {n_fail} failed); no partial output left behind")
        return 130
    if bar is not None:
        bar.close()
    if not args.quiet or n_fail:
        _say(f"done in {time.time() - t0:.1f}s: {n_ok} restored, {n_skip} skipped, {n_fail} failed"
             + (f", {len(errors)} input path(s) not found" if errors else ""))
    return 1 if (n_fail or errors) else 0


def main(argv=None) -> int:  # pragma: no cover - convenience
    from .cli import main as cli_main
    return cli_main(["restore", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
