"""End to end: the shipped ``jpeg`` model, run through the CLI, improves a real photo at JPEG q10.

Skipped (with the reason) until the lead ships ``fastreshuffle/weights/jpeg.safetensors``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.inference.loading import weights_path

# Required PSNR improvement over the JPEG q10 input.  The shipped small-preset model (5700 CPU
# steps) measured +0.75 dB (astronaut) and +0.76 dB (coffee); the margin leaves room for
# platform rounding only.  The quality bar (+1.0 dB on Kodak24 at q10) is not reached
# yet: see README "Shipped models".
MIN_GAIN_DB = 0.5

pytestmark = pytest.mark.skipif(not weights_path("jpeg").is_file(),
                                reason=f"shipped JPEG model not trained yet ({weights_path('jpeg')} missing)")


def _psnr(a, b):
    m = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / m)


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_shipped_jpeg_model_improves_q10(photo, tmp_path):
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    original = np.ascontiguousarray(getattr(data, photo)()[..., :3])
    src = tmp_path / f"{photo}.jpg"
    Image.fromarray(original).save(src, format="JPEG", quality=10)  # baseline 4:2:0, like codecs.jpeg
    compressed = np.asarray(Image.open(src).convert("RGB"))
    r = subprocess.run([sys.executable, "-m", "fastreshuffle.cli", "restore", str(src), "-o", str(tmp_path / "out"),
                        "--model", "jpeg", "--device", "cpu"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    restored = np.asarray(Image.open(tmp_path / "out" / f"{photo}_restored.png").convert("RGB"))
    before, after = _psnr(compressed, original), _psnr(restored, original)
    print(f"{photo}: JPEG q10 {before:.2f} dB -> restored {after:.2f} dB ({after - before:+.2f} dB)")
    assert after - before >= MIN_GAIN_DB, (before, after)
