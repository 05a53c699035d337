"""JPEG consistency: keep a restored image inside what its JPEG file says about the original.

A baseline JPEG stores, for each 8x8 block of each YCbCr plane (chroma planes after the
encoder's 2x2/2x1 box downsampling), the DCT coefficients divided by the quantisation table
and rounded: coefficient ``c`` is known to lie in ``[(k - 1/2) q, (k + 1/2) q]``.  The original
image satisfies every one of these intervals; they form a convex set.  :func:`project` moves a
restored image onto that set (per plane: DCT, clamp to the intervals, inverse DCT; a chroma
correction made on the downsampled plane is spread back by pixel replication, which is the exact
projection through a box downsampling).  Projecting onto a convex set that contains the original
never moves a point away from the original, so in YCbCr this can only bring the restored image
closer to the truth -- and at high JPEG qualities, where the intervals are narrow, it keeps the
output next to the decoded input, whatever the network did.

The intervals' centres ``k q`` are re-derived from the decoded pixels (Pillow does not expose the
coefficients): luma exactly up to 8-bit rounding; chroma planes are first recovered from their
decoded (upsampled) version by a few Landweber steps that undo libjpeg's triangular upsampling
(worked on the small planes: the upsampling followed by the box mean is a 3-tap filter there).

The image is projected in whole-width strips of :data:`STRIP_ROWS` rows that overlap by more than
the chroma recovery reaches, so that the result equals the whole image's while the float64 planes
take a strip's memory, not the image's (a 12-megapixel photo: 1.8 GB peak before, measured), one
plane at a time; strips can run on threads (``workers``).  ``benchmarks/bench_guard.py`` checks
the result against a plain whole-image version of the same projection and times both.

The tables come from :mod:`fastreshuffle.io.jpeg_tables`.
"""
from __future__ import annotations

import numpy as np

from ..io.jpeg_tables import JpegTables

__all__ = ["project", "project_deltas", "in_strips", "STRIP_ROWS"]

# Rows of the image per projection strip (rounded down to a multiple of the coding unit's height).
STRIP_ROWS = 256
# Landweber steps of the chroma recovery: each step reaches one more chroma row up and down.
_RECOVERY_STEPS = 8

_N = 8
_DCT = np.array([[np.sqrt((1 if u == 0 else 2) / _N) * np.cos((2 * x + 1) * u * np.pi / (2 * _N))
                  for x in range(_N)] for u in range(_N)])

# ------------------------------------------------------------------------------ planes
# JFIF's RGB -> YCbCr: the weights of R, G, B and the offset of each plane.
_YCC = ((0.299, 0.587, 0.114, 0), (-0.168736, -0.331264, 0.5, 128), (0.5, -0.418688, -0.081312, 128))


def _ycc_plane(rgb: np.ndarray, i: int) -> np.ndarray:
    """Plane ``i`` (0: Y, 1: Cb, 2: Cr) of JFIF's RGB -> YCbCr, float64 H x W, summed in the order
    written (R's term, + G's, + B's, + the offset)."""
    kr, kg, kb, offset = _YCC[i]
    plane = rgb[..., 0].astype(np.float64)
    plane *= kr
    for c, k in ((1, kg), (2, kb)):
        t = rgb[..., c].astype(np.float64)
        t *= k
        plane += t
    if offset:
        plane += offset
    return plane


def _to_ycc(rgb: np.ndarray) -> np.ndarray:
    """JFIF's RGB -> YCbCr, float64 planes (3 x H x W)."""
    out = np.empty((3,) + rgb.shape[:2])
    for i in range(3):
        out[i] = _ycc_plane(rgb, i)
    return out


def _pad_to(p: np.ndarray, mh: int, mw: int) -> np.ndarray:
    """``p`` padded at the bottom / right (edges replicated) to multiples of mh x mw (``p`` itself
    when it is one already)."""
    h, w = p.shape
    if h % mh == 0 and w % mw == 0:
        return p
    return np.pad(p, ((0, -h % mh), (0, -w % mw)), mode="edge")


def _blocks(p):
    h, w = p.shape
    return p.reshape(h // _N, _N, w // _N, _N).transpose(0, 2, 1, 3)


def _unblocks(b):
    h, w = b.shape[:2]
    return b.transpose(0, 2, 1, 3).reshape(h * _N, w * _N)


def _down(p: np.ndarray, fv: int, fw: int) -> np.ndarray:
    """The encoder's box downsampling: the mean of each ``fv`` x ``fw`` box (factors 1 or 2).
    Factors 1 x 1 return ``p`` itself."""
    if fv == 2:
        p = (p[0::2] + p[1::2]) * 0.5
    if fw == 2:
        p = (p[:, 0::2] + p[:, 1::2]) * 0.5
    return p


def _up(p: np.ndarray, fv: int, fw: int) -> np.ndarray:
    """Pixel replication: the adjoint of :func:`_down` scaled by fv*fw."""
    return np.repeat(np.repeat(p, fv, axis=0), fw, axis=1)


def neighbours(x: np.ndarray, axis: int):
    """(previous, next) sample of each of ``x``'s along ``axis`` (0 or 1), edges replicated."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 1)
    e = np.pad(x, pad, mode="edge")
    n = x.shape[axis]
    return (e[:n], e[2:]) if axis == 0 else (e[:, :n], e[:, 2:])


def _fancy_down(x: np.ndarray, f: int, axis: int) -> np.ndarray:
    """libjpeg's "fancy" 2x upsampling along one axis (each sample becomes 3/4 of itself + 1/4 of
    its previous / next one, edges replicated) followed by the 2x box mean: 3/4 of a sample + 1/8
    of each neighbour, on the small plane."""
    if f == 1:
        return x
    prev, nxt = neighbours(x, axis)
    return 0.75 * x + 0.125 * (prev + nxt)


def _recover_plane(decoded: np.ndarray, fv: int, fw: int, steps: int = _RECOVERY_STEPS) -> np.ndarray:
    """The downsampled chroma plane whose fancy upsampling best matches ``decoded``: Landweber
    steps ``x += down(decoded - up(x))``, with ``down(up(x))`` worked on the small plane (both maps
    are separable and linear: :func:`_fancy_down` per axis), so no full-size plane is made."""
    target = _down(decoded, fv, fw)
    x = target
    for _ in range(steps):
        x = x + (target - _fancy_down(_fancy_down(x, fv, 0), fw, 1))
    return x


def _block_dct(p: np.ndarray) -> np.ndarray:
    """The 8x8 block DCT of ``p`` - 128 (blocks as (H/8, W/8, 8, 8))."""
    return _DCT @ _blocks(p - 128) @ _DCT.T


def _project_plane(out_plane: np.ndarray, ref_plane: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Correction (same shape) that moves ``out_plane``'s block DCT into the intervals of
    ``ref_plane``: ``[(k - 1/2) q, (k + 1/2) q]``, k = round(DCT(ref) / q) (in place where it can,
    to hold fewer planes at once)."""
    k = _block_dct(ref_plane)
    k /= q
    np.round(k, out=k)
    c = _block_dct(out_plane)
    lo = k - 0.5
    lo *= q
    k += 0.5
    k *= q
    d = np.clip(c, lo, k)
    del lo, k
    d -= c
    del c
    return _unblocks(_DCT.T @ d @ _DCT)


