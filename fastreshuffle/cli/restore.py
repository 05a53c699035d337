"""``fastreshuffle restore INPUT... [-o OUTDIR]``: remove compression artifacts from image files.

Output: ``OUTDIR/<stem><suffix>.<ext>`` (default OUTDIR: next to each input; with
``--recursive`` and ``-o`` the input folder's sub-folders are mirrored under OUTDIR; with one
input file, ``-o FILE`` names the output, its extension the format), in
``--format png`` (default, lossless), ``jpeg``, ``webp``, ``tiff`` or ``same`` (the input's
format where it can be written, else PNG); ``--output-quality`` for JPEG/WebP (default: JPEG
95, WebP lossless; without it a file written back into its own lossy format is copied where its
pixels stay unchanged, and so is a JPEG of quality >= 85: see ``KEEP_JPEG_FROM`` in
:mod:`fastreshuffle.inference.files`).
16-bit inputs stay 16-bit in PNG and TIFF.  ICC, EXIF and XMP are kept, the orientation is
applied once (pixels upright, EXIF orientation removed); see :mod:`fastreshuffle.io.output`.

Exit codes: 0 all files restored or passed through (or skipped because the output exists), 1 some
files failed or got no output as asked (an output that would replace an input, clash with another
input's, or is a folder), 2 usage error (bad option, unknown model, bad weights, no images found, output
folder cannot be created), 130 interrupted (Ctrl-C / SIGINT).

Safety: inputs are never written; an existing output is never replaced without
``--overwrite``; every output is written to a temporary file in the output folder,
fsync-ed and renamed into place, and the temporary file is removed on any error or
interrupt.  Weights are read only from safetensors files.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path
from typing import Dict

from ..backends import PRECISIONS
from ..errors import UserError
from ._common import (add_device_argument, add_threads_argument, apply_threads, device_from_args, interrupted,
                      printable)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("-o", "--output-dir", metavar="OUTDIR|FILE", default=None,
                   help="folder for the restored images (created if needed; default: next to each input); "
                        "with one input file, also an output file name if it ends in .png, .jpg, .jpeg, .jfif, "
                        ".webp, .tif or .tiff (its format); a name with another picture extension (.bmp, .gif, "
                        ".ico, .pdf, ...) is refused; any other name, or one ending in /, is a folder")
    p.add_argument("--format", default=None, choices=("png", "jpeg", "webp", "tiff", "same"),
                   help="output format (default: png, lossless, or that of -o FILE's extension; same = the "
                        "input's format where it can be written, else png)")
    p.add_argument("--output-quality", type=int, default=None, metavar="Q",
                   help="quality 1-100 of JPEG/WebP outputs (default: JPEG 95, WebP lossless; without it, "
                        "a JPEG output of a JPEG input (--format same or jpeg) copies the file as it is where its quality "
                        "is >= 85 or its pixels stay unchanged, as does a WebP output of a WebP input whose pixels stay "
                        "unchanged; "
                        "lossless formats are written again, with the same pixels)")
    p.add_argument("--model", default="auto",
                   metavar="auto|jpeg|jpeg-low|jpeg-mid|jpeg-high|hevc|hevc-low|hevc-paper|webp|PATH",
                   help="shipped model name or a .safetensors weights file (default: auto = hevc for "
                        "HEIF files, webp for lossy WebP files, jpeg for everything else; said per file; auto, jpeg and hevc hand each "
                        "file to its quality band's model where installed: jpeg-low q <= 20, jpeg-mid 45-80, "
                        "jpeg-high >= 81, hevc-low QP >= 42; other names and weights files run as given; "
                        "hevc-paper: the paper's "
                        "network for HEIF files, slightly better than hevc and about 7x slower)")
    add_device_argument(p)
    add_threads_argument(p)
    p.add_argument("--tile", type=int, default=None, metavar="SIZE",
                   help="tile size in pixels, a multiple of 8 (default: 768 on CPU, 1024 on CUDA; "
                        "0 = whole image at once); each tile runs with --overlap pixels of context on every side: "
                        "a tile that makes this more than 16x the work of its own pixels is warned "
                        "of (--tile 8 --overlap 512: 16641x), 4x or more is noted")
    p.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="context pixels around each tile, a multiple of 8 (default: 64)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="arithmetic of the network (default: auto = bf16 on CPUs with AVX512-BF16 or AMX, "
                        "within 0.003 dB of fp32 on Kodak24 and faster; fp32 elsewhere); fp16: CUDA only")
    p.add_argument("--half", action="store_true", help="same as --precision fp16 (CUDA only; ignored on CPU)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the model over the 8 flips/rotations of each tile (8x slower, "
                        "+0.05-0.06 dB on Kodak24 JPEG q10-30)")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="the network's full correction on every image: no strength from a JPEG's tables, a "
                        "HEIF file's QP or a WebP file's quantiser, no consistency with the quantisation, no search for JPEG compression "
                        "in other images' pixels (can make high-quality and never-compressed images worse; "
                        "for experiments)")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--suffix", default="_restored", help="added to each output's stem (default: _restored)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar, errors only (and one line counting files skipped as their output exists)")


# ----------------------------------------------------------------------------- helpers
def _say(msg: str, bar=None) -> None:
    """One line on stderr per message: control characters inside it (a file named with a line
    break or a terminal escape) are shown escaped, so that scripts reading the lines see one per
    file and a name cannot rewrite the terminal (:func:`._common.printable`)."""
    msg = printable(msg)
    if bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def _check_folder(folder: Path, what: str) -> None:
    """Before any work: a UserError starting with ``what`` where a file stands where ``folder`` or
    one of its parents should be (the folders could never be made).  A folder that cannot be
    written in is said per file, where the write fails."""
    from ..io.safe_write import check_output_folder
    try:
        check_output_folder(folder)
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            raise UserError(f"{what}: {e.filename} is a file, not a folder") from None


def _say_leftovers(files, outdir, out_file, suffix) -> None:
    """A note naming temporary files found in the output folders after the run: none of this run's
    is left (removed even through a second interrupt), so they are a killed run's (SIGKILL, a power
    cut) -- or another run's, still writing into the same folder."""
    from ..inference.files import output_path_for
    from ..io.safe_write import leftover_temp_files
    folders = {out_file.parent} if out_file is not None else {
        output_path_for(src, base, outdir, suffix).parent for src, base in files}
    left = [p for folder in sorted(folders) for p in leftover_temp_files(folder, recursive=False)]
    if left:
        _say(f"note: {len(left)} temporary file(s) of an interrupted or killed earlier run (or of another run "
             f"writing there now) in the output folder(s): {', '.join(map(str, left[:3]))}"
             + (", ..." if len(left) > 3 else "") + "; remove them once no other run is writing")


