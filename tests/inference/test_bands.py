"""The shipped models' quality bands (#14 item 1): a JPEG of quality <= JPEG_LOW_MAX, read from
its tables or detected in its pixels, is restored by the low-quality specialist "jpeg-low", one of
quality >= JPEG_HIGH_MIN by the high-quality one "jpeg-high" (with its own strengths), one of
quality >= JPEG_MID_MIN below that by the mid-quality one "jpeg-mid" (the same schedule); in
between, by "jpeg".  A HEIF file coded at QP >= HEVC_LOW_MIN_QP (read from its slice headers) is restored by
"hevc-low"; below, or with no QP, by "hevc".  Every entry point (restore(), the CLI's restore and
eval) takes the same decision."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import fastreshuffle
from fastreshuffle.cli import main
from fastreshuffle.inference.loading import (HEVC_LOW, HEVC_LOW_MIN_QP, JPEG_HIGH, JPEG_HIGH_MIN, JPEG_LOW,
                                             JPEG_LOW_MAX, JPEG_MID, JPEG_MID_MIN, WEIGHTS_DIR, Bands,
                                             available_models, band_model, bands_of)

pytestmark = pytest.mark.usefixtures("one_thread")

GENERAL = str(WEIGHTS_DIR / "jpeg.safetensors")   # the general network by path: no bands
GENERAL_HEVC = str(WEIGHTS_DIR / "hevc.safetensors")


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
    assert {JPEG_LOW, JPEG_MID, JPEG_HIGH} <= set(available_models())   # shipped with the package
    assert JPEG_LOW_MAX < JPEG_MID_MIN < JPEG_HIGH_MIN
    assert band_model("jpeg", 5) == band_model("jpeg", JPEG_LOW_MAX) == JPEG_LOW
    assert band_model("jpeg", JPEG_LOW_MAX + 1) == band_model("jpeg", JPEG_MID_MIN - 0.5) == "jpeg"
    assert band_model("jpeg", JPEG_MID_MIN) == band_model("jpeg", JPEG_HIGH_MIN - 0.5) == JPEG_MID
    assert band_model("jpeg", JPEG_HIGH_MIN) == band_model("jpeg", 100) == JPEG_HIGH
    # the bounds README and docs/restore.md give: jpeg-mid q45-80, jpeg-high from q81
    assert [band_model("jpeg", q) for q in (44, 45, 80, 81)] == ["jpeg", JPEG_MID, JPEG_MID, JPEG_HIGH]
    assert band_model("jpeg", None) == "jpeg"                 # no quality known: the model asked for
    assert band_model("hevc", 10) == "hevc" and band_model(GENERAL, 10) == GENERAL
    assert band_model(JPEG_HIGH, 10) == JPEG_HIGH and band_model(GENERAL, 95) == GENERAL   # asked for: kept
    assert bands_of("jpeg") == {JPEG_LOW: f"JPEG quality <= {JPEG_LOW_MAX:g}",
                                JPEG_MID: f"JPEG quality >= {JPEG_MID_MIN:g} and < {JPEG_HIGH_MIN:g}",
                                JPEG_HIGH: f"JPEG quality >= {JPEG_HIGH_MIN:g}"}
    loads = []
    b = Bands("jpeg", lambda m: loads.append(m) or m)
    assert [b.net(10), b.net(15), b.net(30), b.net(90), b.net(70), b.net(95), b.net(65), b.net()] == \
        [JPEG_LOW, JPEG_LOW, "jpeg", JPEG_HIGH, JPEG_MID, JPEG_HIGH, JPEG_MID, "jpeg"]
    assert loads == [JPEG_LOW, "jpeg", JPEG_HIGH, JPEG_MID]  # each band loaded once


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


@pytest.mark.parametrize("q", [int(JPEG_LOW_MAX) + 10, int(JPEG_MID_MIN) - 1])
def test_middle_quality_jpeg_keeps_the_general_model(q):
    a = photo()
    got = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, q)), "jpeg", device="cpu"))
    np.testing.assert_array_equal(got, np.asarray(fastreshuffle.restore(Image.open(jpeg(a, q)), GENERAL,
                                                                         device="cpu")))


@pytest.mark.parametrize("quality, band", [(int(JPEG_MID_MIN), JPEG_MID), (int(JPEG_HIGH_MIN) - 1, JPEG_MID),
                                           (int(JPEG_HIGH_MIN), JPEG_HIGH), (90, JPEG_HIGH), (97, JPEG_HIGH)])
def test_high_quality_jpeg_goes_to_its_band_with_its_strengths(quality, band):
    """From JPEG_MID_MIN, restored by "jpeg-mid", from JPEG_HIGH_MIN by "jpeg-high", each at its
    schedule's strength (as asked for by name); the general network by path is not (q97: it leaves
    the file as it is, the band takes a quarter)."""
    a = photo(128)
    im = lambda: Image.open(jpeg(a, quality))  # noqa: E731
    got = np.asarray(fastreshuffle.restore(im(), "jpeg", device="cpu"))
    np.testing.assert_array_equal(got, np.asarray(fastreshuffle.restore(im(), band, device="cpu")))
    other = JPEG_HIGH if band == JPEG_MID else JPEG_MID      # the two bands are different networks
    assert np.abs(got.astype(int) - np.asarray(fastreshuffle.restore(im(), other, device="cpu"))).max() > 0
    general = np.asarray(fastreshuffle.restore(im(), GENERAL, device="cpu"))
    assert np.abs(got.astype(int) - general).max() > 0
    decoded = np.asarray(im().convert("RGB"))
    assert np.abs(got.astype(int) - decoded).max() > 0
    if quality == 97:
        np.testing.assert_array_equal(general, decoded)


@pytest.mark.parametrize("name, quality", [("astronaut", 72), ("hubble_deep_field", 55), ("hubble_deep_field", 65)])
def test_a_dark_photo_is_not_made_worse(name, quality):
    """Night shots, photos darkened to 2% of their values (as ``harm_curve --exposure 0.02``), at
    the qualities where "jpeg", at part of its correction, made them worse: the astronaut at q72
    (0.17 dB while the high band began at 75; "jpeg-high" gained +0.06 dB, +0.45 since its
    dark-photo phase, "jpeg-mid" +0.67), the Hubble deep field (one of the seven outside photos) at
    q55 / q65 (4.2 / 5.2 dB at 0.875 / 0.625 of the correction; "jpeg-mid", q55-80 since
    2026-12-06, q45-80 since session 44, gains)."""
    from skimage import data

    from fastreshuffle.metrics import psnr
    from fastreshuffle.training.data import expose
    a = expose(np.ascontiguousarray(getattr(data, name)()), 0.02)
    decoded = np.asarray(Image.open(jpeg(a, quality)).convert("RGB"))
    out = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, quality)), "jpeg", device="cpu", precision="fp32"))
    assert psnr(out, a) > psnr(decoded, a)


def test_a_sharpened_photo_is_not_made_worse_at_q50():
    """A photo sharpened before coding (an unsharp mask, as phones' pipelines and editors apply):
    "jpeg", which restored q45-54 until session 44, smoothed its crisp texture and lost (the
    brick wall below: -0.41 dB; the held-out photos up to -0.85); "jpeg-mid", which restores
    q45-80 since then, gains (+0.65)."""
    from PIL import ImageFilter
    from skimage import data

    from fastreshuffle.metrics import psnr
    a = np.dstack([np.ascontiguousarray(data.brick())[:256, :256]] * 3)
    a = np.asarray(Image.fromarray(a).filter(ImageFilter.UnsharpMask(2, 250, 0)))
    decoded = np.asarray(Image.open(jpeg(a, 50)).convert("RGB"))
    out = np.asarray(fastreshuffle.restore(Image.open(jpeg(a, 50)), "jpeg", device="cpu", precision="fp32"))
    assert psnr(out, a) > psnr(decoded, a) + 0.3


def test_decoded_high_quality_pixels_take_the_band_and_its_strength(tmp_path, capsys):
    """A decoded q75 / q85 JPEG given as pixels (found in them) goes to "jpeg-mid" / "jpeg-high" at
    its strength, as the file does: restore() of the array and `fastreshuffle restore` of a PNG of it."""
    from skimage import data
    a = np.ascontiguousarray(data.coffee())
    for q, band in ((75, JPEG_MID), (85, JPEG_HIGH)):
        dec = np.asarray(Image.open(jpeg(a, q)).convert("RGB"))
        got = fastreshuffle.restore(dec, "jpeg", device="cpu")
        np.testing.assert_array_equal(got, fastreshuffle.restore(dec, band, device="cpu"))
        assert np.abs(got.astype(int) - fastreshuffle.restore(dec, GENERAL, device="cpu")).max() > 0
        src = tmp_path / f"d{q}.png"
        Image.fromarray(dec).save(src)
        assert main(["restore", str(src), "--device", "cpu"]) == 0
        err = capsys.readouterr().err
        assert f"restored by {band}" in err and f"quality ~{q}: 100% of the correction" in err


def test_a_band_file_whose_pixels_come_out_unchanged_is_not_said_restored(tmp_path, capsys):
    """A flat q90 JPEG goes to the high band, whose output is kept nowhere (a uniform area): its
    note must not say the band's model restored it; the count says passed through."""
    src = tmp_path / "flat.jpg"
    Image.fromarray(np.full((96, 96, 3), 120, np.uint8)).save(src, quality=90)
    assert main(["restore", str(src), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "restored by" not in err and "1 passed through" in err
    assert f"{JPEG_HIGH}, the model of that quality band, ran, but the pixels came out as they were" in err


def test_demo_says_which_network_restored_a_high_quality_jpeg(tmp_path, capsys):
    for model in ("auto", "jpeg"):
        assert main(["demo", "--model", model, "--quality", "95", "-o", str(tmp_path / f"{model}.png"),
                     "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert f"model {JPEG_HIGH}" in out and "left unchanged" not in out


def test_the_highest_qualities_pass_through():
    a = photo(128)
    for q in (98, 100):
        dec = np.asarray(Image.open(jpeg(a, q)).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(fastreshuffle.restore(Image.open(jpeg(a, q)), "jpeg",
                                                                       device="cpu")), dec)


def cli_restore_and_eval(tmp_path, capsys, src, model, low, general, codec_args, band):
    """``fastreshuffle restore`` of ``src`` (a file of the low band) writes what restore() with
    ``low`` gives and says so; ``eval --model model`` records the band and scores like ``--model
    low``, unlike the general file by path (no bands)."""
    assert main(["restore", str(src), "--device", "cpu", "--precision", "fp32"]) == 0
    assert f"restored by {low}" in capsys.readouterr().err
    want = np.asarray(fastreshuffle.restore(Image.open(src), low, device="cpu", precision="fp32"))
    np.testing.assert_array_equal(np.asarray(Image.open(src.with_name(src.stem + "_restored.png"))), want)

    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(photo(64)).save(data / "p.png")
    out = {}
    for m in (model, low, general):
        j = tmp_path / "e.json"
        args = ["--model", m] if m != general else ["--weights", m]
        assert main(["eval", "--data", str(data), *codec_args, "--quality", "10", "--device", "cpu", "-q",
                     "--json", str(j), "--overwrite", *args]) == 0
        doc = json.loads(j.read_text())
        out[m] = doc["results"][0]["psnr_restored"]
        if m == model:
            assert doc["model"]["bands"] == bands_of(model) and doc["model"]["bands"][low] == band
    assert out[model] == out[low] != out[general]


def test_cli_restore_and_eval_use_the_bands(tmp_path, capsys):
    src = tmp_path / "low.jpg"
    src.write_bytes(jpeg(photo(), 10).getvalue())
    cli_restore_and_eval(tmp_path, capsys, src, "jpeg", JPEG_LOW, GENERAL, [], f"JPEG quality <= {JPEG_LOW_MAX:g}")


def test_cli_restore_and_eval_use_the_high_band(tmp_path, capsys):
    src = tmp_path / "high.jpg"
    src.write_bytes(jpeg(photo(), 90).getvalue())
    assert main(["restore", str(src), "--device", "cpu", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert f"restored by {JPEG_HIGH}" in err and "75% of the correction" in err
    want = np.asarray(fastreshuffle.restore(Image.open(src), JPEG_HIGH, device="cpu", precision="fp32"))
    np.testing.assert_array_equal(np.asarray(Image.open(src.with_name("high_restored.png"))), want)
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(photo(64)).save(data / "p.png")
    out = {}
    for args in (["--model", "jpeg"], ["--model", JPEG_HIGH], ["--weights", GENERAL]):
        j = tmp_path / "e.json"
        assert main(["eval", "--data", str(data), "--quality", "90", "--device", "cpu", "--precision", "fp32", "-q",
                     "--json", str(j), "--overwrite", *args]) == 0
        out[args[1]] = json.loads(j.read_text())["results"][0]["psnr_restored"]
    assert out["jpeg"] == out[JPEG_HIGH] != out[GENERAL]
    # and eval scores what restore() gives that JPEG file (the band's network at the band's strength)
    from fastreshuffle.io.codecs import jpeg_file
    from fastreshuffle.metrics import psnr
    a = np.asarray(Image.open(data / "p.png").convert("RGB"))
    got = fastreshuffle.restore(Image.open(io.BytesIO(jpeg_file(a, 90))), "jpeg", device="cpu", precision="fp32")
    assert abs(out["jpeg"] - psnr(a, np.asarray(got))) < 1e-9


# ------------------------------------------------------------------------------------ HEVC
def test_hevc_band_decision():
    assert HEVC_LOW in available_models()                     # shipped with the package
    assert band_model("hevc", qp=HEVC_LOW_MIN_QP) == band_model("hevc", qp=51) == HEVC_LOW
    assert band_model("hevc", qp=HEVC_LOW_MIN_QP - 1) == "hevc"
    assert band_model("hevc") == band_model("hevc", quality=10) == "hevc"   # no QP: the model asked for
    assert band_model("jpeg", qp=51) == "jpeg" and band_model(GENERAL_HEVC, qp=51) == GENERAL_HEVC
    loads = []
    b = Bands("hevc", lambda m: loads.append(m) or m)
    assert [b.net(qp=44), b.net(qp=42), b.net(qp=41), b.net()] == [HEVC_LOW, HEVC_LOW, "hevc", "hevc"]
    assert loads == [HEVC_LOW, "hevc"]


def heif(tmp_path, a, quality):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = tmp_path / f"q{quality}.heic"
    Image.fromarray(a).save(path, quality=quality)
    return path


def test_low_quality_heif_goes_to_the_hevc_specialist(tmp_path):
    from fastreshuffle.io.heif_qp import heif_qp
    a = photo(128)
    low, mid = heif(tmp_path, a, 10), heif(tmp_path, a, 15)   # QP 42 and 39
    assert heif_qp(low.read_bytes()) >= HEVC_LOW_MIN_QP > heif_qp(mid.read_bytes())

    def run(path, model):
        return np.asarray(fastreshuffle.restore(Image.open(path), model, device="cpu", precision="fp32"))
    got = run(low, "hevc")
    np.testing.assert_array_equal(got, run(low, HEVC_LOW))
    assert np.abs(got.astype(int) - run(low, GENERAL_HEVC)).max() > 0   # so the check above tells them apart
    np.testing.assert_array_equal(run(mid, "hevc"), run(mid, GENERAL_HEVC))   # QP below the band


def test_cli_restore_and_eval_use_the_hevc_band(tmp_path, capsys):
    cli_restore_and_eval(tmp_path, capsys, heif(tmp_path, photo(128), 10), "hevc", HEVC_LOW, GENERAL_HEVC,
                         ["--codec", "hevc"], f"HEVC QP >= {HEVC_LOW_MIN_QP:g}")


def test_hevc_paper_has_no_band_and_the_hevc_guard(tmp_path):
    """"hevc-paper" (the paper preset, asked for by name only) restores every QP itself, under the
    HEIF guard of its codec: a low-QP file passes through, a high-QP one gets its full output."""
    from fastreshuffle.inference.loading import bands_of, load_model, model_codec
    from fastreshuffle.inference.tiling import restore_uint8
    assert "hevc-paper" in available_models() and model_codec("hevc-paper") == "hevc"
    assert band_model("hevc-paper", qp=51) == "hevc-paper" and bands_of("hevc-paper") == {}
    net = load_model("hevc-paper", "cpu")
    assert net.config.layers == (17, 10, 10) and tuple(net.config.growth) == (64, 32, 16)   # Table 1
    a = photo(64)
    high, low = heif(tmp_path, a, 80), heif(tmp_path, a, 10)      # QP 7: strength 0; QP 42: strength 1
    dec_high, dec_low = (np.asarray(Image.open(p).convert("RGB")) for p in (high, low))
    out_high = np.asarray(fastreshuffle.restore(Image.open(high), "hevc-paper", device="cpu", precision="fp32"))
    np.testing.assert_array_equal(out_high, dec_high)
    out_low = np.asarray(fastreshuffle.restore(Image.open(low), "hevc-paper", device="cpu", precision="fp32"))
    np.testing.assert_array_equal(out_low, restore_uint8(net, dec_low, tile=0))
    assert (out_low != dec_low).any()
