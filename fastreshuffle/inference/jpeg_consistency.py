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
decoded (upsampled) version by a few Landweber steps that undo libjpeg's triangular upsampling.

The image is projected in whole-width strips of :data:`STRIP_ROWS` rows that overlap by more than
the chroma recovery reaches, so that the result equals the whole image's while the float64 planes
take a strip's memory, not the image's (a 12-megapixel photo: 1.8 GB peak before, measured).

The tables come from :mod:`fastreshuffle.io.jpeg_tables`.
"""
from __future__ import annotations

import numpy as np

from ..io.jpeg_tables import JpegTables

__all__ = ["project", "project_deltas", "STRIP_ROWS"]

# Rows of the image per projection strip (rounded down to a multiple of the coding unit's height).
STRIP_ROWS = 256
# Landweber steps of the chroma recovery: each step reaches one more chroma row up and down.
_RECOVERY_STEPS = 8

_N = 8
_DCT = np.array([[np.sqrt((1 if u == 0 else 2) / _N) * np.cos((2 * x + 1) * u * np.pi / (2 * _N))
                  for x in range(_N)] for u in range(_N)])

# ------------------------------------------------------------------------------ planes
def _to_ycc(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                     0.5 * r - 0.418688 * g - 0.081312 * b + 128])


def _ycc_delta_to_rgb(dy, dcb, dcr) -> np.ndarray:
    return np.stack([dy + 1.402 * dcr, dy - 0.344136 * dcb - 0.714136 * dcr, dy + 1.772 * dcb], axis=-1)


def _pad_to(p: np.ndarray, mh: int, mw: int) -> np.ndarray:
    h, w = p.shape
    return np.pad(p, ((0, -h % mh), (0, -w % mw)), mode="edge")


def _blocks(p):
    h, w = p.shape
    return p.reshape(h // _N, _N, w // _N, _N).transpose(0, 2, 1, 3)


def _unblocks(b):
    h, w = b.shape[:2]
    return b.transpose(0, 2, 1, 3).reshape(h * _N, w * _N)


def _down(p: np.ndarray, fv: int, fw: int) -> np.ndarray:
    h, w = p.shape
    return p.reshape(h // fv, fv, w // fw, fw).mean(axis=(1, 3))


def _up(p: np.ndarray, fv: int, fw: int) -> np.ndarray:
    """Pixel replication: the adjoint of :func:`_down` scaled by fv*fw."""
    return np.repeat(np.repeat(p, fv, axis=0), fw, axis=1)


def _tri_up(p: np.ndarray, f: int, axis: int) -> np.ndarray:
    """libjpeg's "fancy" 2x upsampling along one axis (3/4 nearest + 1/4 next, edges replicated)."""
    if f == 1:
        return p
    n = p.shape[axis]
    prev = np.take(p, np.r_[0, np.arange(n - 1)], axis=axis)
    nxt = np.take(p, np.r_[np.arange(1, n), n - 1], axis=axis)
    out = np.stack([0.75 * p + 0.25 * prev, 0.75 * p + 0.25 * nxt], axis=axis + 1)
    shape = list(p.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def _recover_plane(decoded: np.ndarray, fv: int, fw: int, steps: int = _RECOVERY_STEPS) -> np.ndarray:
    """The downsampled chroma plane whose fancy upsampling best matches ``decoded`` (Landweber)."""
    x = _down(decoded, fv, fw)
    for _ in range(steps):
        up = _tri_up(_tri_up(x, fv, 0), fw, 1)
        x = x + _down(decoded - up, fv, fw)
    return x


def _project_plane(out_plane: np.ndarray, ref_plane: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Correction (same shape) that moves ``out_plane``'s block DCT into the intervals of ``ref_plane``."""
    k = np.round((_DCT @ _blocks(ref_plane - 128) @ _DCT.T) / q)
    c = _DCT @ _blocks(out_plane - 128) @ _DCT.T
    clamped = np.clip(c, (k - 0.5) * q, (k + 0.5) * q)
    return _unblocks(_DCT.T @ (clamped - c) @ _DCT)


def project_deltas(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables):
    """The float corrections ``(dY, dCb, dCr)`` (each H x W) that move ``restored``'s YCbCr planes
    into the quantisation intervals read from ``decoded`` (see :func:`project`)."""
    if decoded.shape != restored.shape or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise ValueError(f"decoded {decoded.shape} and restored {restored.shape} must be equal H x W x 3")
    h, w = decoded.shape[:2]
    fv, fw = tables.subsampling
    mh, mw = _N * fv, _N * fw
    ref = _to_ycc(decoded)
    out = _to_ycc(restored)
    dy = _project_plane(_pad_to(out[0], mh, mw), _pad_to(ref[0], mh, mw), tables.luma)[:h, :w]
    if tables.chroma is None:
        return dy, np.zeros_like(dy), np.zeros_like(dy)
    deltas = []
    for i, q in zip((1, 2), tables.chroma):
        r_full, o_full = _pad_to(ref[i], mh, mw), _pad_to(out[i], mh, mw)
        ref_small = _recover_plane(r_full, fv, fw)
        d = _project_plane(_down(o_full, fv, fw), ref_small, q)
        deltas.append(_up(d, fv, fw)[:h, :w])
    return dy, deltas[0], deltas[1]


def project(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables, *,
            strip_rows: int = STRIP_ROWS) -> np.ndarray:
    """Move ``restored`` (H x W x 3 uint8, the image's stored orientation) onto the set of images
    that ``tables`` would have coded to ``decoded`` (the JPEG's own decoded pixels).  -> uint8
    (the float result rounded and clipped to 8 bits).  Computed in strips of ``strip_rows`` rows
    (0: the whole image at once); the result is the same."""
    if decoded.shape != restored.shape or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise ValueError(f"decoded {decoded.shape} and restored {restored.shape} must be equal H x W x 3")
    h = decoded.shape[0]
    mh = _N * tables.subsampling[0]
    rows = strip_rows // mh * mh
    if strip_rows <= 0 or rows <= 0 or rows >= h:
        return _project_rgb(decoded, restored, tables)
    # A strip starts on a coding unit's row (so its blocks are the image's) and reaches `margin`
    # rows beyond the rows it keeps: more than the chroma recovery's reach, which is the only
    # part of the projection that looks past an 8x8 block (one chroma row per step).
    margin = -(-(_RECOVERY_STEPS + 1) * tables.subsampling[0] // mh) * mh
    out = np.empty_like(restored)
    for top in range(0, h, rows):
        a, b = max(0, top - margin), min(h, top + rows + margin)
        keep = min(rows, h - top)
        out[top:top + keep] = _project_rgb(decoded[a:b], restored[a:b], tables)[top - a:top - a + keep]
    return out


def _project_rgb(decoded: np.ndarray, restored: np.ndarray, tables: JpegTables) -> np.ndarray:
    dy, dcb, dcr = project_deltas(decoded, restored, tables)
    res = restored.astype(np.float64) + _ycc_delta_to_rgb(dy, dcb, dcr)
    return np.clip(np.round(res), 0, 255).astype(np.uint8)