def _counts(restored: int, same: int, skipped: int, failed: int) -> str:
    """The end-of-run tally, the same four fields every time; a file written with its pixels as
    they were (nothing to remove, a high-quality JPEG copied, under 8 px: its note says why) is
    not counted as restored."""
    return f"{restored} restored, {same} passed through, {skipped} skipped, {failed} failed"


class _TileBar:
    """Progress inside one image, in megapixels, shown only when it is cut into several tiles."""

    def __init__(self, name: str, quiet: bool):
        # not into a log: a bar's carriage returns and escapes are for a terminal (as the file bar)
        tty = getattr(sys.stderr, "isatty", lambda: False)()
        self.name, self.quiet, self.bar = name, quiet or not tty, None

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            if done >= total:  # one tile: the file bar is enough
                return
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover
                self.quiet = True
                return
            self.bar = tqdm(total=round(total / 1e6, 2), unit="Mpx", desc=self.name, file=sys.stderr,
                            leave=False, dynamic_ncols=True, position=1)
        self.bar.n = round(done / 1e6, 2)
        if done >= total:    # the guard's projection and the encoding are still to come (~half the time)
            self.bar.set_description_str(f"{self.name}: network done; guard and writing", refresh=False)
        self.bar.refresh()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


# ----------------------------------------------------------------------------- main
def run(args) -> int:
    from ..inference.files import collect_inputs, sniff_format
    from ..io.images import known_image_extensions
    from ..io.output import format_of_name, resolve_format
    from ..inference.tiling import DEFAULT_OVERLAP, TILE_WORK_WARNED, check_tile_args, tile_work

    suffix = args.suffix
    if os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise UserError(f"--suffix must not contain a path separator: {suffix!r}")
    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    try:
        check_tile_args(0 if args.tile is None else args.tile, overlap)
    except ValueError as e:
        raise UserError(str(e)) from None
    if overlap < DEFAULT_OVERLAP and args.tile != 0 and not args.quiet:
        # (measured: at 32, 8 pixels of a 1001x667 photo 2 levels off the untiled result; at 8 up to
        # 7 levels along the seams, at 0 up to 25; at 64 every pixel within one rounding)
        _say(f"note: --overlap {overlap} is under the default {DEFAULT_OVERLAP}: the seams between tiles can show "
             "(pixels a level or more off along them; docs/restore.md, Tiling)")
    work, larger = tile_work(args.tile or 0, overlap)
    if work > TILE_WORK_WARNED:
        # (each tile runs with its context on every side: --tile 8 took ~289x the work, silently, and
        # --tile 8 --overlap 512 16641x, which looked like a hang behind its note; said even with -q)
        _say(f"warning: --tile {args.tile} with --overlap {overlap}: each tile runs on {args.tile + 2 * overlap} px "
             f"squares, {work:.0f}x the work of its own pixels (very slow); a larger --tile, e.g. --tile {larger}, "
             f"takes {tile_work(larger, overlap)[0]:.2g}x")
    elif args.tile and not args.quiet and work >= 4:
        _say(f"note: --tile {args.tile} with --overlap {overlap}: each tile runs on {args.tile + 2 * overlap} px "
             f"squares, {work:.0f}x the work of its own pixels (slow; the default tile is 768 on CPU)")

    # -o FILE: one input file, written there in the format its extension names
    if args.output_dir is not None and not args.output_dir.strip():   # (an unset shell variable, most likely)
        raise UserError(f"-o {args.output_dir!r} is empty: give a folder or a file name, or leave -o out "
                        "(outputs then go next to their inputs)")
    # "-" is not standard input / output here (a folder named "-" was made silently; a helper's probe)
    if args.output_dir == "-" and not os.path.isdir("-"):
        raise UserError("-o -: writing to standard output is not supported; give an output file (-o out.png) "
                        "or folder")
    if "-" in args.inputs and not os.path.lexists("-"):
        raise UserError("reading an image from standard input ('-') is not supported; give image files or folders")
    outdir = Path(args.output_dir) if args.output_dir else None
    out_file = None
    folder = bool(args.output_dir) and args.output_dir.endswith(tuple(filter(None, (os.sep, os.altsep))))
    image_names = known_image_extensions()   # (-o out.ico had made a folder named out.ico)
    if outdir is not None and not folder and not outdir.exists() and outdir.name.lower() in image_names:
        if format_of_name(Path("photo" + outdir.name)) is None:
            raise UserError(f"-o {outdir}: restore writes .png, .jpg, .webp or .tif files (and this name is only "
                            "an extension)")
        raise UserError(f"-o {outdir}: a file name that is only an extension would be taken for a folder; name "
                        f"the file (e.g. -o photo{outdir.name}) or choose the format with --format")
    if outdir is not None and not folder and not outdir.is_dir() and outdir.suffix.lower() in image_names:
        if len(args.inputs) == 1 and os.path.exists(args.inputs[0]) and not os.path.isdir(args.inputs[0]) \
                and not os.path.isfile(args.inputs[0]):   # (a FIFO would block the first read for ever)
            raise UserError(f"{args.inputs[0]}: not a regular file (a pipe, socket or device): restore reads "
                            "image files")
        if len(args.inputs) != 1 or not Path(args.inputs[0]).is_file():
            raise UserError(f"-o {outdir} names a file: give one input file, or give a folder (outputs are then "
                            "named after their inputs, see --suffix)")
        wanted = format_of_name(outdir)
        if wanted is None:
            raise UserError(f"-o {outdir}: restore writes .png, .jpg, .webp or .tif files")
        if args.format not in (None, wanted) and not (
                args.format == "same" and resolve_format("same", sniff_format(Path(args.inputs[0])))[0] == wanted):
            raise UserError(f"--format {args.format} and -o {outdir} ({wanted.upper()}) disagree: give one of them")
        out_file, outdir = outdir, None
        fmt = wanted
    else:
        fmt = args.format or "png"

    if args.output_quality is not None:
        if not 1 <= args.output_quality <= 100:
            raise UserError(f"--output-quality must be 1-100, got {args.output_quality}")
        if fmt in ("png", "tiff"):
            raise UserError(f"--output-quality applies to jpeg/webp outputs, not {fmt.upper()} (lossless)")

    apply_threads(args)
    found = collect_inputs(args.inputs, args.recursive, suffix, outdir)
    files, errors = found.files, found.errors
    for line in errors:
        _say(line)
    said = not args.quiet or not files       # (with nothing found, they say why, --quiet or not)
    if found.skipped_outputs and said:
        names = ", ".join(str(f) for f in sorted(found.skipped_outputs)[:10]) + (
            f" and {len(found.skipped_outputs) - 10} more" if len(found.skipped_outputs) > 10 else "")
        _say(f"note: skipped {len(found.skipped_outputs)} file(s) that are fastreshuffle outputs (marked as ours "
             f"in their EXIF, or named as the {suffix!r} output of an image beside them or in -o's folder): {names}")
    if found.skipped_folders and said:
        _say(f"note: {found.skipped_folders} sub-folder(s) not searched (use -r/--recursive)")
    if found.linked_folders and said:
        _say(f"note: {found.linked_folders} link(s) to folders not followed (name such a folder as an input "
             "to restore its images)")
    if not files:
        if errors:
            return 1
        raise UserError("no supported image files found in " + ", ".join(args.inputs))

    if outdir is not None:
        if outdir.exists() and not outdir.is_dir():
            raise UserError(f"output folder {outdir} exists and is not a folder")
        _check_folder(outdir, f"cannot create output folder {outdir}")   # made with its first file
    elif out_file is not None:
        _check_folder(out_file.parent, f"cannot write -o {out_file}")

    # Model (after argument checks, before any file work).
    from ..errors import WeightsError
    device = device_from_args(args)
    from ..backends import cpu_fast_bf16, half_precision, resolve_precision
    precision, note = half_precision(args.precision, args.half, device)
    if note and not args.quiet:
        _say(f"note: --half: {note}")
    try:
        dtype = resolve_precision(precision, device)
    except ValueError as e:
        raise UserError(f"--precision: {e}") from None
    if precision == "bf16" and device.type == "cpu" and not cpu_fast_bf16() and not args.quiet:
        _say("note: this CPU has no AVX512-BF16 or AMX (or the kernel is capped): bf16 runs on torch's "
             "bfloat16 convolutions, slower than --precision fp32")
    from ..inference.files import NamedModels, restore_files
    models = NamedModels(device, precision)
    try:
        if args.model != "auto":
            models(args.model)
    except WeightsError as e:
        raise UserError(str(e)) from None
    counts = {"restored": 0, "same": 0, "skipped": 0, "failed": 0}   # same: written, pixels as they were
    used: Dict[str, int] = {}   # --model auto: files per model, said per file up to 20, else at the end

    try:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="file", disable=args.quiet or None, file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    except ImportError:  # pragma: no cover
        bar = None
    t0 = time.time()
    try:
        for o in restore_files(files, models, model=args.model, outdir=outdir, suffix=suffix, fmt=fmt, output=out_file,
                               quality=args.output_quality, tile=args.tile, overlap=overlap,
                               ensemble=args.self_ensemble, overwrite=args.overwrite, guard=args.guard,
                               tile_progress=lambda src: _TileBar(src.name, args.quiet)):
            counts[o.status] += 1
            if o.status == "skipped":       # (its output is there: with -q, counted in one line at the end)
                if not args.quiet:
                    _say(f"skipped: {o.src}: {o.reason}", bar)
            elif o.status == "failed":
                _say(f"error: {o.src}: {o.reason}", bar)
            else:
                # the model that made the pixels: the band's where one ran; none for a file left as it
                # was (its notes say why), which the tally counts as passed through
                ran = (o.band or o.model) if o.status == "restored" else None
                if ran is not None:
                    used[ran] = used.get(ran, 0) + 1
                said = [f"model {ran} ({str(dtype).replace('torch.', '')})"] if (
                    ran is not None and args.model == "auto" and len(files) <= 20) else []
                if not args.quiet:
                    for note in said + o.notes:
                        _say(f"note: {o.src}: {note}", bar)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        what, code = interrupted(e)
        counts["skipped"] += len(found.skipped_outputs)
        _say(f"{what}: {sum(counts.values()) - len(found.skipped_outputs)} of {len(files)} file(s) finished "
             f"({_counts(**counts)}); no partial output left behind")
        return code
    if bar is not None:
        bar.close()
    if args.model == "auto" and len(files) > 20 and used and not args.quiet:
        _say("note: models chosen (--model auto, " + str(dtype).replace("torch.", "") + "): "
             + ", ".join(f"{name} for {n} file(s)" for name, n in sorted(used.items())))
    if args.quiet and counts["skipped"]:
        _say(f"skipped: {counts['skipped']} file(s) whose output exists (use --overwrite; listed without -q)")
    _say_leftovers(files, outdir, out_file, suffix)
    if not args.quiet or counts["failed"]:      # the last line: the tally
        counts["skipped"] += len(found.skipped_outputs)
        _say(f"done in {time.time() - t0:.1f}s: {_counts(**counts)}"
             + (f", {len(errors)} input path(s) not read (named above)" if errors else ""))
    return 1 if (counts["failed"] or errors) else 0
