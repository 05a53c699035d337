"""The shipped JPEG model's quality bands (#14 item 1): a JPEG of quality <= JPEG_LOW_MAX, read from
its tables or detected in its pixels, is restored by the low-quality specialist "jpeg-low"; above,
by "jpeg"; every entry point (restore(), the CLI's restore and eval) takes the same decision."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import fastreshuffle
from fastreshuffle.cli import main
from fastreshuffle.inference.loading import (JPEG_LOW, JPEG_LOW_MAX, WEIGHTS_DIR, Bands, available_models,
                                             band_model)

pytestmark = pytest.mark.usefixtures("one_thread")

GENERAL = str(WEIGHTS_DIR / "jpeg.safetensors")   # the general network by path: no bands


def photo(size=96):
    from skimage import data
    a = data.astronaut()
    return np.ascontiguousarray(a[160:160 + size, 180:180 + size])


def jpeg(a, quality):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return buf


def test_band_model_decision():
    assert JPEG_LOW in available_models()                     # shipped with the package
    assert band_model("jpeg", 5) == band_model("jpeg", JPEG_LOW_MAX) == JPEG_LOW
    assert band_model("jpeg", JPEG_LOW_MAX + 1) == "jpeg"
    assert band_model("jpeg", None) == "jpeg"                 # no quality known: the model asked for
    assert band_model("hevc", 10) == "hevc" and band_model(GENERAL, 10) == GENERAL
    loads = []
    b = Bands("jpeg", lambda m: loads.append(m) or m)
    assert [b.net(10), b.net(15), b.net(50), b.net()] == [JPEG_LOW, JPEG_LOW, "jpeg", "jpeg"]
    assert loads == [JPEG_LOW, "jpeg"]                        # each band loaded once


@pytest.mark.parametrize("quality", [10, int(JPEG_LOW_MAX)])
def test_low_quality_jpeg_goes_to_the_specialist(quality):
    a = photo()
    got = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, quality)), "jpeg", device="cpu"))
    low = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, quality)), JPEG_LOW, device="cpu"))
    general = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, quality)), GENERAL, device="cpu"))
    np.testing.assert_array_equal(got, low)
    assert np.abs(got.astype(int) - general).max() > 0        # so the check above tells them apart
    # a decoded array (no tables): the quality detected in its pixels picks the band the same way
    dec = np.asarray(Image.open(jpeg(a, quality)).convert("RGB"))
    np.testing.assert_array_equal(fastreshuffle.restore(dec, "jpeg", device="cpu"),
                                  fastreshuffle.restore(dec, JPEG_LOW, device="cpu"))


def test_higher_quality_jpeg_keeps_the_general_model():
    a = photo()
    q = int(JPEG_LOW_MAX) + 10
    got = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, q)), "jpeg", device="cpu"))
    np.testing.assert_array_equal(got, np.asarray(fastreshuffle.restore(Image.open(jpeg(a, q)), GENERAL,
                                                                         device="cpu")))


def test_cli_restore_and_eval_use_the_bands(tmp_path, capsys):
    a = photo()
    (tmp_path / "low.jpg").write_bytes(jpeg(a, 10).getvalue())
    assert main(["restore", str(tmp_path / "low.jpg"), "--device", "cpu", "--precision", "fp32"]) == 0
    assert f"restored by {JPEG_LOW}" in capsys.readouterr().err
    want = np.asarray(fastreshuffle.restore(Image.open(tmp_path / "low.jpg"), JPEG_LOW, device="cpu",
                                            precision="fp32"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "low_restored.png")), want)

    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(photo(64)).save(data / "p.png")
    out = {}
    for model in ("jpeg", JPEG_LOW, GENERAL):
        j = tmp_path / "e.json"
        args = ["--model", model] if model != GENERAL else ["--weights", model]
        assert main(["eval", "--data", str(data), "--quality", "10", "--device", "cpu", "-q",
                     "--json", str(j), *args]) == 0
        doc = json.loads(j.read_text())
        out[model] = doc["results"][0]["psnr_restored"]
        if model == "jpeg":
            assert doc["model"]["bands"] == {JPEG_LOW: f"JPEG quality <= {JPEG_LOW_MAX:g}"}
    assert out["jpeg"] == out[JPEG_LOW] != out[GENERAL]
