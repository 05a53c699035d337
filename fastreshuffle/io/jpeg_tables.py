"""A JPEG file's quantisation tables and chroma sampling, as Pillow reads them, and the IJG
quality (1-100) a luma table corresponds to.  Used to keep restorations consistent with the
file (:mod:`fastreshuffle.inference.jpeg_consistency`) and to decide how much correction a
JPEG gets (:mod:`fastreshuffle.inference.guard`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["JpegTables", "tables_from_pil", "ijg_quality", "detail_quality", "full_chroma", "ijg_table",
           "IJG_LUMA", "IJG_CHROMA"]

# IJG (libjpeg) base luminance table, natural order (quality 50).
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)
# IJG base chrominance table (the JPEG standard's Annex K example), natural order.
IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, np.float64)


class JpegTables(NamedTuple):
    luma: np.ndarray                      # 8 x 8 quantisation steps of Y (natural order)
    chroma: Optional[Tuple[np.ndarray, np.ndarray]]  # Cb, Cr steps; None for a grey JPEG
    subsampling: Tuple[int, int]          # chroma downsampling (vertical, horizontal): (2, 2) = 4:2:0


def tables_from_pil(im) -> Optional[JpegTables]:
    """The quantisation tables and chroma sampling of an open Pillow JPEG, or None when the file
    is not a 1-component (grey) or 3-component YCbCr JPEG with tables we can use."""
    q = getattr(im, "quantization", None)
    layer = getattr(im, "layer", None)
    if not q or not layer or im.mode not in ("L", "RGB"):
        return None
    try:
        tabs = {k: np.asarray(v, np.float64).reshape(8, 8) for k, v in q.items()}
        if im.mode == "L" and len(layer) == 1:
            return JpegTables(tabs[layer[0][3]], None, (1, 1))
        if len(layer) != 3 or im.info.get("adobe_transform") == 0:  # RGB-coded JPEG, not YCbCr
            return None
        (_, yh, yv, yq), (_, bh, bv, bq), (_, rh, rv, rq) = layer
        if (bh, bv) != (1, 1) or (rh, rv) != (1, 1) or yv not in (1, 2) or yh not in (1, 2):
            return None
        return JpegTables(tabs[yq], (tabs[bq], tabs[rq]), (yv, yh))
    except (KeyError, ValueError, TypeError):
        return None


def ijg_table(quality: int, base: np.ndarray = IJG_LUMA) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling`` of a base table (flat, natural order)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality   # integer, as libjpeg
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def ijg_quality(luma: np.ndarray) -> float:
    """The IJG quality (1-100) whose scaled standard table is closest to ``luma`` (log distance)."""
    return _closest_quality(luma, _ALL)


# the upper half of the frequencies (u + v >= 7 of 0..14), where a table flatter than IJG's (a
# camera's near-lossless one) keeps detail that IJG's table of the same overall size would not
_ALL = np.ones(64, bool)
_DETAIL = (np.add.outer(np.arange(8), np.arange(8)) >= 7).ravel()


def detail_quality(luma: np.ndarray) -> float:
    """The IJG quality (1-100) whose table is closest to ``luma`` in the upper half of the
    frequencies (log distance): the quality of the detail the file kept.  For an IJG table it is
    at most :func:`ijg_quality` (the lowest of equal fits is taken); for a flatter one, higher
    (all steps 6: 96, where the whole table reads as 93)."""
    return _closest_quality(luma, _DETAIL)


def _closest_quality(luma: np.ndarray, where: np.ndarray) -> float:
    best, best_err = 50.0, np.inf
    target = np.log(np.maximum(np.asarray(luma, np.float64).ravel(), 1))[where]
    for quality in range(1, 101):
        err = np.mean((np.log(ijg_table(quality))[where] - target) ** 2)
        if err < best_err:
            best, best_err = float(quality), err
    return best


def full_chroma(tables: JpegTables) -> bool:
    """No chroma subsampling to undo: a 4:4:4 or a grey JPEG."""
    return tables.chroma is None or tuple(tables.subsampling) == (1, 1)
