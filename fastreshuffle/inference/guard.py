"""Do no harm: how much of the network's correction a JPEG gets, decided from its tables.

The shipped JPEG model was trained on qualities 5-50.  Above that it over-smooths: on 24
CBSD432 photos (Pillow 4:2:0) its raw output loses 0.49 dB at q80, 2.1 dB at q90 and 15 dB
at q95.  Two things make it safe, both driven by the file's own quantisation tables:

1. the correction is scaled by ``strength(quality)``: 1 up to q50 (the training range), 0.5 at
   q70-80, 0.25 at q85-90, 0 from q93 (the input is returned unchanged).  Each breakpoint is
   the strength, of 1 / 0.75 / 0.5 / 0.25, with the best *worst-image* gain on 24 CBSD432
   photos at that quality (``benchmarks/harm_curve.py --strengths``), linear in between.  The
   high-quality band ``jpeg-high`` (from :data:`.loading.JPEG_HIGH_MIN`) has a schedule of its own:
   1 up to q85, 0.75 at q90, 0.5 at q93, 0.25 at q95-97, 0 from q98 (the mid-quality band
   ``jpeg-mid``, from :data:`.loading.JPEG_MID_MIN`, the same: all of its correction in its band);
   for a file with no chroma subsampling (4:4:4, grey) 0.25 at q95-96 and 0 from q97, its
   quality read by the detail its luma table keeps where that is higher (:func:`guard_for`);
2. the result is projected onto the JPEG's quantisation intervals
   (:mod:`.jpeg_consistency`), which can only move it towards the original.

Measured on those 24 training photos with the general network alone (raw network -> guarded),
mean / worst image, dB: q60 +0.63/+0.06 -> +0.95/+0.67, q80 -0.49/-1.40 -> +0.77/+0.58, q90
-2.14/-3.81 -> +0.77/+0.48, q95 -14.9/-20.8 -> 0 (unchanged; since jpeg-high took the high qualities,
the shipped "jpeg" restores q93-97 too, at its schedule).  ``benchmarks/harm_curve.py`` measures
the curve on any folder (README: Kodak24, held out from these choices).
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from ..io.images import round_16_to_8
from ..io.jpeg_tables import IJG_CHROMA, IJG_LUMA, JpegTables, detail_quality, full_chroma, ijg_quality, ijg_table
from .jpeg_consistency import STRIP_ROWS, in_strips, project
from .jpeg_history import box_sum

__all__ = ["strength", "Guard", "guard_for", "Route", "route", "TABLES", "HEIF_QP", "BLIND", "UNGUARDED",
           "HEVC_QP_UNKNOWN", "HEVC_ON_JPEG", "blind_guard", "apply_guard", "run_guarded", "guard_pixels",
           "hevc_size_ratio", "hevc_strength", "hevc_qp_strength", "HevcDecision", "hevc_decision",
           "hevc_guarded", "hevc_guarded_file", "WEBP_Q", "WEBP_QUANT_UNKNOWN", "webp_strength", "WebpDecision",
           "webp_guarded", "webp_guarded_file", "blend", "chroma_share", "dithered", "for_picture",
           "DITHERED"]

# (quality, strength) breakpoints, linear in between.
_SCHEDULE = ((50.0, 1.0), (70.0, 0.5), (80.0, 0.5), (85.0, 0.25), (90.0, 0.25), (93.0, 0.0))
# The high-quality band "jpeg-high" (loading.JPEG_HIGH: the shipped JPEG model fine-tuned on
# quality 80-97) has its own, chosen the same way (the strength with the best worst-image gain)
# on the 8 CBSD432 photos held out of its training, shrunk 2x first: the CBSD432 files are JPEGs
# of quality 95 themselves, whose own coding noise is as large as a q90-95 copy's and made every
# strength lose at q95 at full size (benchmarks/harm_curve.py --reduce 2 --strengths; the figures
# in fastreshuffle/weights/README.md, "Quality bands").
_HIGH_SCHEDULE = ((85.0, 1.0), (90.0, 0.75), (93.0, 0.5), (95.0, 0.25), (97.0, 0.25), (98.0, 0.0))
# The mid-quality band "jpeg-mid" (loading.JPEG_MID: "jpeg-high" fine-tuned on quality 60-97) takes
# the same schedule: in its band (below loading.JPEG_HIGH_MIN) that is all of its correction, and
# asked for by name at q85-97 it was checked at these strengths (fastreshuffle/weights/README.md,
# "jpeg-mid").
_BAND_SCHEDULES = {"jpeg-high": _HIGH_SCHEDULE, "jpeg-mid": _HIGH_SCHEDULE}
# A JPEG file with no chroma subsampling (4:4:4, as ImageMagick writes from quality 90, or grey)
# has no chroma smear to undo, and near-lossless it lost where its 4:2:0 twin gains: IJG q97 4:4:4
# on the 8 held-out CBSD432 photos shrunk 2x, -0.075 dB in the mean, -0.163 worst, at a quarter of
# the correction (+0.128 worst at 4:2:0).  None of it from quality 97 on (a camera's flat tables:
# :func:`guard_for` reads them by the detail they keep); docs/restore.md, "4:4:4, grey and other
# encoders' tables" (benchmarks/other_tables.py).
_HIGH_SCHEDULE_FULL_CHROMA = ((85.0, 1.0), (90.0, 0.75), (93.0, 0.5), (95.0, 0.25), (96.0, 0.25), (97.0, 0.0))
_FULL_CHROMA_SCHEDULES = {"jpeg-high": _HIGH_SCHEDULE_FULL_CHROMA, "jpeg-mid": _HIGH_SCHEDULE_FULL_CHROMA}


# A 4:4:4 JPEG (colour at full resolution) keeps only part of the networks' colour correction
# (its luma keeps the whole): they learned on 4:2:0, where most of their colour correction undoes
# the smear of the halved chroma; with no smear to undo they smooth the colour they see -- and
# real colour texture with it.  Blotchy colour noise (a phone's night shot: Cb / Cr noise of 2-8 levels,
# smoothed over 1-2.5 px) came back worse at 4:4:4 q60-q90 (a helper's probe, 2026-12-08: 24 Kodak24
# crops and 6 outside ones, noise of 6 levels, q80 mean / worst +0.22 / -0.85 dB; darkened to 20 %
# with noise of 4, -0.38 / -0.74), while on the same photos without that noise the colour part
# of the gain at 4:4:4 from q60 is nil or below nothing: half of it gave the same mean or more.
# Per sampling, the share of the colour correction by quality (linear in between), from those
# crops and 15 whole photos (the 8 held-out CBSD432 ones, the 7 outside ones) with and without
# that noise (docs/quality.md, *Colour noise*).  Only 4:4:4 has one: 4:2:0 and 4:2:2 keep all of
# it, their colour correction undoing the smear of the halved chroma (half of it cost photos
# without noise 0.13 dB at 4:2:0 q80-q90, and at 4:2:2 q85-q97 0.03-0.08 dB of Kodak24's and the
# held-out photos' mean gain, the worst of other encoders' near-lossless tables a little more).
_CHROMA_SHARE = {(1, 1): ((45.0, 1.0), (60.0, 0.5), (80.0, 0.25))}     # 4:4:4


def chroma_share(quality: float, tables: Optional[JpegTables]) -> float:
    """The share of the colour (Cb, Cr) correction a JPEG of ``quality`` with ``tables`` keeps,
    relative to its luma's: 1 for 4:2:0, 4:2:2, grey and unknown chroma; less for 4:4:4 from q45
    (:data:`_CHROMA_SHARE`)."""
    if tables is None or tables.chroma is None:
        return 1.0
    schedule = _CHROMA_SHARE.get(tuple(tables.subsampling))
    if schedule is None:
        return 1.0
    return float(np.interp(quality, [q for q, _ in schedule], [s for _, s in schedule]))


def strength(quality: float, net=None, full_chroma: bool = False) -> float:
    """Share of the network's correction kept for a JPEG of (IJG-equivalent) ``quality`` restored
    by ``net``: a band with a schedule of its own (by name: "jpeg-high", "jpeg-mid"; its
    ``full_chroma`` one for a file with no chroma subsampling), else the general one (any other
    name, a weights file, a network, None)."""
    bands = _FULL_CHROMA_SCHEDULES if full_chroma else _BAND_SCHEDULES
    schedule = bands.get(net, _SCHEDULE) if isinstance(net, str) else _SCHEDULE
    return float(np.interp(quality, [q for q, _ in schedule], [s for _, s in schedule]))


class Guard(NamedTuple):
    tables: JpegTables
    quality: float            # IJG-equivalent quality of the luma table (of its detail: guard_for)
    strength: float           # 0 = the input is returned unchanged
    offset: tuple = (0, 0)    # where the coding units start (blind detection of a crop)
    blind: bool = False       # tables estimated from the pixels, not read from a file
    share: float = 1.0        # of the picture where JPEG history is (blind: see guard_pixels)
    chroma: float = 1.0       # of the colour correction, relative to the luma's (chroma_share)
    kept: str = ""            # why a picture is left as it is whatever its quality (DITHERED)


def guard_for(tables: Optional[JpegTables], model=None) -> Optional[Guard]:
    """The guard of a JPEG file with these tables (None: no tables) restored when ``model`` is
    asked for: the strength of the network of its quality's band (:func:`.loading.band_model`).
    The quality is the luma table's IJG quality; for a file with no chroma subsampling read as
    the high band's (from :data:`.loading.JPEG_HIGH_MIN`), the quality of the detail it kept
    where that is higher (:func:`.jpeg_tables.detail_quality`: an encoder's tables flatter than
    IJG's, taken by their overall size for IJG q93, lost up to 0.57 dB at 4:4:4 with the
    correction of q93)."""
    if tables is None:
        return None
    from .loading import JPEG_HIGH_MIN
    full = full_chroma(tables)
    q = ijg_quality(tables.luma)
    if full and q >= JPEG_HIGH_MIN:   # (below, the band would change too: not measured there)
        q = max(q, detail_quality(tables.luma))
    return Guard(tables, q, _band_strength(q, model, full), chroma=chroma_share(q, tables))


def _band_strength(quality: float, model, full_chroma: bool = False) -> float:
    from .loading import band_model
    net = band_model(model, quality=quality)
    if not isinstance(net, (str, os.PathLike)):   # a loaded model: the schedule of the name it was loaded by
        net = getattr(net, "weights_name", None)
    return strength(quality, net, full_chroma)


# Which guard restores an input: decided here once, for restore() (inference/restore.py),
# `fastreshuffle restore` (inference/files.py) and `fastreshuffle eval` (inference/evaluate.py).
TABLES, HEIF_QP, WEBP_Q, BLIND, UNGUARDED = "tables", "heif-qp", "webp-q", "blind", "unguarded"
HEVC_QP_UNKNOWN = ("not a HEIF file, so its HEVC QP is unknown: the full correction is applied, unguarded "
                   "(a never-compressed image is changed too)")
WEBP_QUANT_UNKNOWN = ("not a lossy still WebP file whose quantiser can be read (pixels, a lossless or animated WebP), "
                      "so its quantiser is unknown: the full correction is applied, unguarded (a never-compressed image "
                      "is changed too)")
HEVC_ON_JPEG = ("a JPEG file given to an HEVC model: restored under the JPEG guard (the jpeg model, "
                "--model auto, is the one trained for JPEG files)")
WEBP_ON_JPEG = ("a JPEG file given to a WebP model: restored under the JPEG guard (the jpeg model, "
                "--model auto, is the one trained for JPEG files)")


class Route(NamedTuple):
    kind: str                 # TABLES, HEIF_QP, WEBP_Q, BLIND or UNGUARDED
    note: Optional[str] = None


def route(codec: Optional[str], *, guard: Optional[bool] = None, jpeg_file: bool = False, tables: bool = False,
          heif: bool = False, webp: bool = False, named: bool = True) -> Route:
    """How an input is restored, from the codec the model was trained for (None: unknown) and what
    the input is: ``jpeg_file`` (opened from a JPEG file), ``tables`` (and its quantisation tables
    describe its pixels), ``heif`` (a HEIF file, or coded pixels, whose QP can be known), ``webp``
    (a lossy WebP file, or coded pixels, whose quantiser can be known).
    ``guard``: False (the network's output), True, or None for the default -- on for the JPEG
    model, for a JPEG file given to a model named or whose codec is known (not a network built in
    Python), for the HEVC model on a HEIF file, for the WebP model on a lossy WebP file.
    ``named``: the model was given by name or path.

    TABLES: the JPEG file's own tables, whichever model restores it; HEIF_QP: the QP's strength
    (the HEVC model on a HEIF file); WEBP_Q: the quantiser's strength (the WebP model on a lossy
    WebP file); BLIND: only where JPEG compression is found in the pixels (the JPEG model;
    another, not HEVC or WebP, asked to guard); UNGUARDED: the network's output -- with a note
    when a guard was wanted but an HEVC or WebP model has no quantiser to go by."""
    coded = {"hevc": heif, "webp": webp}
    if guard is not False and codec in coded and not coded[codec] and not tables:
        return Route(UNGUARDED, HEVC_QP_UNKNOWN if codec == "hevc" else WEBP_QUANT_UNKNOWN)
    if guard is None:
        guard = codec == "jpeg" or (jpeg_file and (codec is not None or named)) or bool(coded.get(codec))
    if not guard:
        return Route(UNGUARDED)
    if tables:
        return Route(TABLES, {"hevc": HEVC_ON_JPEG, "webp": WEBP_ON_JPEG}.get(codec))
    if heif and codec == "hevc":
        return Route(HEIF_QP)
    if webp and codec == "webp":
        return Route(WEBP_Q)
    return Route(BLIND)


def blind_guard(rgb: np.ndarray, model=None) -> Optional[Guard]:
    """The guard of pixels without a file (a PNG, an array): from :func:`.jpeg_history.detect_jpeg`;
    None when no JPEG history is found (then nothing should be changed).  The IJG tables of the
    quality found; the chroma ones only where the chroma sampling was established too (else only
    the luma is projected); the strength as :func:`guard_for`'s for ``model``."""
    from .jpeg_history import detect_jpeg
    h = detect_jpeg(rgb)
    if h is None:
        return None

    def table(base):
        t = ijg_table(h.quality, base).reshape(8, 8)
        return t.T if h.transposed else t
    chroma = (table(IJG_CHROMA), table(IJG_CHROMA)) if h.sampling else None
    tables = JpegTables(table(IJG_LUMA), chroma, h.sampling or (1, 1))
    # (the band's schedule for subsampled files whatever the sampling found: chroma None here is
    # "not established", not a grey file; blind detection stops near q92, below where they differ)
    return Guard(tables, float(h.quality), _band_strength(float(h.quality), model, False), h.mcu_offset, True,
                 chroma=chroma_share(float(h.quality), tables))


