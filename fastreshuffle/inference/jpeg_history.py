"""Blind JPEG detection: was this array (a PNG, a screenshot, a crop) once a JPEG, on which
8x8 grid, and at about which quality?

A JPEG's luma DC coefficients are multiples of the table's DC step ``q``: the block means of the
decoded luma, on the codec's grid, sit on a lattice of spacing ``q / 8``.  For each of the 64 grid
offsets and each candidate step, the score is ``|mean(exp(2 pi i DC / q))|`` over the blocks with
texture (flat blocks are left out: a flat graphic repeats the same value everywhere and would
look periodic at every offset).  A JPEG gives a score near 1 at one offset; a never-compressed
photo gives noise at every offset.  The quality is then the IJG quality whose table best explains
the first AC coefficients as well, and at least two of them must sit on their lattices too
(with values spread over several steps: a ramp or a repeated pattern does not count), else no
claim is made.  A claim needs a score clearly above what random phases give over as many
blocks (:func:`_needed`: the fixed bars where blocks are few, down to 0.2 for a photo's
thousands): the 8-bit rounding of the pixels blurs the lattices of small steps, and with fixed
bars half of Kodak24 at q85 and all of it at q90 went unfound.  DC steps under 3 (IJG quality 93
and above) are not claimed: the rounding hides them.

Chroma: with the luma grid and quality found, each chroma sampling (4:4:4, 4:2:2 either way,
4:2:0) and each phase of its coding unit (16 pixels on a subsampled axis) is tried: the chroma
planes are recovered at their coded resolution (undoing libjpeg's upsampling,
:func:`.jpeg_consistency._recover_plane`) and their DC and first AC coefficients scored on the
lattices of the IJG chroma table of that quality.  The sampling is claimed only when one
hypothesis clearly wins (score >= 0.5 and 0.1 ahead of every other); else chroma stays unknown
and only the luma is constrained, as before.  On Kodak24 crops off the grid, JPEG q10-85 with
4:2:0, 4:2:2 and 4:4:4, every claim made was the right sampling and phase.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..io.jpeg_tables import IJG_CHROMA, ijg_table
from .jpeg_consistency import _DCT, _N, _blocks as _plane_blocks, _recover_plane, _to_ycc, _ycc_plane, neighbours

__all__ = ["JpegHistory", "detect_jpeg", "tables_fit", "picture_steps", "ijg_fits", "history_mask", "box_sum"]

_MIN_STEP, _MAX_STEP = 3, 96
_MIN_BLOCKS = 48        # textured blocks needed at an offset (fewer: no claim)
_THRESHOLD = 0.6        # score of the best (offset, step) ...
_AC_THRESHOLD = 0.5     # ... and of an AC position on its lattice, where samples are few; with more,
_FLOOR = 0.2            # down to this, as long as n samples give score**2 * n >= _SIGNIFICANCE
_SIGNIFICANCE = 40.0    # (n unit phasors of random phase: P(score >= s) ~ exp(-n s^2) = e^-40)
_CONTRAST = 3.0         # ... and this many times the same step's mean score at the other offsets
_AC = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0))   # natural-order positions checked for the quality
_SAMPLINGS = ((1, 1), (1, 2), (2, 1), (2, 2))    # chroma downsampling (vertical, horizontal) tried
_CHROMA_CROP = 256                               # pixels per side scored for the chroma sampling
_CHROMA_MIN, _CHROMA_MARGIN = 0.5, 0.1           # claim: best score, and its lead over the rest


class JpegHistory(NamedTuple):
    offset: tuple        # (dy, dx): the codec's 8x8 grid starts at this pixel
    dc_step: int         # luma DC quantisation step found
    quality: int         # IJG quality whose luma table fits best
    score: float         # periodicity at the found offset and step (0..1); for a claim moved onto a
    #                      coarser grid (_coarser_grid), the mean cos of its block means on that lattice
    transposed: bool = False  # the table fits transposed: the pixels were turned by 90 degrees
    sampling: Optional[tuple] = None  # chroma downsampling (v, h) found; None: not established
    mcu_offset: Optional[tuple] = None  # where the coding units (8 x sampling pixels) start


def _luma(rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def _blocks(y: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = (y.shape[0] - dy) // _N * _N, (y.shape[1] - dx) // _N * _N
    return y[dy:dy + h, dx:dx + w].reshape(h // _N, _N, w // _N, _N).transpose(0, 2, 1, 3).reshape(-1, _N, _N)


def _score(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(len(steps))
    return np.abs(np.exp(2j * np.pi * values[None, :] / steps[:, None]).mean(axis=1))


def _local_peaks(at: np.ndarray) -> np.ndarray:
    left = np.r_[-1.0, at[:-1]]
    right = np.r_[at[1:], -1.0]
    return np.nonzero((at >= left) & (at >= right))[0]


def detect_jpeg(rgb: np.ndarray, probe_blocks: int = 400, max_blocks: int = 4000) -> Optional[JpegHistory]:
    """The JPEG history of an H x W x 3 uint8 image, or None when none is found.

    Two passes: every grid offset is probed with ``probe_blocks`` textured blocks, then the four
    most periodic offsets are scored again with up to ``max_blocks``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 4 * _N:
        return None
    h, w = rgb.shape[:2]
    y0, x0 = max(0, (h - 1024) // 2) // 16 * 16, max(0, (w - 1024) // 2) // 16 * 16  # keeps the phase
    region = rgb[y0:y0 + 1024, x0:x0 + 1024]
    y = _luma(region) - 128
    steps = np.arange(_MIN_STEP, _MAX_STEP + 1, dtype=np.float64)
    rng = np.random.default_rng(0)
    probe = np.zeros((_N * _N, len(steps)))
    textured = []
    for i in range(_N * _N):
        b = _blocks(y, i // _N, i % _N)
        b = b[b.std(axis=(1, 2)) > 1.5]
        textured.append(b)
        if len(b) >= _MIN_BLOCKS:
            pick = b if len(b) <= probe_blocks else b[rng.choice(len(b), probe_blocks, replace=False)]
            probe[i] = _score(pick.mean(axis=(1, 2)) * _N, steps)
    best = None   # (fit, offset index, step, quality, DC score, transposed)
    for i in np.argsort(-probe.max(axis=1))[:4]:
        b = textured[i]
        if len(b) < _MIN_BLOCKS:
            continue
        if len(b) > max_blocks:
            b = b[rng.choice(len(b), max_blocks, replace=False)]
        found = _candidate(b, probe, int(i), steps)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    if best is None:
        return None
    _, i, step, quality, score, transposed = best
    if score < _THRESHOLD and score < _CONTRAST * _best_rival(textured, i, step, max_blocks):
        return None
    coarser = _coarser_grid(y, textured, i, step, transposed, rng, max_blocks)
    if coarser is not None:
        i, step, quality, score, transposed = coarser
    offset = (i // _N, i % _N)
    sampling, mcu = _chroma_sampling(region, offset, quality, transposed)
    return JpegHistory(offset, step, quality, score, transposed, sampling, mcu if sampling else offset)


def _cos_fit(values: np.ndarray, step: float) -> float:
    """How well ``values`` sit on the multiples of ``step`` (mean cos: 1 on them, ~0 at random;
    not the periodicity's magnitude, for which a single repeated value fits every step)."""
    return float(np.cos(2 * np.pi * values / step).mean()) if values.size else 0.0


def _coarser_grid(y: np.ndarray, textured, i: int, step: int, claimed_transposed: bool, rng, max_blocks: int):
    """The codec's own grid where a claim landed beside it, or None.

    On smooth pictures at low quality most of the codec's blocks are flat (their DC alone) and
    are left out of the search as flat graphics would be; the few textured blocks left at the
    codec's grid are then fewer than :data:`_MIN_BLOCKS`, and a grid ``d`` pixels off wins
    instead: its blocks straddle two flat ones, whose means mix with weights ``(8 - d) / 8`` and
    ``d / 8`` -- the lattice of the step divided by 8 / gcd(d, 8), ACs included, so the claim was
    of a higher quality (q10 taken for q40 two rows off, q20 for q68 on Kodak24 crops).  Such a
    grid is found by what the claim cannot explain: all the blocks there, flat ones included, sit
    on a lattice ``k`` (2, 4, 8, ...) times as coarse, which the claimed grid's textured blocks do
    not (mean cos over the block means x 8, >= 0.8 there, < 0.5 at the claim).  The quality is
    then the IJG table of that DC step that best explains the coefficients there (the lowest that
    fits the DC alone where no AC says anything; the claim's orientation is kept then).  Only
    grids with under 90 % of the claim's textured blocks are tried (more of the codec's blocks are
    flat there than anywhere else): on a photo with texture everywhere the counts are alike and
    nothing is tried.  Blocks whose mean is within half a claimed step of mid-grey (DC near 0)
    sit on every lattice: the others must fit the coarser one too (mean cos >= 0.5, 8 of them at
    least)."""
    claimed_dc = textured[i].mean(axis=(1, 2)) * _N
    coarser = [step * k for k in (2, 4, 8, 16, 32) if step * k <= 255 and _cos_fit(claimed_dc, step * k) < 0.5]
    best = None
    for j in range(_N * _N if coarser else 0):
        if j == i or len(textured[j]) >= 0.9 * len(textured[i]):
            continue
        b = _blocks(y, j // _N, j % _N)
        if len(b) < _MIN_BLOCKS:
            continue
        if len(b) > max_blocks:
            b = b[rng.choice(len(b), max_blocks, replace=False)]
        dc = b.mean(axis=(1, 2)) * _N
        away = dc[np.abs(dc) >= step / 2]    # not mid-grey: a DC near 0 sits on every lattice
        if away.size < _MIN_BLOCKS // 6:
            continue
        fits = {c: _cos_fit(dc, c) for c in coarser}
        # the coarsest lattice fitting about as well as the best, and not by its mid-grey blocks alone
        bar = max(0.8, 0.95 * max(fits.values()))
        coarse = max((c for c, f in fits.items() if f >= bar and _cos_fit(away, c) >= 0.5), default=None)
        if coarse is not None and (best is None or (coarse, fits[coarse]) > (best[1], best[2])):
            best = (j, coarse, fits[coarse], b)
    if best is None:
        return None
    j, coarse, fit, b = best
    table_fit, quality, ac_ok, transposed = _quality(_DCT @ b @ _DCT.T, coarse)
    if table_fit < 0:       # no IJG table has that DC step
        return None
    return j, coarse, int(quality), fit, transposed if ac_ok else claimed_transposed


def _best_rival(textured, i: int, step: float, max_blocks: int) -> float:
    """The best score at ``step`` of the grid offsets other than ``i`` (each on up to
    ``max_blocks`` of its textured blocks).  A claim admitted under the fixed bar by many blocks
    (:func:`_needed`) must also stand alone: a JPEG's lattice is on its own grid only (runners-up
    scored 6-26 times less on Kodak24 at q75-92), while a photo enlarged 8x by repeating pixels
    scored 0.5 at step 11 on the four offsets around each block edge -- a claim of q65 one pixel
    off the grid against a mean of the other offsets small enough to pass ``_CONTRAST``."""
    return max((float(_score(t[:max_blocks].mean(axis=(1, 2)) * _N, np.array([float(step)]))[0])
                for j, t in enumerate(textured) if j != i and len(t) >= _MIN_BLOCKS), default=0.0)


def tables_fit(rgb: np.ndarray, luma_table: np.ndarray, max_blocks: int = 4000) -> bool:
    """Whether an image said to be a JPEG with this luma table still looks like one: the block
    means of its luma on the grid from (0, 0) sit on the lattice of the table's DC step, clearly
    more than on the 63 other grids (``_CONTRAST`` times their mean score; the absolute score at
    fine steps is only 0.3-0.9 on real JPEGs).  A PIL JPEG resized or painted in place keeps the
    file's tables, which then describe other pixels.  No verdict without evidence (steps under 3,
    which 8-bit pixels hide, or too few textured blocks): True."""
    step = float(np.asarray(luma_table, np.float64).reshape(-1)[0])
    if step < _MIN_STEP or rgb.ndim != 3 or min(rgb.shape[:2]) < 4 * _N:
        return True
    y = _luma(rgb[:1024, :1024]) - 128
    rng = np.random.default_rng(0)
    scores = []
    for i in range(_N * _N):
        b = _blocks(y, i // _N, i % _N)
        b = b[b.std(axis=(1, 2)) > 1.5]
        if i == 0 and len(b) < _MIN_BLOCKS:
            return True
        if len(b) > max_blocks:
            b = b[rng.choice(len(b), max_blocks, replace=False)]
        scores.append(_score(b.mean(axis=(1, 2)) * _N, np.array([step]))[0] if len(b) else 0.0)
    return bool(scores[0] >= _CONTRAST * max(float(np.mean(scores[1:])), 0.05))


def _chroma_fit(rgb: np.ndarray, start, quality: int, sampling, transposed: bool) -> float:
    """How well the chroma planes of ``rgb``, coded from ``start`` with ``sampling`` at IJG
    ``quality``, sit on their quantisation lattices (0..1; DC and the first two ACs, Cb and Cr)."""
    fv, fw = sampling
    a = rgb[start[0]:, start[1]:]
    h = min(a.shape[0] // (_N * fv) * _N * fv, _CHROMA_CROP)
    w = min(a.shape[1] // (_N * fw) * _N * fw, _CHROMA_CROP)
    if h < 2 * _N * fv or w < 2 * _N * fw:
        return 0.0
    t = ijg_table(quality, IJG_CHROMA).reshape(_N, _N)
    t = t.T if transposed else t
    ycc = _to_ycc(a[:h, :w])
    scores = []
    for plane in ycc[1:]:
        c = (_DCT @ _plane_blocks(_recover_plane(plane, fv, fw) - 128) @ _DCT.T).reshape(-1, _N, _N)
        for u, v in ((0, 0), (0, 1), (1, 0)):
            x = c[:, u, v]
            if u or v:
                x = x[np.abs(x) > 0.5 * t[u, v]]   # coefficients that were not quantised to zero
            if x.size >= 16:
                scores.append(_score(x, np.array([t[u, v]]))[0])
    return float(np.mean(scores)) if scores else 0.0


def _chroma_sampling(rgb: np.ndarray, offset, quality: int, transposed: bool):
    """-> (sampling, coding-unit offset) of the clearly best chroma hypothesis, or (None, None)."""
    fits = []
    for fv, fw in _SAMPLINGS:
        for py in range(fv):
            for px in range(fw):
                start = (offset[0] + _N * py, offset[1] + _N * px)
                fits.append((_chroma_fit(rgb, start, quality, (fv, fw), transposed), (fv, fw), start))
    fits.sort(key=lambda f: -f[0])
    (best, sampling, start), runner_up = fits[0], fits[1][0]
    if best < _CHROMA_MIN or best - runner_up < _CHROMA_MARGIN:
        return None, None
    return sampling, start


def _needed(threshold: float, n: int) -> float:
    """The lattice score that counts as a claim over ``n`` samples: ``threshold``, or less where
    there are many samples -- down to ``_FLOOR``, while still ``_SIGNIFICANCE`` / n in its square
    (random phases score about 1 / sqrt(n): at the 2,000-4,000 blocks of a photo, 0.02).  At IJG
    quality 80-92 the 8-bit rounding of the pixels blurs the lattices of the small steps (DC 3-6,
    first ACs 2-4): the scores on Kodak24 at q85 were 0.38-0.72 (DC) and at q90 0.21-0.46 (DC),
    0.25-0.69 (ACs), against 0.00-0.03 on the never-compressed photos."""
    return min(threshold, max(_FLOOR, float(np.sqrt(_SIGNIFICANCE / max(n, 1)))))


def _candidate(b: np.ndarray, probe: np.ndarray, i: int, steps: np.ndarray):
    """Blocks ``b`` at grid offset ``i``: -> (fit, i, DC step, quality, DC score, transposed) or None.

    The fit adds the AC lattice scores to the DC one, so that of two neighbouring offsets (on
    smooth, heavily quantised content the DC values barely change when the grid moves by a
    pixel) the codec's own grid, where the ACs line up too, wins."""
    at = _score(b.mean(axis=(1, 2)) * _N, steps)
    s_best = float(at.max())
    if s_best < _needed(_THRESHOLD, len(b)):
        return None
    k = int(np.argmax(at))
    others = np.delete(probe[:, k], i)
    if s_best < _CONTRAST * max(others.mean(), 1e-3):
        return None
    # the true step, not one of its divisors: the largest local peak scoring nearly as well
    peaks = [j for j in _local_peaks(at) if at[j] >= 0.9 * s_best]
    step = int(steps[max(peaks)])
    best_fit, best_q, best_ac, best_t = _quality(_DCT @ b @ _DCT.T, step)
    # the AC steps must confirm it: a JPEG's first AC coefficients are on their lattices too
    if best_ac < 2:
        return None
    return best_fit, i, step, int(best_q), s_best, best_t


def _quality(coefs: np.ndarray, step: float):
    """-> (fit, quality, AC positions confirmed, transposed): the IJG table with (about) this DC
    ``step`` that best explains the block DCT coefficients ``coefs`` (n x 8 x 8)."""
    dc = coefs[:, 0, 0]
    best_q, best_fit, best_ac, best_t = 50, -1.0, 0, False
    for quality in range(1, 101):
        t0 = ijg_table(quality).reshape(_N, _N)
        if abs(t0[0, 0] - step) > max(1.0, 0.05 * step):
            continue
        for transposed, t in ((False, t0), (True, t0.T)):  # a JPEG turned by 90 degrees: table transposed
            fit = _score(dc, np.array([t[0, 0]]))[0]
            ac_ok = 0
            for (u, v) in _AC:
                c = coefs[:, u, v]
                c = c[np.abs(c) > 0.5 * t[u, v]]  # coefficients that were not quantised to zero
                if c.size < 32 or np.std(c / t[u, v]) < 1.0:  # too few, or all alike (a ramp, a pattern)
                    continue
                sc = _score(c, np.array([t[u, v]]))[0]
                fit += sc
                ac_ok += sc > _needed(_AC_THRESHOLD, c.size)
            # neighbouring qualities can share the DC and first AC steps (74 and 75, 49-51, 90 and
            # 91, 96-100): the pixels cannot tell them apart; a multiple of 5 is taken then (75 is
            # Pillow's and libjpeg's default, 50 / 90 the usual settings), else the lowest
            if fit > best_fit or (fit == best_fit and quality % 5 == 0 and best_q % 5 != 0):
                best_q, best_fit, best_ac, best_t = quality, fit, ac_ok, transposed
    return best_fit, best_q, best_ac, best_t


# ------------------------------------------------------------------ where the history is
# A picture can hold a JPEG in part only: a screenshot of a page with a photo, a collage, a meme's
# caption drawn on a decoded JPEG.  Found anywhere, the history used to be restored everywhere,
# and the never-compressed parts (crisp text, flat bars) came back changed by up to 80 levels.
# :func:`history_mask` says where the history is.  A decoded JPEG block is what its own
# quantisation gives back: its luma, transformed, rounded to the table's steps and transformed
# back (clipped to 0..255, as the decoder does), moves by 0.3 levels on average (99 % of the blocks
# of 12 CBSD432 photos at q10-q85 under 1.1); a block of text drawn on a page moves by 10-15.  A
# block is taken for JPEG where it moves by at most 1.5 levels; flat blocks (luma spread under 1)
# and blocks with a colour clipped in one or two channels (their luma cannot follow the
# decoder's clipping of each channel) say nothing either way; a block's neighbourhood is JPEG
# where at least half of the blocks within 2 of it that say something are, else the blocks within
# 6 decide, else the whole picture's finding does (docs/restore.md has the measurements).  The
# steps are the found IJG table's, or near them where the picture's coefficients sit on other
# ones; where a step is still off, its blocks move more and the picture is restored less -- never
# more than before.  A picture whose steps are mostly not the IJG table's is not restored at all
# (:func:`ijg_fits`).
_MASK_MOVE = 1.5            # levels (mean over the block) a JPEG block moves at most when requantised
_MASK_FLAT = 1.0            # luma spread under which a block says nothing
_MASK_RADII = (6, 2)        # blocks: the nearest evidence decides
# A block that moves by more than 0.15 x the luma DC step + 1.5 levels is not JPEG-coded whatever its
# neighbours are, and neither are the blocks within 2 of it (the network's correction there leans on
# it): marks drawn on a decoded JPEG (a line, text: python -m benchmarks.annotations) were restored
# with the blocks around them and smeared, the whole picture losing up to 3.7 dB (q90).  The limit
# follows the steps: JPEG blocks near clipped colours move more at low quality (the most over 22
# photos, 4:2:0 and 4:4:4: 10.6 levels at q5, 7.8 at q10 (limit 13.5), 3.5 at q40 (4.5), 2.7 at q50
# (3.9), 1.7 at q75 (2.7), 0.6 at q90 (1.95)), while the marks move by 2-20 (a flat limit of 3 cost
# astronaut at q10 as pixels 0.11 dB; 2 levels instead of 1.5 let marks through at q90: -4.8 dB
# near them).  docs/quality.md, *Annotated pictures*.
_MASK_VETO = (0.15, 1.5)
_MASK_VETO_TINTED = 2.0     # x the limit for a block with a colour clipped in one or two channels
_MASK_VETO_AROUND = 2


def _refined_step(c: np.ndarray, step: float) -> Optional[float]:
    """The lattice step of coefficients ``c``: ``step`` where they sit on its multiples, else the
    step near it (0.8-1.25x) they sit on best; None when none fits (a mean cos under 0.5), or too
    few coefficients to tell.  Scored on the multiples themselves (mean of cos, not the
    periodicity's magnitude: a single repeated value has a strong period at any step)."""
    c = c[np.abs(c) > 0.5 * step][:20000]
    if c.size < 32:
        return None
    if _cos_fit(c, step) >= 0.5:
        return float(step)
    steps = np.arange(max(2.0, np.floor(0.8 * step)), np.ceil(1.25 * step) + 1)
    fits = [_cos_fit(c, s) for s in steps]
    k = int(np.argmax(fits))
    return float(steps[k]) if fits[k] >= 0.5 else None


def picture_steps(rgb: np.ndarray, offset, luma_table) -> np.ndarray:
    """8 x 8: the luma steps the picture's coefficients sit on, on its grid at ``offset``, each at
    or near ``luma_table``'s (a camera's or an editor's tables are not IJG's), NaN where none is
    found (too few coefficients, or none fits): from up to ~20,000 textured, unclipped blocks."""
    table = np.asarray(luma_table, np.float64).reshape(_N, _N)
    out = np.full_like(table, np.nan)
    oy, ox = offset[0] % _N, offset[1] % _N
    hb, wb = (rgb.shape[0] - oy) // _N, (rgb.shape[1] - ox) // _N
    if hb < 1 or wb < 1:
        return out
    every = max(1, int(np.ceil(hb * wb / 20000)))
    rows = np.arange(0, hb, max(1, int(np.sqrt(every))))
    cols = np.arange(0, wb, max(1, int(np.ceil(every / max(1, int(np.sqrt(every)))))))
    px = rgb[oy:oy + hb * _N, ox:ox + wb * _N].reshape(hb, _N, wb, _N, 3)[rows][:, :, cols]
    ok = ~((px == 0) | (px == 255)).any(axis=(1, 3, 4))
    y = _luma(px.transpose(0, 2, 1, 3, 4).reshape(-1, _N, _N, 3))[ok.reshape(-1)] - 128
    y = y[y.std(axis=(1, 2)) > 1.5]
    if len(y) < 32:
        return out
    c = _DCT @ y @ _DCT.T
    for u in range(_N):
        for v in range(_N):
            step = _refined_step(c[:, u, v], table[u, v])
            if step is not None:
                out[u, v] = step
    return out


def ijg_fits(steps: np.ndarray, luma_table) -> bool:
    """Whether the picture's luma steps (:func:`picture_steps`) are those of ``luma_table`` (the
    IJG table its DC step and first ACs pointed to) wherever a step can be told: at most a quarter
    of them (and at most 2) elsewhere.  Decoded IJG JPEGs (libjpeg, Pillow, most programs) give
    none elsewhere; Photoshop-style tables (Pillow's ``medium`` / ``high`` presets) 11-15 of
    ~22, and restored as the IJG quality that fits best they lost up to 1.06 dB (kodim13)."""
    table = np.asarray(luma_table, np.float64).reshape(_N, _N)
    known = ~np.isnan(steps)
    off = int((known & (steps != table)).sum())
    return off <= 2 or 4 * off <= int(known.sum())


# Chroma: libjpeg (and so Pillow, browsers, most programs) decodes subsampled chroma with its
# "fancy" upsampling, each full-size sample 3/4 of the nearest coded one and 1/4 of the next, so the
# chroma of a decoded 4:2:0 JPEG is that upsampling of some small plane, up to rounding: over 14
# photos (6 outside ones and the 8 held-out CBSD432 ones) at q5-q95, a block's mean distance of
# Cb and Cr from the upsampling of their recovered small planes (its *misfit*) was at most 0.80
# levels (blocks with a colour clipped in one or two channels: up to 6.5, and they say nothing).  A
# decoded JPEG pasted on a page of a saturated colour, or a coloured shape pasted on one, has sharp
# chroma edges that no such upsampling makes: 2-6 levels in the blocks along them.  The networks,
# trained on such decodes, put the page's colour into the photo there and the photo's into the page
# (a grey photo on blue, q10: -4.0 dB on the whole picture; python -m benchmarks.annotations
# --pasted).  A block whose misfit is over _CHROMA_VETO is not JPEG-coded 4:2:0, nor are the blocks
# within _CHROMA_AROUND of it (1 instead of 2 kept the pasted pictures at +0.45 dB or more instead of
# +0.58, a limit of 2 levels instead of 1.5 at +0.50; 2.5 let a grey photo on blue lose 3.8 dB).
# A decoder that replicates the coded samples instead (libjpeg without fancy upsampling) leaves each
# 2x2 box of chroma flat, which the fancy misfit takes for edges (a photo so decoded lost 0.16 dB of
# its gain, up to 0.7): where the chroma varies gently (blocks whose Cb or Cr spans 2-24 levels,
# at least _CHROMA_EVIDENCE of them) and replication explains it with under half the fancy misfit
# (such decodes: 0.06-0.26 of it, libjpeg's: 0.91 or more), the misfit is replication's.  A grey
# photo on a coloured page has no such blocks and is judged as libjpeg decodes.  Not checked where
# the sampling was found to be 4:4:4, whose chroma has such edges; where 4:2:2 or 4:4:0 was found,
# as that and as 4:2:0 both (a 4:2:0 astronaut at q10 pasted on blue was taken for 4:2:2: checked
# across only, -2.4 dB within 6 px of the page's edge; 4:2:2 decodes of 15 photos as pixels lose
# 0.013-0.049 dB of their mean gain for it at q10-q90, rocket 0.2 dB at q75-90:
# python -m benchmarks.chroma_check).
_CHROMA_VETO = 1.5
_CHROMA_AROUND = 2
_CHROMA_GENTLE = (2.0, 24.0)
_CHROMA_EVIDENCE = 32
_CHROMA_JUDGED = 1024
_CHROMA_STRIP = 256         # rows of the picture per strip (a multiple of 16), plus a margin of
_CHROMA_MARGIN_ROWS = 32    # rows above and below that the small planes' recovery reaches through


def _fancy_up(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """libjpeg's fancy 2x upsampling of ``x`` along ``axis`` (``f`` = 2; 1: ``x`` itself): sample
    ``2i`` is 3/4 of ``x[i]`` + 1/4 of ``x[i-1]``, ``2i+1`` 3/4 of ``x[i]`` + 1/4 of ``x[i+1]``,
    edges replicated."""
    if f == 1:
        return x
    prev, nxt = neighbours(x, axis)
    out = np.stack((0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt), axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return out.reshape(shape)


def _block_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each 8x8 block of H x W ``x`` (both multiples of 8): rows first, which numpy sums
    along contiguous memory."""
    h, w = x.shape
    return x.reshape(h // _N, _N, w).sum(axis=1).reshape(h // _N, w // _N, _N).sum(axis=2) / (_N * _N)


def _block_span(x: np.ndarray) -> np.ndarray:
    h, w = x.shape
    hi = x.reshape(h // _N, _N, w).max(axis=1).reshape(h // _N, w // _N, _N).max(axis=2)
    lo = x.reshape(h // _N, _N, w).min(axis=1).reshape(h // _N, w // _N, _N).min(axis=2)
    return hi - lo


def chroma_misfits(rgb: np.ndarray, start, sampling, replicated: bool = False):
    """Per 8x8 block of ``rgb[start[0]:, start[1]:]`` (cut to whole coding units of ``sampling`` =
    (v, h) factors): the mean over the block and over Cb and Cr of the distance between the chroma
    and libjpeg's fancy upsampling of the small plane that best explains it
    (:func:`.jpeg_consistency._recover_plane`); with ``replicated`` also the same for pixel
    replication of the box means and the larger span of Cb or Cr in the block (else None).
    Worked in strips of rows."""
    fv, fw = sampling
    a = rgb[start[0]:, start[1]:]
    h, w = a.shape[0] // (_N * fv) * _N * fv, a.shape[1] // (_N * fw) * _N * fw
    out = np.zeros((3 if replicated else 1, h // _N, w // _N))
    if h == 0 or w == 0:        # (not one coding unit: nothing to judge)
        return (out[0], out[1], out[2]) if replicated else (out[0], None, None)
    for top in range(0, h, _CHROMA_STRIP):
        bottom = min(h, top + _CHROMA_STRIP)
        lo, hi = max(0, top - _CHROMA_MARGIN_ROWS), min(h, bottom + _CHROMA_MARGIN_ROWS)
        rows = slice(top - lo, bottom - lo)
        for i in (1, 2):
            plane = _ycc_plane(a[lo:hi, :w], i)
            d = _fancy_up(_fancy_up(_recover_plane(plane, fv, fw), fv, 0), fw, 1)[rows]
            d -= plane[rows]
            out[0, top // _N:bottom // _N] += _block_mean(np.abs(d, out=d)) / 2
            if replicated:
                p = plane[rows]
                d = np.repeat(np.repeat(_box_down(p, fv, fw), fv, 0), fw, 1) - p
                out[1, top // _N:bottom // _N] += _block_mean(np.abs(d, out=d)) / 2
                out[2, top // _N:bottom // _N] = np.maximum(out[2, top // _N:bottom // _N], _block_span(p))
    return (out[0], out[1], out[2]) if replicated else (out[0], None, None)


def _box_down(p: np.ndarray, fv: int, fw: int) -> np.ndarray:
    h, w = p.shape
    return p.reshape(h // fv, fv, w // fw, fw).mean(axis=(1, 3))


def _chroma_veto(rgb: np.ndarray, offset, sampling, tinted: np.ndarray, units=None) -> np.ndarray:
    """bool like ``tinted`` (the blocks of the luma grid at ``offset`` % 8 with a colour clipped in
    one or two channels, which say nothing): the blocks whose chroma the decoder's upsampling of
    ``sampling`` does not explain (see above).  ``units``: where the coding units start, when
    known; else each of their phases on the grid is tried.  The phase and the upsampling are
    judged on a crop of up to :data:`_CHROMA_JUDGED` pixels a side in the middle of the picture."""
    fv, fw = sampling
    oy, ox = offset[0] % _N, offset[1] % _N
    hb, wb = tinted.shape
    if units is not None:
        starts = [(oy + (units[0] - oy) % (_N * fv), ox + (units[1] - ox) % (_N * fw))]
    else:
        starts = [(oy + _N * py, ox + _N * px) for py in range(fv) for px in range(fw)]
    # the crop: whole coding units from the grid, in the middle
    cy = max(0, (hb * _N - _CHROMA_JUDGED) // 2) // (_N * fv) * (_N * fv)
    cx = max(0, (wb * _N - _CHROMA_JUDGED) // 2) // (_N * fw) * (_N * fw)
    best = [None, None]                 # (total misfit, start, misfits, gentle) for fancy, replicated
    for start in starts:
        crop = rgb[start[0] + cy:start[0] + cy + _CHROMA_JUDGED, start[1] + cx:start[1] + cx + _CHROMA_JUDGED]
        fancy, rep, span = chroma_misfits(crop, (0, 0), sampling, replicated=True)
        if fancy.size == 0:
            continue
        by, bx = (start[0] - oy + cy) // _N, (start[1] - ox + cx) // _N
        t = tinted[by:by + fancy.shape[0], bx:bx + fancy.shape[1]]
        if t.shape != fancy.shape:
            continue
        gentle = ~t & (span >= _CHROMA_GENTLE[0]) & (span <= _CHROMA_GENTLE[1])
        for k, m in enumerate((fancy, rep)):
            # the mean over the blocks, not the sum: a phase further in covers fewer of them
            total = float(m[~t].mean()) if (~t).any() else 0.0
            if best[k] is None or total < best[k][0]:
                best[k] = (total, start, m, gentle)
    veto = np.zeros((hb, wb), bool)
    if best[0] is None:
        return veto
    start, replicated = best[0][1], False
    fg, rg = best[0][3], best[1][3]
    if rg.sum() >= _CHROMA_EVIDENCE and fg.sum() >= _CHROMA_EVIDENCE and \
            np.median(best[1][2][rg]) < 0.5 * np.median(best[0][2][fg]):
        start, replicated = best[1][1], True
    fancy, rep, _ = chroma_misfits(rgb, start, sampling, replicated)
    misfit = rep if replicated else fancy
    by, bx = (start[0] - oy) // _N, (start[1] - ox) // _N
    n, m = min(hb - by, misfit.shape[0]), min(wb - bx, misfit.shape[1])
    veto[by:by + n, bx:bx + m] = misfit[:n, :m] > _CHROMA_VETO
    return veto & ~tinted


def history_mask(rgb: np.ndarray, offset, luma_table, steps: Optional[np.ndarray] = None,
                 sampling: Optional[tuple] = (2, 2), chroma_offset=None) -> np.ndarray:
    """H x W bool: where H x W x 3 uint8 ``rgb``, found to hold a JPEG with its 8x8 grid at
    ``offset`` and about ``luma_table``, looks JPEG-coded (see above).  ``steps``: the picture's
    (:func:`picture_steps`), when already known.  ``sampling``: the chroma sampling its chroma is
    checked for (None or (1, 1): not checked); ``chroma_offset``: where its coding units start,
    None when not known (every phase is tried)."""
    h, w = rgb.shape[:2]
    oy, ox = offset[0] % _N, offset[1] % _N
    hb, wb = (h - oy) // _N, (w - ox) // _N
    if hb < 1 or wb < 1:
        return np.ones((h, w), bool)
    steps = picture_steps(rgb, offset, luma_table) if steps is None else steps
    step = np.where(np.isnan(steps), np.asarray(luma_table, np.float64).reshape(_N, _N), steps)
    num = np.zeros((hb, wb))        # blocks that are JPEG
    den = np.zeros((hb, wb))        # blocks that say something
    veto = np.zeros((hb, wb))       # blocks that are clearly not
    tinted_all = np.zeros((hb, wb), bool)
    limit = _MASK_VETO[0] * step[0, 0] + _MASK_VETO[1]
    rows = max(1, 4096 // max(1, wb))                 # block rows per strip: bounded memory
    for a in range(0, hb, rows):
        b = min(hb, a + rows)
        px = rgb[oy + a * _N:oy + b * _N, ox:ox + wb * _N]
        y = _luma(px).reshape(b - a, _N, wb, _N).transpose(0, 2, 1, 3)
        # a colour clipped in one or two channels: its luma cannot follow (channel by channel, and
        # the blocks' maxima over contiguous runs: numpy's reductions over short strided axes are slow)
        e0, e1, e2 = ((px[..., k] == 0) | (px[..., k] == 255) for k in range(3))
        tinted = ((e0 | e1 | e2) & ~(e0 & e1 & e2)).reshape(b - a, _N, wb, _N).any(axis=3).any(axis=1)
        c = _DCT @ (y - 128) @ _DCT.T
        back = _DCT.T @ (np.round(c / step) * step) @ _DCT + 128
        moved = np.abs(np.clip(back, 0, 255) - y).mean(axis=(2, 3))
        flat = np.ascontiguousarray(y).reshape(b - a, wb, _N * _N)
        spread = flat.max(axis=2) - flat.min(axis=2)
        says = (spread >= _MASK_FLAT) & ~tinted
        tinted_all[a:b] = tinted
        num[a:b] = says & (moved <= _MASK_MOVE)
        den[a:b] = says
        veto[a:b] = (says & (moved > limit)) | (tinted & (spread >= _MASK_FLAT) & (moved > _MASK_VETO_TINTED * limit))
    m = np.ones((hb, wb), bool)
    for r in _MASK_RADII:
        n, d = box_sum(num, r), box_sum(den, r)
        m = np.where(d > 0, 2 * n >= d, m)
    if veto.any():
        m &= box_sum(veto, _MASK_VETO_AROUND) == 0
    chroma = np.zeros((hb, wb), bool)
    if sampling is not None and tuple(sampling) != (1, 1):
        cveto = _chroma_veto(rgb, offset, tuple(sampling), tinted_all, chroma_offset)
        if tuple(sampling) != (2, 2):   # 4:2:0 too (a 4:2:0 photo on a page was taken for 4:2:2, checked across only)
            cveto |= _chroma_veto(rgb, offset, (2, 2), tinted_all, None)
        if cveto.any():
            chroma = box_sum(cveto.astype(np.float64), _CHROMA_AROUND) > 0
    by = np.clip((np.arange(h) - oy) // _N, 0, hb - 1)     # the partial blocks at the edges: their neighbour's
    bx = np.clip((np.arange(w) - ox) // _N, 0, wb - 1)
    return (m & ~chroma)[by][:, bx]


def box_sum(a: np.ndarray, r: int, dtype=np.float64) -> np.ndarray:
    """Sum of ``a`` over the (2r+1)^2 square around each element (zero outside, so the square
    stops at the edges), accumulated in ``dtype`` (running sums over rows and columns)."""
    k = 2 * r + 1
    s = np.zeros((a.shape[0] + k, a.shape[1] + k), dtype)
    np.cumsum(np.cumsum(np.pad(a, r), 0, dtype=dtype), 1, out=s[1:, 1:])
    return s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
