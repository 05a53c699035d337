"""Restoring image files: which files a list of inputs names, where each output goes, and
one file restored (read once, restored tile by tile, written atomically, never clobbering).

:func:`restore_files` is the batch of the ``restore`` command (:mod:`fastreshuffle.cli.restore`, which
only reads its arguments and says what became of each file).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

__all__ = ["Collected", "collect_inputs", "output_path_for", "restore_file", "sniff_format", "Outcome",
           "NamedModels", "restore_files", "describe_error"]


def _is_earlier_output(path: Path, suffix: str, stems) -> bool:
    """Marked as ours in its metadata, or named as an output of another image in its folder: its
    ``suffix`` and one of the extensions we write (``stems``: the stems of the folder's
    images; ``a_restored.png`` or ``a_restored.jpg`` beside ``a.jpg`` -- an earlier run's byte
    copy of a high-quality JPEG carries no mark).  A name alone is not enough: a user's own
    ``holiday_restored.jpg`` with no ``holiday.*`` beside it is a photo to restore."""
    from ..io.output import EXTENSIONS, is_restored_output
    if (suffix and path.stem.endswith(suffix) and path.suffix.lower() in EXTENSIONS.values()
            and path.stem[:-len(suffix)] in stems):
        return True
    return is_restored_output(path)


class Collected(NamedTuple):
    files: List[Tuple[Path, Optional[Path]]]  # (file, the folder it was found in, or None)
    errors: List[str]                         # one line per input path or folder that cannot be read
    skipped_outputs: List[Path]               # files in folders that are our own earlier outputs
    skipped_folders: int                      # sub-folders not entered (no --recursive)
    linked_folders: int = 0                   # links to folders, never followed (loops; files twice)


def _share(strength: float) -> str:
    """A guard's strength as a share: "0%" only when it is 0 (under 1%: "<1%")."""
    return "<1%" if 0 < strength < 0.005 else f"{strength:.0%}"


def _sampling_said(tables) -> str:
    """A JPEG's chroma sampling, as a note says it."""
    return {(1, 1): "4:4:4", (1, 2): "4:2:2", (2, 1): "4:4:0", (2, 2): "4:2:0"}.get(tuple(tables.subsampling), "its chroma sampling")


def _strength_said(strength: float) -> str:
    """What a HEIF or WebP file's guard kept of the correction, as its note says it."""
    return ("the full correction" if strength >= 1 else f"{_share(strength)} of the correction" if strength > 0
            else "little to remove; pixels left as they are")


def _folder_entries(folder: Path, recursive: bool, errors: List[str]) -> List[Path]:
    """The entries of ``folder`` (with ``recursive``, of its sub-folders too: not through links to
    folders, hidden ones left out), each folder that cannot be read added to ``errors``."""
    def unreadable(e: OSError) -> None:
        errors.append(f"error: {e.filename or folder}: cannot read the folder: {e.strerror or e}")
    if not recursive:
        try:
            return list(folder.iterdir())
        except OSError as e:
            unreadable(e)
            return []
    out: List[Path] = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(root) / n for n in names)
        out.extend(Path(root) / d for d in dirs if os.path.islink(os.path.join(root, d)))   # (to be counted)
    return out


def _broken_link(link: Path) -> str:
    """What is wrong with a link that leads to no file: its target is missing, or it loops."""
    try:
        target = os.readlink(link)
    except OSError:
        return "a link to nothing (it was removed while being read)"
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a link that loops (it points to {target}, which leads back to it)"
    return f"a link to nothing (its target {target} does not exist)"


