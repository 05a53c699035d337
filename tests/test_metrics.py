"""Metrics against hand computations and scikit-image."""
import math

import numpy as np
import pytest

from fastreshuffle import metrics


def test_psnr_hand():
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 12  # one value off by 12 among 12 values -> MSE 12
    assert metrics.mse(a, b) == pytest.approx(12.0)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 12.0))
    assert metrics.psnr(a, a) == float("inf")


def test_dataset_level_psnr_is_one_mse_over_the_set():
    a1 = np.zeros((2, 2, 3), np.uint8); b1 = a1.copy(); b1[0, 0, 0] = 12       # SSE 144, 12 values
    a2 = np.zeros((1, 2, 3), np.uint8); b2 = a2.copy(); b2[...] = 2           # SSE 24, 6 values
    acc = metrics.PSNRAccumulator()
    p1 = acc.add(a1, b1)
    p2 = acc.add(a2, b2)
    assert p1 == pytest.approx(10 * math.log10(255 ** 2 / 12.0))
    assert p2 == pytest.approx(10 * math.log10(255 ** 2 / 4.0))
    assert acc.mse == pytest.approx((144 + 24) / 18)
    assert acc.psnr() == pytest.approx(10 * math.log10(255 ** 2 * 18 / 168))
    assert acc.psnr() != pytest.approx((p1 + p2) / 2)
    with pytest.raises(ValueError):
        metrics.PSNRAccumulator().psnr()


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    ref = skm.structural_similarity(a, b, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-6)
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_psnr_b_penalises_blocking():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (32, 32, 3)).astype(np.float64)
    # same MSE, once as blocky offsets per 8x8 block, once as a per-row pattern without block structure
    offs = rng.choice([-4.0, 4.0], (4, 4))
    blocky = ref + np.kron(offs, np.ones((8, 8)))[..., None]
    assert metrics.blocking_effect_factor(metrics.rgb_to_y(ref)) >= 0
    y = metrics.rgb_to_y(ref)
    assert metrics.psnr_b(ref, blocky) < metrics.psnr(y, metrics.rgb_to_y(blocky))
    smooth = np.tile(np.arange(32) * 8.0, (32, 1))
    assert metrics.blocking_effect_factor(smooth) == 0.0
    # BEF looks at the test image only (Yim & Bovik): a smooth image compared with itself is lossless
    smooth_rgb = np.repeat(smooth[..., None], 3, axis=2)
    assert metrics.psnr_b(smooth_rgb, smooth_rgb) == float("inf")