def project_deltas(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables):
    """The float corrections ``(dY, dCb, dCr)`` (each H x W) that move ``restored``'s YCbCr planes
    into the quantisation intervals read from ``decoded`` (see :func:`project`); one plane at a
    time."""
    if decoded.shape != restored.shape or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise ValueError(f"decoded {decoded.shape} and restored {restored.shape} must be equal H x W x 3")
    h, w = decoded.shape[:2]
    fv, fw = tables.subsampling
    mh, mw = _N * fv, _N * fw
    dy = _project_plane(_pad_to(_ycc_plane(restored, 0), mh, mw), _pad_to(_ycc_plane(decoded, 0), mh, mw),
                        tables.luma)[:h, :w]
    if tables.chroma is None:
        return dy, np.zeros_like(dy), np.zeros_like(dy)
    deltas = []
    for i, q in zip((1, 2), tables.chroma):
        ref_small = _recover_plane(_pad_to(_ycc_plane(decoded, i), mh, mw), fv, fw)
        d = _project_plane(_down(_pad_to(_ycc_plane(restored, i), mh, mw), fv, fw), ref_small, q)
        deltas.append(_up(d, fv, fw)[:h, :w])
    return dy, deltas[0], deltas[1]


def project(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables, *,
            strip_rows: int = STRIP_ROWS, workers: int = 1) -> np.ndarray:
    """Move ``restored`` (H x W x 3 uint8, the image's stored orientation) onto the set of images
    that ``tables`` would have coded to ``decoded`` (the JPEG's own decoded pixels).  -> uint8
    (the float result rounded and clipped to 8 bits).  Computed in strips of ``strip_rows`` rows
    (0: the whole image at once), ``workers`` strips at a time on threads; the result is the same."""
    if decoded.shape != restored.shape or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise ValueError(f"decoded {decoded.shape} and restored {restored.shape} must be equal H x W x 3")
    h = decoded.shape[0]
    mh = _N * tables.subsampling[0]
    rows = strip_rows // mh * mh
    out = np.empty(restored.shape, np.uint8)
    if strip_rows <= 0 or rows <= 0 or rows >= h:
        _project_rgb(decoded, restored, tables, out, 0, h)
        return out
    # A strip starts on a coding unit's row (so its blocks are the image's) and reaches `margin`
    # rows beyond the rows it keeps: more than the chroma recovery's reach, which is the only
    # part of the projection that looks past an 8x8 block (one chroma row per step).
    margin = -(-(_RECOVERY_STEPS + 1) * tables.subsampling[0] // mh) * mh

    def strip(top: int) -> None:
        a, b = max(0, top - margin), min(h, top + rows + margin)
        _project_rgb(decoded[a:b], restored[a:b], tables, out[top:top + rows], top - a, min(rows, h - top))
    in_strips(strip, range(0, h, rows), workers)
    return out


def in_strips(work, tops, workers: int) -> None:
    """``work(top)`` for every strip, ``workers`` at a time on threads (numpy lets go of the GIL in
    its loops); the first error is raised, and then (or on Ctrl-C) the strips not yet started are
    dropped (``Executor.map`` cancels them)."""
    tops = list(tops)
    if workers <= 1 or len(tops) <= 1:
        for top in tops:
            work(top)
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(workers, len(tops))) as pool:
        for _ in pool.map(work, tops):
            pass


def _project_rgb(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables,
                 out: np.ndarray, first: int, rows: int) -> None:
    """``restored`` projected (:func:`project_deltas`), its rows ``first:first+rows`` written into
    ``out`` (uint8), channel by channel (JFIF's YCbCr -> RGB of the correction, added to
    ``restored``, rounded and clipped), so that only single planes are made."""
    dy, dcb, dcr = (d[first:first + rows] for d in project_deltas(decoded, restored, tables))
    for c in range(3):
        if c == 0:
            t = dy + 1.402 * dcr
        elif c == 1:
            t = dy - 0.344136 * dcb
            t -= 0.714136 * dcr
        else:
            t = dy + 1.772 * dcb
        t += restored[first:first + rows, :, c]
        np.round(t, out=t)
        np.clip(t, 0, 255, out=t)
        out[:rows, :, c] = t