def collect_inputs(inputs: Sequence[str], recursive: bool, suffix: str,
                   outdir: Optional[Path] = None) -> Collected:
    """The image files that ``inputs`` (files and folders) name, each once, sorted per folder.

    In folders, hidden files and folders and other extensions are left out; so are our own earlier
    outputs (by their EXIF mark, whatever suffix they were written with, or named as this run's
    suffix would name another image's output -- beside it, or where this run writes it in the
    output folder ``outdir``), listed in ``skipped_outputs``."""
    from ..io.output import EXTENSIONS
    files: List[Tuple[Path, Optional[Path]]] = []
    errors: List[str] = []
    skipped_outputs: List[Path] = []
    skipped_folders = linked_folders = 0
    seen = set()
    from ..io.images import IMAGE_EXTENSIONS, NOT_REGULAR, special_file   # (the extensions eval and train read too)
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images = []
            for f in _folder_entries(p, recursive, errors):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue   # hidden files and everything in hidden folders are left out
                if f.is_dir():
                    if f.is_symlink():
                        linked_folders += 1
                    elif not recursive:
                        skipped_folders += 1
                    continue
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                if f.is_symlink() and not f.exists():
                    errors.append(f"error: {f}: {_broken_link(f)}")
                    continue
                if not f.is_file():
                    continue
                images.append(f)
            stems: Dict[Path, set] = {}
            for f in images:
                stems.setdefault(f.parent, set()).add(f.stem)
            # where this run would write the folder's images' outputs in ``outdir`` (inside the folder
            # with -r: an earlier run's byte copy of a high-quality JPEG there carries no mark)
            outputs = {} if outdir is None else {
                os.path.realpath(output_path_for(f, p, outdir, suffix, ext)): os.path.realpath(f) for f in images
                for ext in set(EXTENSIONS.values())}
            found = []
            for f in images:
                key = os.path.realpath(f)   # (a file at its own output path is an input: refused later, said)
                if outputs.get(key, key) != key or _is_earlier_output(f, suffix, stems[f.parent]):
                    skipped_outputs.append(f)
                    continue
                found.append(f)
            for f in sorted(found):
                key = os.path.realpath(f)
                if key not in seen:
                    seen.add(key)
                    files.append((f, p))
        elif special_file(p):   # a FIFO would block the first read for ever
            errors.append(f"error: {item}: {NOT_REGULAR}")
        elif p.exists():
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                files.append((p, None))
        elif p.is_symlink():
            errors.append(f"error: {item}: {_broken_link(p)}")
        else:
            errors.append(f"error: {item}: no such file or folder")
    errors = list(dict.fromkeys(errors))   # a file named and also found in a named folder: once
    return Collected(files, errors, skipped_outputs, skipped_folders, linked_folders)


def output_path_for(src: Path, base: Optional[Path], outdir: Optional[Path], suffix: str,
                    extension: str = ".png") -> Path:
    name = f"{src.stem}{suffix}{extension}"
    if outdir is None:
        return src.parent / name
    if base is not None:
        rel = src.parent.relative_to(base) if src.parent != base else Path()
        return outdir / rel / name
    return outdir / name


def sniff_format(src: Path) -> Optional[str]:
    """The Pillow format name of ``src`` from its header (None when it cannot be read)."""
    import warnings
    try:
        from PIL import Image

        from ..io.images import _register_heif
        _register_heif()
        with warnings.catch_warnings():     # a decompression bomb, a damaged EXIF: said once, by the loader
            warnings.simplefilter("ignore")
            with Image.open(src) as im:
                return im.format
    except Exception:   # a TIFF Pillow cannot open (float colour: read through tifffile) is still a TIFF
        try:
            with open(src, "rb") as f:
                head = f.read(4)
        except OSError:
            return None
        from ..io.images import TIFF_MAGIC
        return "TIFF" if head in TIFF_MAGIC else None


def _lossy_webp_file(src: Path) -> bool:
    """Whether ``src`` is a lossy still WebP file whose quantiser can be read (False when unreadable)."""
    from ..io.webp_quant import webp_quant
    try:
        with open(src, "rb") as f:
            return webp_quant(f.read()) is not None
    except OSError:
        return False


