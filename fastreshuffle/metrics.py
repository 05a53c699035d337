"""Image-quality metrics: PSNR (per image and dataset-level), SSIM, PSNR-B; numpy only.

Conventions (all documented in ``docs/codecs.md``):

* Inputs are ``uint8`` arrays in 0..255 or float arrays on the 0..255 scale, shape ``(H, W, 3)``
  (or ``(H, W)``).  Use ``peak=1.0`` for [0, 1] float data.
* **PSNR** is RGB PSNR: one MSE over all pixels and all three channels.
* **Dataset-level PSNR** (as in the paper): one MSE over all RGB values of all pixels of the whole
  set, then PSNR -- :class:`PSNRAccumulator`.  Not the same as the mean of per-image PSNRs.
* **SSIM**: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, computed
  on each RGB channel separately ('valid' part of the filtered image) and averaged over channels.
* **PSNR-B** (Yim & Bovik 2011): MSE + blocking-effect factor on 8x8 block boundaries,
  computed on the luma channel Y (BT.601, 0..255) of the two images.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    a, b = _f64(a), _f64(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty images")
    return a, b


def mse(a, b) -> float:
    a, b = _check_pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr_from_mse(m: float, peak: float = 255.0) -> float:
    if m <= 0:
        return float("inf")
    return 10.0 * math.log10(peak * peak / m)


def psnr(a, b, peak: float = 255.0) -> float:
    """RGB PSNR in dB: one MSE over all values."""
    return psnr_from_mse(mse(a, b), peak)


class PSNRAccumulator:
    """Dataset-level PSNR: accumulates squared errors and value counts over many images."""

    def __init__(self, peak: float = 255.0):
        self.peak = peak
        self.sse = 0.0
        self.count = 0
        self.images = 0

    def add(self, a, b) -> float:
        """Add one image pair; returns that image's PSNR."""
        a, b = _check_pair(a, b)
        se = float(np.sum((a - b) ** 2))
        self.sse += se
        self.count += a.size
        self.images += 1
        return psnr_from_mse(se / a.size, self.peak)

    def add_sse(self, sse: float, count: int) -> None:
        self.sse += float(sse)
        self.count += int(count)
        self.images += 1

    @property
    def mse(self) -> float:
        if self.count == 0:
            raise ValueError("no images accumulated")
        return self.sse / self.count

    def psnr(self) -> float:
        return psnr_from_mse(self.mse, self.peak)


# ------------------------------------------------------------------ SSIM
def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D image with the 1-D kernel k (rows then columns)."""
    n = k.size
    h, w = img.shape
    if h < n or w < n:
        raise ValueError(f"image {h}x{w} is smaller than the {n}x{n} SSIM window")
    # rows
    out = np.zeros((h, w - n + 1))
    for i in range(n):
        out += k[i] * img[:, i:i + w - n + 1]
    out2 = np.zeros((h - n + 1, w - n + 1))
    for i in range(n):
        out2 += k[i] * out[i:i + h - n + 1, :]
    return out2


def _ssim_channel(a: np.ndarray, b: np.ndarray, peak: float, k: np.ndarray) -> float:
    c1 = (0.01 * peak) ** 2
    c2 = (0.03 * peak) ** 2
    mu_a = _filter_valid(a, k)
    mu_b = _filter_valid(b, k)
    s_aa = _filter_valid(a * a, k) - mu_a * mu_a
    s_bb = _filter_valid(b * b, k) - mu_b * mu_b
    s_ab = _filter_valid(a * b, k) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2)
    return float(np.mean(num / den))


SSIM_WINDOW = 11   # the Gaussian window's side (Wang et al. 2004); smaller images have no SSIM


def ssim(a, b, peak: float = 255.0, window: int = SSIM_WINDOW, sigma: float = 1.5) -> float:
    """Mean SSIM, Gaussian window; for colour images the mean over the R, G, B channels."""
    a, b = _check_pair(a, b)
    k = _gaussian_kernel(window, sigma)
    if a.ndim == 2:
        return _ssim_channel(a, b, peak, k)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], peak, k) for c in range(a.shape[-1])]))


# ------------------------------------------------------------------ PSNR-B
def rgb_to_y(img) -> np.ndarray:
    """BT.601 full-range luma (0..255 for 0..255 input), as float64."""
    a = _f64(img)
    if a.ndim == 2:
        return a
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def blocking_effect_factor(img: np.ndarray, block: int = 8) -> float:
    """BEF of Yim & Bovik (2011) for a single-channel image."""
    im = _f64(img)
    h, w = im.shape
    # horizontal neighbours (differences between columns j and j+1)
    dh = (im[:, :-1] - im[:, 1:]) ** 2  # shape (h, w-1); column j means pair (j, j+1)
    dv = (im[:-1, :] - im[1:, :]) ** 2  # shape (h-1, w)
    cols = np.arange(w - 1)
    rows = np.arange(h - 1)
    hb_mask = (cols % block) == (block - 1)   # pairs straddling a block boundary
    vb_mask = (rows % block) == (block - 1)
    n_hb = h * int(hb_mask.sum())
    n_hbc = h * int((~hb_mask).sum())
    n_vb = w * int(vb_mask.sum())
    n_vbc = w * int((~vb_mask).sum())
    d_b = dh[:, hb_mask].sum() + dv[vb_mask, :].sum()
    d_bc = dh[:, ~hb_mask].sum() + dv[~vb_mask, :].sum()
    nb = n_hb + n_vb
    nbc = n_hbc + n_vbc
    if nb == 0 or nbc == 0:
        return 0.0
    d_b /= nb
    d_bc /= nbc
    eta = math.log2(block) / math.log2(min(h, w)) if min(h, w) > 1 and d_b > d_bc else 0.0
    return float(eta * (d_b - d_bc))


def psnr_b(reference, test, peak: float = 255.0, block: int = 8) -> float:
    """PSNR-B on luma: 10 log10(peak^2 / (MSE + BEF(test))).  ``reference`` is the original."""
    r, t = _check_pair(reference, test)
    ry, ty = rgb_to_y(r), rgb_to_y(t)
    m = float(np.mean((ry - ty) ** 2))
    bef = blocking_effect_factor(ty, block)
    return psnr_from_mse(m + bef, peak)


def torch_psnr(a, b, peak: float = 1.0) -> float:
    """PSNR between two torch tensors (any shape), one MSE over all values."""
    m = float(((a.double() - b.double()) ** 2).mean())
    return psnr_from_mse(m, peak)