# The guard's strips (projection, uniform areas) run on this many threads at most: torch's thread
# count (`--threads`), up to 4.  A projection strip holds about 50 bytes a pixel of float64 planes
# (60 MB for 320 rows of a 4032-pixel-wide photo), so from 3 threads the strips are half as tall.
# A 12-megapixel JPEG q90's projection took 5.3 s on one thread before its chroma recovery moved to
# the small planes (c904c3c), 1.07 s after, 0.74 s on two threads (python -m benchmarks.bench_guard).
MAX_WORKERS = 4


def strip_workers() -> int:
    """Threads for the guard's strips: torch's thread count, at most :data:`MAX_WORKERS`."""
    import torch
    return max(1, min(torch.get_num_threads(), MAX_WORKERS))


def apply_guard(decoded: np.ndarray, restored: np.ndarray, guard: Guard) -> np.ndarray:
    """``decoded`` + strength x (``restored`` - ``decoded``), projected onto the JPEG's intervals,
    uniform areas kept (:func:`keep_uniform`), and a picture's flat cells (:func:`keep_cells`).
    Both H x W x 3 uint8 with the block grid at (0, 0)."""
    if guard.strength <= 0:
        return decoded.copy()
    n = strip_workers()
    projected = project(decoded, blend(decoded, restored, guard.strength, guard.chroma), guard.tables,
                        strip_rows=STRIP_ROWS if n <= 2 else STRIP_ROWS // 2, workers=n)
    kept = keep_uniform(decoded, projected, planar=True, workers=n)
    if guard.blind:     # (its DC step is the found quality's: q5 read as q10 made photos' blocks cells)
        return kept
    return keep_cells(decoded, kept, guard.tables.luma)


# Where the decoded picture is exactly uniform this far around a pixel (its block and the two blocks
# on every side), there is nothing to restore: the networks put a faint texture or a shift there (a
# flat black JPEG at q10 came back with values up to 6; flat crops of photos, which JPEG decodes
# exactly, lost up to 61 dB), and the pixel is kept as decoded.  On the 7 outside photos, whole, at
# JPEG q5-q90 (python -m benchmarks.small_images --full --qualities 5 10 20 30 50 75 90 --radius 4 8
# 16) radius 16 is the one never below the network alone: mean +1.70 / +1.76 / +1.03 / +1.10 /
# +0.67 / +0.45 / +0.22 dB -> +1.69 / +1.79 / +1.15 / +1.12 / +0.68 / +0.47 / +0.22, worst image at
# q50 / q75 / q90 +0.16 / +0.12 / -0.09 -> +0.34 / +0.21 / -0.07.  Radius 8 did more at q20-q90
# (worst at q50 +0.44) but cost q5 0.07 dB and a smooth sky at q10 0.06 dB (rocket: a gradient
# hidden in blocks of one DC value, which the network rebuilds); radius 16 costs q5 0.003 dB.
UNIFORM_RADIUS = 16


# A picture made of flat 8x8 cells -- a photo enlarged 8x or 16x by copying pixels (pixel art, a
# mosaic, a screenshot of a pixelated game), on the JPEG's grid -- decodes into flat blocks with sharp
# steps between them: JPEG's blocking, to the networks, which smoothed the steps.  Such pictures lost
# at every quality (a helper's probe, 2026-12-07: a q90 4:4:4 file that decodes exactly, 99 -> 51
# dB; five photos enlarged 8x and 16x, q10-q95: mean -0.15 to -2.0 dB, worst -8.3).
# How far can two neighbouring flat blocks (luma spread within _CELL_FLAT) of a smooth original be
# apart?  A ramp of s levels a pixel puts 18.2 s into the block's first AC coefficient across it,
# which is quantised away (the block decodes flat) while under half its step: s < step / 36.4, so
# the blocks' means differ by 8 s < 0.22 x the larger of the two first AC steps, plus up to one DC
# step / 8 from rounding each DC, plus a level of pixel rounding.  Two flat blocks further apart
# than _CELL_JUMP[0] x that AC step + the DC step / 8 + _CELL_JUMP[1] levels are cells: the step
# between them is in the picture (a first version with 1.5 DC steps / 8 + 1 took the steps of
# grey and radial gradients at q15-q52 for cells, and kept their blocking: up to 7 dB, a review).
# In a picture where at least _CELL_SHARE of the blocks are cells, every flat block is kept as
# decoded: never worse than the input there, so a photo taken for cells would only forgo the gain of
# its flat blocks.  So it is in a file of quality 58 or more (a DC step of _CELL_FLAT_DC or less)
# whose blocks are nearly all flat (_CELL_FLAT_SHARE): a smooth photo enlarged into cells has few
# steps that large (a fundus photo at q75: 2 % of its blocks; it decodes exactly, and came back at
# 58 dB), while whole photos from q50 on have at most 90 % of flat blocks (q75: 43 %).  JPEG files
# only: found in pixels (blind), the steps are the found quality's, and q5 read as q10 made photos'
# blocks cells.  The figures: python -m benchmarks.pixelated (docs/quality.md, *Pixelated pictures*).
_CELL_FLAT = 1.0
_CELL_JUMP = (0.3, 1.5)
_CELL_SHARE = 0.1
_CELL_FLAT_SHARE = 0.95
_CELL_FLAT_DC = 13


def _cell_jump(luma_table) -> float:
    """The step between two flat blocks (levels of their means) that no smooth original makes."""
    t = np.asarray(luma_table, np.float64).reshape(8, 8)
    return _CELL_JUMP[0] * max(t[0, 1], t[1, 0]) + t[0, 0] / 8 + _CELL_JUMP[1]


def cell_blocks(decoded: np.ndarray, luma_table) -> Tuple[np.ndarray, np.ndarray]:
    """(ceil(H / 8) x ceil(W / 8) bool, the same): the blocks of ``decoded`` (H x W x 3 uint8, the
    block grid at (0, 0); partial blocks at the edges as the encoder codes them, their last row and
    column repeated) that are flat and meet another flat block across a step of the picture (see
    above), and the flat ones.  ``luma_table``: the file's (64 values, natural order)."""
    h, w = decoded.shape[:2]
    hb, wb = -(-h // 8), -(-w // 8)
    flat = np.zeros((hb, wb), bool)
    mean = np.zeros((hb, wb), np.float32)
    rows = max(1, 4096 // max(1, wb))                 # block rows per strip: bounded memory
    for a in range(0, hb, rows):
        b = min(hb, a + rows)
        d = decoded[a * 8:b * 8].astype(np.float32)
        y = d[..., 0] * 0.299 + d[..., 1] * 0.587 + d[..., 2] * 0.114
        if y.shape != ((b - a) * 8, wb * 8):
            y = np.pad(y, ((0, (b - a) * 8 - y.shape[0]), (0, wb * 8 - w)), mode="edge")
        y = y.reshape(b - a, 8, wb, 8)
        flat[a:b] = (y.max(axis=(1, 3)) - y.min(axis=(1, 3))) <= _CELL_FLAT
        mean[a:b] = y.mean(axis=(1, 3))
    t = _cell_jump(luma_table)
    across = flat[:, 1:] & flat[:, :-1] & (np.abs(mean[:, 1:] - mean[:, :-1]) > t)
    down = flat[1:] & flat[:-1] & (np.abs(mean[1:] - mean[:-1]) > t)
    cells = np.zeros((hb, wb), bool)
    cells[:, 1:] |= across
    cells[:, :-1] |= across
    cells[1:] |= down
    cells[:-1] |= down
    return cells, flat


def keep_cells(decoded: np.ndarray, out: np.ndarray, luma_table) -> np.ndarray:
    """``out`` (changed in place and returned) with ``decoded``'s flat blocks in a picture made of
    flat cells: where at least :data:`_CELL_SHARE` of its blocks are cells (:func:`cell_blocks`),
    or, from a DC step of :data:`_CELL_FLAT_DC` down, :data:`_CELL_FLAT_SHARE` are flat, every flat
    block is kept, those between cells of about one level too (a q90 file that decoded exactly
    still lost 1.2 dB by them)."""
    cells, flat = cell_blocks(decoded, luma_table)
    fine = float(np.asarray(luma_table).reshape(-1)[0]) <= _CELL_FLAT_DC
    if cells.size == 0 or (cells.mean() < _CELL_SHARE and not (fine and flat.mean() >= _CELL_FLAT_SHARE)):
        return out
    w = decoded.shape[1]
    for i in np.flatnonzero(flat.any(axis=1)):        # block row by block row: no full-size mask
        cols = np.repeat(flat[i], 8)[:w]
        out[i * 8:i * 8 + 8][:, cols] = decoded[i * 8:i * 8 + 8][:, cols]
    return out


def _any_within(e: np.ndarray, r: int) -> np.ndarray:
    """Whether any pixel of boolean ``e`` within ``r`` pixels (a (2r+1)^2 square, cut at the
    edges) is True."""
    return box_sum(e, r, np.int32) > 0      # (a strip holds at most the 16384^2 pixels' limit)


def _any_channel(x: np.ndarray) -> np.ndarray:
    """``x.any(axis=2)`` for H x W x C booleans (H x W: ``x``), one channel at a time (several
    times faster than numpy's reduction over the last, short axis)."""
    if x.ndim == 2:
        return x
    out = x[..., 0].copy()
    for c in range(1, x.shape[2]):
        out |= x[..., c]
    return out


# With ``planar`` (the JPEG guard), a decoded picture that is a plane up to rounding -- every second
# difference along rows and columns within +-1, as a rounded linear ramp has -- counts as uniform
# too: JPEG has then coded it exactly or nearly (a grey ramp at q88-q90 decodes exactly; the network
# put its faint texture on it: 99 -> 67 dB), and the network has nothing to add.  Photos do not
# notice: on the 7 outside photos at q5-q90 (python -m benchmarks.small_images --full --planar)
# no mean and no worst image went down, and the six synthetic pictures of python -m
# benchmarks.graphics at q85 / q90 went from -0.001 / -5.41 dB mean to +0.08 / -0.10.  Not for HEIF files
# (HEVC at low quality leaves smooth planes where the photo had texture; not measured there).
# Negative: uniform only (for comparisons).
PLANAR_STEP = 1


def keep_uniform(decoded: np.ndarray, out: np.ndarray, radius: Optional[int] = None,
                 planar: bool = False, workers: int = 1) -> np.ndarray:
    """``out`` (changed in place and returned) with ``decoded``'s pixels wherever ``decoded`` is
    uniform -- no pixel differing from its neighbours -- within ``radius`` pixels (default
    :data:`UNIFORM_RADIUS`; negative: nothing kept, for comparisons); with ``planar``, wherever it is
    a rounded plane (:data:`PLANAR_STEP`), which includes uniform.  Worked in strips of rows, as
    :func:`.jpeg_consistency.project` (``workers`` at a time)."""
    radius = UNIFORM_RADIUS if radius is None else radius
    if radius < 0:
        return out
    h = decoded.shape[0]

    def strip(a: int) -> None:
        b = min(h, a + STRIP_ROWS)
        lo, hi = max(0, a - radius - 1), min(h, b + radius + 1)
        d = decoded[lo:hi]
        e = np.zeros(d.shape[:2], bool)
        if planar and PLANAR_STEP >= 0:     # a pixel where the picture bends by more than rounding
            d = d.astype(np.int16)
            e[:, 1:-1] |= _any_channel(np.abs(d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2]) > PLANAR_STEP)
            e[1:-1] |= _any_channel(np.abs(d[2:] - 2 * d[1:-1] + d[:-2]) > PLANAR_STEP)
        else:                               # a pixel that differs from a neighbour
            dx = _any_channel(d[:, 1:] != d[:, :-1])
            dy = _any_channel(d[1:] != d[:-1])
            e[:, 1:] |= dx
            e[:, :-1] |= dx
            e[1:] |= dy
            e[:-1] |= dy
        keep = ~_any_within(e, radius)[a - lo:b - lo]
        out[a:b][keep] = decoded[a:b][keep]
    in_strips(strip, range(0, h, STRIP_ROWS), workers)
    return out


# A black-and-white picture dithered into dots (a 1-bit picture: a fax, a newspaper halftone
# rendered by a program, a GIF's dither) came back worse at every JPEG quality: the networks took
# the dots for noise and smoothed them (a helper's probe, 2026-12-08: six scikit-image pictures of
# 256 px dithered by Pillow, q10-q95, all worse, -0.9 to -3.0 dB in the mean, worst -3.9).  Such a
# picture is left as it is: its luma is within _DITHER_LEVELS of black or white over
# _DITHER_NEAR of its pixels, and thresholded at mid-grey it changes between neighbours at
# _DITHER_CHANGES of them or more.  Measured on decoded JPEGs at q10 / q30 / q50 / q90
# (benchmarks/graphics.py --pictures dithered): dithered pictures are near black or white over
# 0.78-1.0 of their pixels (0.78 at q10) and change at 0.44-0.72 of them; photos (Kodak24, the 7
# outside ones, scikit-image's) and pictures thresholded to black and white, which gain, at most
# 0.15 (a text page 0.11); a silhouette dithered is as one thresholded (0.02), and gains.
# JPEG's (BT.601) luma weights, for the float32 luma of a picture or of a difference
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_DITHER_LEVELS = 48
_DITHER_NEAR = 0.75
_DITHER_CHANGES = 0.3
DITHERED = "a black-and-white picture dithered into dots"


def dithered(rgb: np.ndarray) -> bool:
    """Whether H x W x 3 uint8 ``rgb`` is a black-and-white picture dithered into dots (see
    above); judged on pairs of rows a quarter of the picture apart at most (a 12-megapixel photo:
    a few tens of ms)."""
    h = rgb.shape[0]
    if h < 2 or rgb.shape[1] < 2:
        return False
    step = 8 if h >= 64 else 2
    rows = np.arange(0, h - 1, step)
    y = rgb[np.concatenate([rows, rows + 1])].astype(np.float32) @ _LUMA
    near = float(((y <= _DITHER_LEVELS) | (y >= 255 - _DITHER_LEVELS)).mean())
    if near < _DITHER_NEAR:
        return False
    b = y >= 128
    n = len(rows)
    changes = ((b[:, 1:] != b[:, :-1]).mean() + (b[:n] != b[n:]).mean()) / 2
    return float(changes) >= _DITHER_CHANGES


def for_picture(g: Optional[Guard], rgb: np.ndarray) -> Optional[Guard]:
    """``g`` for the uint8 picture ``rgb`` it guards: strength 0, with the reason in ``kept``,
    where the picture is one the networks make worse whatever its quality (:func:`dithered`)."""
    if g is not None and g.strength > 0 and dithered(rgb):
        return g._replace(strength=0.0, kept=DITHERED)
    return g


def run_guarded(run: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, guard: Guard) -> np.ndarray:
    """Restore ``decoded`` with ``run`` under ``guard``: the coding units moved to (0, 0) by
    reflecting rows/columns at the top/left (so the network's 8x8 cells sit on the codec's blocks,
    and the chroma's coding units on the projection's), the guard applied, the padding cropped
    again.  Strength 0: ``run`` is not called."""
    if guard.strength <= 0:
        return decoded.copy()
    fv, fw = guard.tables.subsampling
    py, px = (-guard.offset[0]) % (8 * fv), (-guard.offset[1]) % (8 * fw)
    padded = decoded
    if py or px:
        padded = np.pad(decoded, ((py, 0), (px, 0), (0, 0)), mode="symmetric")
    out = apply_guard(padded, run(padded), guard)
    return np.ascontiguousarray(out[py:, px:])


def guard_pixels(run: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray,
                 tables: Optional[JpegTables] = None, *,
                 for_quality: Optional[Callable[[float], Callable[[np.ndarray], np.ndarray]]] = None,
                 model=None):
    """The guard for an H x W x 3 image of any dtype (uint8, uint16, float in [0, 1]) with the
    block grid at (0, 0) when ``tables`` are given: the file's tables, else JPEG compression
    detected in the 8-bit pixels.  ``run`` restores a uint8 image; ``for_quality(q)``, if given,
    is the ``run`` for the guard's quality instead (the shipped JPEG model's bands); ``model``:
    the model asked for, whose band for the quality sets the strength (:func:`guard_for`).  ->
    (result in ``rgb``'s dtype, the guard or None).  No guard or strength 0: ``rgb`` unchanged
    (a copy)."""
    dtype = rgb.dtype
    if dtype == np.uint8:
        u8 = np.ascontiguousarray(rgb)
    elif dtype == np.uint16:
        u8 = round_16_to_8(rgb)
    else:
        u8 = np.round(np.clip(rgb, 0, 1) * 255.0).astype(np.uint8)
    g = for_picture(guard_for(tables, model) or blind_guard(u8, model), u8)
    steps = None
    if g is not None and g.blind and g.strength > 0:
        from .jpeg_history import ijg_fits, picture_steps
        steps = picture_steps(u8, g.offset, g.tables.luma)
        if not ijg_fits(steps, g.tables.luma):  # another encoder's tables: the IJG guard is not safe
            g = g._replace(strength=0.0, share=0.0)
    if g is None or g.strength <= 0:
        return rgb.copy(), g
    out8 = run_guarded(for_quality(g.quality) if for_quality is not None else run, u8, g)
    if dtype == np.uint8:
        out = out8
    else:   # a value the guard left as it was keeps its own precision (it was cut to the 8-bit grid)
        out = out8.astype(np.uint16) * 257 if dtype == np.uint16 else (out8.astype(np.float64) / 255.0).astype(dtype)
        out = np.where(out8 == u8, rgb, out)
    if g.blind:   # found in the pixels: changed only where they show it (a photo in a screenshot)
        from .jpeg_history import history_mask
        known = g.tables.chroma is not None     # the chroma sampling was found; else 4:2:0 is checked
        where = history_mask(u8, g.offset, g.tables.luma, steps,
                             sampling=g.tables.subsampling if known else (2, 2),
                             chroma_offset=g.offset if known else None)
        if not where.all():
            out = np.where(where[..., None], out, rgb)
            g = g._replace(share=float(where.mean()))
    return out, g


# ---------------------------------------------------------------------------------- HEVC
# The HEVC model (trained on quality 8-30) gains up to quality 30 and harms above (raw mean /
# worst image on 8 CBSD432 photos: quality 40 -0.05/-0.40, 50 -0.97/-1.84, 60 -2.70/-4.12 dB).
# Per quality, the strength of 1 / 0.5 / 0.25 / 0 with the best worst-image gain on those photos:
# up to quality 20: 1, 30: 0.5, 40 and 50: 0.25, 60: 0.
#
# What the guard keys this on: the quantiser the file was coded with, read from its slice headers
# (io.heif_qp: x265 at libheif quality 10/15/20/30/40/50/60 codes slice QP 42/39/37/32/27/22/17,
# whatever the picture).  Files it cannot read fall back to a proxy: the file's size against a
# JPEG q90 of its own decoded pixels (on 8 CBSD432 photos, quality 10/20/30/40/50/60 gave ratios
# 0.07-0.09 / 0.11-0.15 / 0.18-0.31 / 0.31-0.51 / 0.52-0.71 / 0.76-0.94; the breakpoints sit at
# each quality's median).  The proxy depends on the content: a smooth picture compresses far better
# in HEVC than in JPEG and looks like a low quality (a colour wheel at quality 40: ratio 0.16,
# strength 0.92 instead of 0.25, -0.55 dB; a fundus photo -0.13 dB), which the QP does not.
_HEVC_QP_SCHEDULE = ((17.0, 0.0), (22.0, 0.25), (27.0, 0.25), (32.0, 0.5), (37.0, 1.0))
_HEVC_SCHEDULE = ((0.14, 1.0), (0.24, 0.5), (0.39, 0.25), (0.60, 0.25), (0.85, 0.0))


def hevc_size_ratio(nbytes: int, decoded: np.ndarray) -> float:
    """HEIF file size / size of ``decoded`` as JPEG q90 (4:2:0)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(decoded)).save(buf, format="JPEG", quality=90)
    return float(nbytes) / max(1, len(buf.getvalue()))


def hevc_strength(ratio: float) -> float:
    """Share of the HEVC model's correction kept at this :func:`hevc_size_ratio` (the fallback)."""
    return float(np.interp(ratio, [r for r, _ in _HEVC_SCHEDULE], [s for _, s in _HEVC_SCHEDULE]))


def hevc_qp_strength(qp: float) -> float:
    """Share of the HEVC model's correction kept for a file coded at slice QP ``qp``."""
    return float(np.interp(qp, [q for q, _ in _HEVC_QP_SCHEDULE], [s for _, s in _HEVC_QP_SCHEDULE]))


class HevcDecision(NamedTuple):
    strength: float
    qp: Optional[float]       # read from the file; None: the size ratio was used
    ratio: Optional[float]


def hevc_decision(decoded: np.ndarray, nbytes: int, qp: Optional[float] = None) -> HevcDecision:
    """How much of the HEVC model's correction a HEIF file gets: from its QP when known, else from
    :func:`hevc_size_ratio`."""
    if qp is not None:
        return HevcDecision(hevc_qp_strength(qp), float(qp), None)
    ratio = hevc_size_ratio(nbytes, decoded)
    return HevcDecision(hevc_strength(ratio), None, ratio)


def hevc_guarded(run: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, nbytes: int,
                 qp: Optional[float] = None,
                 for_qp: Optional[Callable[[float], Callable[[np.ndarray], np.ndarray]]] = None):
    """Restore a HEIF file's ``decoded`` pixels (``nbytes`` = the file's size, ``qp`` = its slice
    QP if read) with the strength of :func:`hevc_decision`; ``run`` is not called at strength 0.
    ``for_qp(qp)``, if given, restores instead of ``run`` when the QP is known (the model of that
    band, :func:`fastreshuffle.inference.loading.band_model`).  -> (result, :class:`HevcDecision`)."""
    d = hevc_decision(decoded, nbytes, qp)
    if d.strength <= 0:
        return decoded.copy(), d
    r = for_qp(d.qp) if (for_qp is not None and d.qp is not None) else run
    return keep_uniform(decoded, blend(decoded, r(decoded), d.strength), workers=strip_workers()), d


def hevc_guarded_file(run: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, data: bytes,
                      for_qp: Optional[Callable[[float], Callable[[np.ndarray], np.ndarray]]] = None):
    """:func:`hevc_guarded` for a HEIF file's bytes ``data``: its size and the QP read from it."""
    from ..io.heif_qp import heif_qp
    return hevc_guarded(run, decoded, len(data), heif_qp(data), for_qp)


# ---------------------------------------------------------------------------------- WebP
# The WebP model's share of its correction, keyed on the luma AC quantiser index (0-127) the file
# was coded with, averaged over its segments (io.webp_quant; libwebp at Pillow quality 30 / 40 / 50
# / 60 / 75 / 80 / 88 / 90 codes a mean index of 51 / 44 / 37.7 / 32.4 / 25.3 / 19.1 / 10.4 / 8.4 on
# photos, within about 1 whatever the photo).  Per quality, the strength of 1 / 0.75 / 0.5 / 0.25 / 0
# with the best worst-image gain on the 8 CBSD432 photos held out of its training, shrunk 2x (the
# CBSD432 files are JPEGs of quality 95, whose own noise would be scored at full size; chosen as
# the JPEG and HEVC schedules, `python -m benchmarks.harm_curve --data DIR --reduce 2 --codec webp
# --model webp --strengths`): 1 up to about q30, 0.75 at q40-50, 0.5 at q60-75, 0.25 at q80-88, none
# from q90 (a quarter lost up to 0.10 dB there, at q95); fastreshuffle/weights/README.md, *webp*.
_WEBP_SCHEDULE = ((9.0, 0.0), (10.5, 0.25), (19.0, 0.25), (25.0, 0.5), (32.5, 0.5), (37.5, 0.75), (44.0, 0.75),
                  (51.0, 1.0))


# A share under this is none: just above the schedule's first point (a flat or dark picture at q90
# reads 9.0-9.2, a segment of a few macroblocks at index 10 beside the rest at 9) the network ran for
# a correction that rounding took away, and the note said "1% of the correction" of a file passed through.
_WEBP_MIN_SHARE = 0.05


def webp_strength(index: float) -> float:
    """Share of the WebP model's correction kept for a file of mean luma AC quantiser ``index``."""
    s = float(np.interp(index, [q for q, _ in _WEBP_SCHEDULE], [s for _, s in _WEBP_SCHEDULE]))
    return s if s >= _WEBP_MIN_SHARE else 0.0


class WebpDecision(NamedTuple):
    strength: float
    index: float              # the mean luma AC quantiser index read from the file


def webp_guarded(run: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, index: float):
    """Restore a lossy WebP file's ``decoded`` pixels, coded at mean luma AC quantiser ``index``
    (:func:`fastreshuffle.io.webp_quant.webp_quant`), with :func:`webp_strength`'s share of the
    correction; ``run`` is not called at strength 0.  -> (result, :class:`WebpDecision`)."""
    d = WebpDecision(webp_strength(index), float(index))
    if d.strength <= 0:
        return decoded.copy(), d
    return keep_uniform(decoded, blend(decoded, run(decoded), d.strength), workers=strip_workers()), d


def webp_guarded_file(run: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, data: bytes):
    """:func:`webp_guarded` for a lossy WebP file's bytes ``data`` (None where its quantiser
    cannot be read: the caller routes such a file elsewhere, :func:`route`)."""
    from ..io.webp_quant import webp_quant
    q = webp_quant(data)
    if q is None:
        return None
    return webp_guarded(run, decoded, q.index)


def blend(decoded: np.ndarray, restored: np.ndarray, s: float, chroma: float = 1.0) -> np.ndarray:
    """``decoded + s * (restored - decoded)``, rounded to the input's integer type; with ``chroma``
    under 1, the colour part of the difference (in JPEG's YCbCr: the difference less its luma on
    every channel) scaled by it too."""
    if s >= 1 and chroma >= 1:
        return restored
    if s <= 0:
        return decoded.copy()
    top = 255 if decoded.dtype == np.uint8 else 65535
    out = np.empty_like(decoded)
    for a in range(0, decoded.shape[0], STRIP_ROWS):     # float temporaries of a strip, not the image
        d = decoded[a:a + STRIP_ROWS]
        diff = restored[a:a + STRIP_ROWS].astype(np.float32) - d
        if chroma < 1:
            luma = diff @ _LUMA
            diff = chroma * diff + (1 - chroma) * luma[..., None]
        out[a:a + STRIP_ROWS] = np.clip(np.round(d + s * diff), 0, top)
    return out