# Under this many pixels on a side, an image is said to gain less surely (docs/restore.md, "Small
# images"): 16-64 px crops of photos lost up to a few dB where they are near-black or saturated.
SMALL_SIDE = 64

# From this JPEG quality on, a JPEG written back as JPEG at the default quality (95, 4:4:4) is
# copied instead: on 24 CBSD432 photos (Pillow 4:2:0 inputs, restored as `restore` does), the
# re-encode left quality 83 at +0.32 dB mean / +0.22 worst over the input, but quality 85 at
# -0.00 / -0.10, 88 at -0.12 / -0.33, 92 at -1.6 / -2.0 and 95 at -3.4 / -5.2 dB
# (benchmarks/same_format.py).  Re-measured with `jpeg-high` (2026-12-05), photos would keep a
# gain re-encoded up to quality 89 (+0.31 / +0.05 dB on Kodak24), but pictures that are not
# photos lose there (a text screenshot -0.93 dB at q88, a gradient -0.36, the colour wheel
# -0.43), where the copy keeps them as they were: the bound stays (docs/restore.md).
KEEP_JPEG_FROM = 85


class FileResult(NamedTuple):
    """What :func:`restore_file` did: notes for the user, and whether restoring changed the
    pixels (False: passed through -- a lossy output format may still change them a little, said
    in a note)."""
    notes: List[str]
    changed: bool
    band: Optional[str] = None   # the quality band's model that ran, where not the model itself


def restore_file(model, src: Path, out: Path, *, fmt: str = "png", quality: Optional[int] = None,
                 tile: Optional[int] = None, overlap: Optional[int] = None, ensemble: bool = False,
                 overwrite: bool = False, progress: Optional[Callable[[int, int], None]] = None,
                 guard: bool = True, codec: Optional[str] = "jpeg", bands=None) -> "FileResult":
    """Read ``src`` once, restore it with ``model`` and write ``out`` as ``fmt`` atomically.

    16-bit samples are restored at 16 bits (and kept where ``fmt`` holds them); ICC, EXIF and
    XMP are carried over (see :mod:`fastreshuffle.io.output`).  A JPEG is restored in its stored
    orientation (its block grid on the network's) and, with ``guard``, given the share of the
    correction its quality warrants and kept consistent with its quantisation tables
    (:mod:`.guard`); other images restored by a JPEG model (``codec="jpeg"``) are restored only
    where JPEG compression is found in their pixels.  ``bands`` (:class:`.loading.Bands`): a
    JPEG is restored by the network for its quality, a HEIF file by the one for its QP, instead of
    ``model``.  ``progress(done, total)`` is called in pixels after each tile.  Returns a
    :class:`FileResult`: notes for the user (conversions, dropped frames, the JPEG guard's
    decision) and whether restoring changed the pixels (False: passed through).
    """
    import numpy as np

    from ..io.images import INVERSE_ORIENTATION, load_image_file, orient_array, read_unchanged
    from ..io.output import DEFAULT_QUALITY, check_alpha_fits, write_restored
    from ..io.safe_write import atomic_write_bytes
    from .guard import (BLIND, HEIF_QP, TABLES, WEBP_Q, for_picture, guard_for, guard_pixels, hevc_guarded_file,
                        route, run_guarded, webp_guarded)
    from .tiling import DEFAULT_OVERLAP, fill_hidden, hidden_pixels, restore_pixels, too_small

    f = load_image_file(src)
    seen = f.rgb16 if f.rgb16 is not None else f.rgb
    alpha = check_alpha_fits(fmt, f.alpha16 if (f.rgb16 is not None and f.alpha16 is not None) else f.alpha)
    hidden = hidden_pixels(alpha)       # colour under alpha 0: restored as a fill from the visible pixels
    pixels = fill_hidden(seen, hidden)
    total = pixels.shape[0] * pixels.shape[1]
    done = [0]
    notes = list(f.notes)

    def tick(n):
        done[0] += n
        progress(min(done[0], total), total)    # the guard's grid padding runs a few more pixels

    def runner(net):
        return lambda img: restore_pixels(net, img, tile=tile,
                                          overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                                          ensemble=ensemble, progress=tick if progress is not None else None)
    run = runner(model)

    band = []   # the band's model that ran, if any
    band_note = []   # (index in notes, what) of its note

    def band_run(what, **key):   # the run of the band for this key (a JPEG quality, a HEIF QP)
        if bands is None or bands.name(**key) == bands.model:
            return run
        band.append(bands.name(**key))
        band_note.append((len(notes), what))
        notes.append(f"{what}: restored by {band[-1]}, the model of that quality band")
        return runner(bands.net(**key))

    def for_quality(q):
        return band_run(f"JPEG quality ~{q:.0f}", quality=q)

    def for_qp(qp):
        return band_run(f"HEIF coded at QP {qp:.0f}", qp=qp)

    small = too_small(*pixels.shape[:2])
    # the same decision as restore() and eval (guard.route): with the guard on, its default
    wq = None
    if f.format == "WEBP" and f.n_frames == 1:   # a lossy WebP file's quantiser (None: lossless)
        from ..io.webp_quant import webp_quant
        wq = webp_quant(read_unchanged(src, f.source))
    how = route(codec, guard=None if guard else False, jpeg_file=f.format in ("JPEG", "MPO"),
                tables=f.jpeg_tables is not None and f.rgb16 is None, heif=f.format == "HEIF", webp=wq is not None)
    asked = bands.model if bands is not None else None   # the model asked for: its bands' strengths
    g = for_picture(guard_for(f.jpeg_tables, asked), pixels) if how.kind == TABLES else None
    # Written back into its own lossy format at the default quality, a file whose pixels stay as
    # they are is copied byte for byte, and so is a JPEG of quality >= KEEP_JPEG_FROM: re-encoding
    # costs more there than restoring gains (see KEEP_JPEG_FROM).  --output-quality re-encodes.
    # (A phone's MPO -- a JPEG with a second image -- is copied whole, and so is an animated WebP
    # left as it is: its frames kept, rather than its first frame alone written.)
    keep_file = quality is None and (
        (fmt == "jpeg" and f.format in ("JPEG", "MPO")) or (fmt == "webp" and f.format == "WEBP"))
    if small:
        notes.append(f"{pixels.shape[1]}x{pixels.shape[0]} is under 8 pixels on a side: pixels left as they are")
        restored = pixels.copy()
    elif g is not None:  # a JPEG file: its tables, its grid in the stored orientation
        if how.note:
            notes.append(how.note)
        if g.kept:
            notes.append(f"JPEG quality ~{g.quality:.0f}, {g.kept} (the networks smooth the dots away): pixels "
                         "left as they are")
            restored = pixels.copy()
        elif g.strength <= 0:
            notes.append(f"JPEG quality ~{g.quality:.0f}: no visible artifacts to remove; pixels left as they are")
            restored = pixels.copy()
        elif keep_file and g.quality >= KEEP_JPEG_FROM:
            notes.append(f"JPEG quality ~{g.quality:.0f}: re-encoding the restored pixels as JPEG would lose more "
                         "than restoring gains; file copied unchanged (--format png keeps the restoration, "
                         "--output-quality Q re-encodes anyway)")
            restored = pixels.copy()
        else:
            stored = orient_array(pixels, INVERSE_ORIENTATION.get(f.orientation, 1))
            restored = orient_array(run_guarded(for_quality(g.quality), stored, g), f.orientation)
            notes.append(f"JPEG quality ~{g.quality:.0f}: "
                         + (f"{_share(g.strength)} of the correction" if g.strength < 1 else "the full correction")
                         + (f" ({_share(g.chroma)} of it in colour: {_sampling_said(g.tables)})" if g.chroma < 1 else "")
                         + ", kept consistent with the file")
    elif how.kind == HEIF_QP:   # (decoded at 8 bits, 10-bit files too)
        # on the pixels as coded (before the file's rotation: the codec's blocks on the network's cells)
        o = f.coded_orientation
        restored, d = hevc_guarded_file(run, orient_array(pixels, INVERSE_ORIENTATION[o]),
                                        read_unchanged(src, f.source), for_qp)
        restored = orient_array(restored, o)
        what = (f"HEIF coded at QP {d.qp:.0f}" if d.qp is not None
                else f"HEIF at {d.ratio:.2f}x the size of a JPEG q90 of it (its QP could not be read)")
        notes.append(f"{what}: {_strength_said(d.strength)}")
    elif how.kind == WEBP_Q:   # on the pixels as stored (before an EXIF rotation: the codec's blocks on the cells)
        o = f.orientation
        restored, d = webp_guarded(run, orient_array(pixels, INVERSE_ORIENTATION.get(o, 1)), wq.index)
        restored = orient_array(restored, o)
        notes.append(f"WebP coded at quantiser {d.index:.0f} of 127: {_strength_said(d.strength)}")
    elif how.kind == BLIND:  # no tables: only where JPEG compression is in the pixels
        restored, bg = guard_pixels(run, pixels, for_quality=for_quality, model=asked)
        if bg is None and wq is not None:    # a JPEG model asked for (by name): nothing of JPEG in a WebP
            notes.append("a lossy WebP file, and no JPEG compression found in its pixels: left as it is "
                         "(--model webp, or auto, restores lossy WebP files)")
        elif bg is None and f.format == "WEBP" and f.n_frames > 1:
            notes.append("an animated WebP (the webp model reads the quantiser of still files only), no JPEG "
                         "compression found in its first frame: left as it is")
        elif bg is None:
            why = ("a JPEG whose tables cannot be used (CMYK, RGB-coded, or an unusual chroma sampling), and no "
                   "JPEG compression found in its RGB pixels" if f.format in ("JPEG", "MPO")
                   else "no JPEG compression found in the pixels")
            notes.append(f"{why}: left as it is (--no-guard restores it anyway)")
        elif bg.kept:
            notes.append(f"JPEG history found in the pixels, quality ~{bg.quality:.0f}, {bg.kept} (the networks "
                         "smooth the dots away): left as it is")
        elif bg.strength <= 0 and bg.share == 0:
            notes.append("JPEG history found in the pixels, but not with the IJG tables the guard knows (another "
                         "encoder's): left as it is")
        elif bg.strength <= 0:
            notes.append(f"JPEG history found in the pixels, quality ~{bg.quality:.0f}: nothing to remove; "
                         "left as it is")
        else:
            notes.append(f"JPEG history found in the pixels, quality ~{bg.quality:.0f}: {_share(bg.strength)} of the "
                         "correction, kept consistent with the quantisation"
                         + (", only where the pixels show it ("
                            + ("over 99%" if bg.share > 0.99 else f"{bg.share:.0%}")
                            + " of the image; the rest left as it is)" if bg.share < 1 else ""))
    else:
        if how.note:  # an HEVC or WebP model without a quantiser to go by: decoded pixels (a PNG from bpgdec, ...)
            notes.append(how.note)
        restored = run(pixels)
    if progress is not None and done[0] < total:  # the network did not run (or not over it all)
        progress(total, total)
    if hidden is not None:              # given back as it was
        restored[hidden] = seen[hidden]
    changed = not np.array_equal(restored, seen)
    if not changed:   # the band's model ran, but what it gave was not kept (passed through)
        for i, what in band_note:
            notes[i] = f"{what}: {band[-1]}, the model of that quality band, ran, but the pixels came out as they were"
    if changed and min(pixels.shape[:2]) < SMALL_SIDE:
        notes.append(f"{pixels.shape[1]}x{pixels.shape[0]}: an image under {SMALL_SIDE} px on a side gains less "
                     "surely (single small crops, near-black or saturated ones, lost up to a few dB in our tests)")
    if keep_file and not changed:     # (atomic_open makes missing folders)
        atomic_write_bytes(out, read_unchanged(src, f.source), overwrite=overwrite)
        return FileResult(notes[len(f.notes):], False)  # the decoding's notes (a CMYK conversion, frames) are not the copy's
    if not changed and (fmt == "jpeg" or (fmt == "webp" and quality is not None)):
        notes.append(f"nothing changed by restoring, but written as {fmt.upper()} quality {quality or DEFAULT_QUALITY} "
                     "(lossy), which changes the pixels a little; --format png keeps them exactly")
    notes += write_restored(out, restored, alpha, f.gray, fmt, quality=quality,
                            icc=f.icc_profile, exif=f.exif, xmp=f.xmp, dpi=f.dpi, text=f.text, comment=f.comment,
                            overwrite=overwrite)
    return FileResult(notes, changed, band[-1] if band else None)


# ----------------------------------------------------------------------------- a batch
class Outcome(NamedTuple):
    """What became of one input of :func:`restore_files`."""
    src: Path
    status: str                  # "restored"; "same" (written, its pixels as they were: the notes say
    #                              why); "skipped" (nothing written: ``reason``); "failed" (``reason``)
    notes: List[str]             # restored / same: what was done, one line each
    reason: Optional[str] = None
    model: Optional[str] = None  # the name of the model that restored it
    band: Optional[str] = None   # the quality band's model that ran instead, if one did


def describe_error(e: BaseException, out: Optional[Path] = None) -> str:
    """One line saying why a file failed; ``out``: the output it was being written to."""
    from ..errors import OutputExistsError
    from ..io.safe_write import is_temp_name
    if isinstance(e, OutputExistsError):
        return "output exists"
    reason = getattr(e, "reason", None)
    if reason:
        return str(reason)
    if isinstance(e, OSError) and e.strerror:
        name = e.filename
        if out is not None and (name is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                                or name is not None and is_temp_name(name)):
            name = out     # the output, not the temporary file it was being written as (gone now)
        return f"{e.strerror}" + (f": {name}" if name else "")
    if isinstance(e, MemoryError):
        return "out of memory (try a smaller --tile)"
    return str(e) or type(e).__name__


class NamedModels:
    """Models by name (or weights path), each loaded once on ``device`` in ``precision``:
    (model, the codec it was trained for).  A missing or bad file raises WeightsError."""

    def __init__(self, device, precision: Optional[str]):
        self.device, self.precision = device, precision
        self._models: Dict[str, tuple] = {}

    def __call__(self, name: str) -> tuple:
        if name not in self._models:
            from .loading import load_model, model_codec
            self._models[name] = (load_model(name, self.device, precision=self.precision), model_codec(name))
        return self._models[name]


def restore_files(files: Sequence[Tuple[Path, Optional[Path]]], models: NamedModels, *, model: str = "auto",
                  outdir: Optional[Path] = None, suffix: str = "_restored", fmt: str = "png",
                  quality: Optional[int] = None, tile: Optional[int] = None, overlap: Optional[int] = None,
                  ensemble: bool = False, overwrite: bool = False, guard: bool = True,
                  tile_progress: Optional[Callable[[Path], object]] = None, output: Optional[Path] = None):
    """Restore ``files`` (from :func:`collect_inputs`) one by one, yielding an :class:`Outcome`
    each: the batch of ``fastreshuffle restore``.  ``model``: a name or weights path, or "auto"
    (:func:`.loading.auto_model_name` per file).  An output that would replace an input, that is
    another input's output too or that is a folder fails ("failed", nothing written); one that
    exists (without ``overwrite``) is skipped ("skipped"); an output folder is checked writable
    once, before any image work in it; a file that
    fails (unreadable, bad weights, out of memory, ...) does not stop the batch -- an interrupt
    (KeyboardInterrupt) does, between or inside files, leaving no partial output.
    ``tile_progress(src)``: a context manager whose ``update(done, total)`` follows the pixels.
    ``output``: the output file of a single input (``outdir`` and ``suffix`` then unused), written
    in ``fmt``."""
    import contextlib

    from ..errors import OutputExistsError
    from ..io.output import EXTENSIONS, resolve_format
    from ..io.safe_write import check_output_folder
    from .loading import Bands, auto_model_name

    if output is not None and len(files) != 1:
        raise ValueError(f"an output file names the output of one input, not of {len(files)}")
    input_keys = {os.path.realpath(f) for f, _ in files}
    planned: Dict[str, Tuple[Path, str]] = {}   # output -> (its input, its format with --format same)
    writable = set()            # output folders a file could be created in
    for src, base in files:
        key = out = None
        try:
            in_fmt = sniff_format(src)
            out_fmt, fmt_note = resolve_format(fmt, in_fmt)
            name = model if model != "auto" else auto_model_name(in_fmt, in_fmt == "WEBP" and _lossy_webp_file(src))
            out = Path(output) if output is not None else output_path_for(src, base, outdir, suffix,
                                                                          EXTENSIONS[out_fmt])
            key = os.path.realpath(out)
            # no output for this input: "failed" where it cannot have one as asked (exit 1), "skipped"
            # where its output is already there (exit 0: a batch run again after an interruption)
            fail = skip = None
            if key in input_keys:
                fail = f"output {out} would replace an input file (change --suffix or -o)"
            elif key in planned:
                other, other_same_fmt = planned[key]
                # --format same helps where the two would then be written in different formats
                apart = fmt != "same" and resolve_format("same", in_fmt)[0] != other_same_fmt
                fail = (f"output {out} is also the output of {other} (same name): restore it again with another "
                        "--suffix" + (", or use --format same (each in its own format)" if apart else ""))
            if fail is None:
                planned[key] = (src, resolve_format("same", in_fmt)[0])
                if out.is_dir():
                    fail = f"output {out} is a folder (change --suffix or -o)"
                elif os.path.lexists(out) and not overwrite:
                    skip = f"output exists: {out} (use --overwrite)"
            if fail is not None or skip is not None:
                if planned.get(key, (None,))[0] == src and fail is not None:
                    del planned[key]    # nothing written: the name is free for the next input
                yield Outcome(src, "failed" if fail is not None else "skipped", [], fail or skip)
                continue
            if out.parent not in writable:   # once per output folder, before any image work; made
                check_output_folder(out.parent)  # when its first file is written (none left by a failure)
                writable.add(out.parent)
            net, codec = models(name)
            with (tile_progress(src) if tile_progress is not None else contextlib.nullcontext()) as tiles:
                notes, changed, band = restore_file(
                    net, src, out, fmt=out_fmt, quality=quality, tile=tile, overlap=overlap, ensemble=ensemble,
                    overwrite=overwrite, progress=tiles.update if tiles is not None else None, guard=guard,
                    codec=codec, bands=Bands(name, lambda m: models(m)[0]))
            said = [fmt_note] if fmt_note else []
            if quality is not None and out_fmt not in ("jpeg", "webp"):
                said.append(f"--output-quality does not apply to its {out_fmt.upper()} output (lossless)")
            yield Outcome(src, "restored" if changed else "same", said + notes, None, name, band)
        except KeyboardInterrupt:
            raise
        except OutputExistsError:   # written meanwhile (by another run into the same folder): as an
            #                         output found there at the start, a skip
            yield Outcome(src, "skipped", [], f"output exists: {out} (written while this one was restored; "
                                              "use --overwrite)")
        except Exception as e:  # one bad file never stops the batch
            if key is not None and planned.get(key, (None,))[0] == src:
                del planned[key]    # nothing written: the name is free for the next input
            yield Outcome(src, "failed", [], describe_error(e, out))
