"""One decision, ``guard.route``, says how ``restore()``, ``fastreshuffle restore`` and ``eval``
restore an input (a design review found it made three times, with differences: ``eval --codec
hevc --model jpeg`` used the HEIF QP guard where ``restore`` looks for JPEG in the pixels; ``eval
--codec webp`` gave the raw network where ``restore`` of a WebP file is guarded; ``restore(array,
"hevc", guard=True)`` warned "unguarded" and ran the JPEG guard)."""
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import fastreshuffle
import fastreshuffle as fr
from fastreshuffle.inference.guard import (BLIND, HEIF_QP, HEVC_ON_JPEG, HEVC_QP_UNKNOWN, TABLES, UNGUARDED,
                                           WEBP_ON_JPEG, WEBP_Q, WEBP_QUANT_UNKNOWN, route)


@pytest.mark.parametrize("codec, kw, kind, note", [
    ("jpeg", dict(jpeg_file=True, tables=True), TABLES, None),
    ("jpeg", dict(), BLIND, None),                                   # a PNG, an array
    ("jpeg", dict(jpeg_file=True), BLIND, None),                     # CMYK: tables not usable
    ("jpeg", dict(heif=True), BLIND, None),                          # a HEIF file given to the JPEG model
    ("jpeg", dict(guard=False, jpeg_file=True, tables=True), UNGUARDED, None),
    ("hevc", dict(heif=True), HEIF_QP, None),
    ("hevc", dict(jpeg_file=True, tables=True), TABLES, HEVC_ON_JPEG),
    ("hevc", dict(), UNGUARDED, HEVC_QP_UNKNOWN),
    ("hevc", dict(guard=True), UNGUARDED, HEVC_QP_UNKNOWN),         # no QP: not the JPEG guard either
    ("hevc", dict(guard=False), UNGUARDED, None),                    # --no-guard: nothing to say
    (None, dict(jpeg_file=True, tables=True), TABLES, None),         # a weights file naming no codec
    (None, dict(), UNGUARDED, None),
    (None, dict(jpeg_file=True, tables=True, named=False), UNGUARDED, None),  # a network built in Python
    (None, dict(guard=True), BLIND, None),
    ("jpeg", dict(webp=True), BLIND, None),                          # a lossy WebP file given to the JPEG model
    ("webp", dict(webp=True), WEBP_Q, None),
    ("webp", dict(jpeg_file=True, tables=True), TABLES, WEBP_ON_JPEG),
    ("webp", dict(), UNGUARDED, WEBP_QUANT_UNKNOWN),                 # a PNG, an array, a lossless WebP
    ("webp", dict(guard=True), UNGUARDED, WEBP_QUANT_UNKNOWN),
    ("webp", dict(heif=True), UNGUARDED, WEBP_QUANT_UNKNOWN),
    ("webp", dict(guard=False, webp=True), UNGUARDED, None),
    ("hevc", dict(webp=True), UNGUARDED, HEVC_QP_UNKNOWN),
])
def test_route(codec, kw, kind, note):
    assert tuple(route(codec, **kw)) == (kind, note)


def _picture(size=96):
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[120:120 + size, 180:180 + size, :3])


@pytest.mark.parametrize("model", ["hevc", "webp"])
def test_restore_hevc_on_an_array_with_guard_is_refused(model):
    """guard=True asked for a guard the HEVC / WebP model has nothing to go by on pixels: it gave
    the full correction with a warning (71.6% of a never-compressed photo's pixels changed, a
    helper's probe).  Refused now; left out, the full correction is said, as before."""
    a = _picture()
    with pytest.raises(ValueError, match="guard=True, but the (HEVC|WebP) model has no quantiser"):
        fastreshuffle.restore(a, model, device="cpu", precision="fp32", guard=True)


@pytest.mark.parametrize("model, said", [("hevc", "QP is unknown"),
                                         ("webp", "not a lossy still WebP file whose quantiser can be read")])
def test_restore_hevc_on_an_array_is_unguarded_as_it_says(model, said):
    """Without its file there is no quantiser: pixels get the full correction, said; guard=False
    gives the same without a word."""
    a = _picture()
    with pytest.warns(UserWarning, match=said):
        out = fastreshuffle.restore(a, model, device="cpu", precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = fastreshuffle.restore(a, model, device="cpu", precision="fp32", guard=False)
    np.testing.assert_array_equal(out, raw)


@pytest.mark.parametrize("codec", ["webp", "jpeg"])
def test_eval_restores_as_restore_does(codec):
    """eval's figure is that of restore() on the same decoded pixels (a WebP: JPEG looked for in
    its pixels) or the same opened file (a JPEG: its tables)."""
    from fastreshuffle.inference.evaluate import evaluate
    from fastreshuffle.inference.loading import Bands, get_model
    from fastreshuffle.io.codecs import parse_spec
    from fastreshuffle.metrics import psnr
    a = _picture(120)
    spec = parse_spec(codec)
    bands = Bands("jpeg", lambda m: get_model(m, torch.device("cpu"), False, "fp32"))
    res = evaluate([a], ["a"], spec, [{"quality": 30}], model=bands.net(), bands=bands)[0]
    coded = spec.with_quality(30)(a)
    if codec == "jpeg":
        import io

        from PIL import Image

        from fastreshuffle.io.codecs import jpeg_file
        src = Image.open(io.BytesIO(jpeg_file(a, 30)))
        assert np.array_equal(np.asarray(src.convert("RGB")), coded.image)
    else:
        src = coded.image
    out = np.asarray(fastreshuffle.restore(src, "jpeg", device="cpu", precision="fp32"))
    assert res["per_image"][0]["psnr_restored"] == pytest.approx(psnr(out, a), abs=1e-9)


def test_a_network_built_in_python_runs_unguarded_on_a_jpeg_file():
    """route(named=False): a network of unknown codec, built in Python, is not guarded by a JPEG
    file's tables unless asked (guard=True)."""
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[100:196, 100:196, :3])
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=30)
    torch.manual_seed(0)
    net = fr.ReshuffleNet(fr.ReshuffleNetConfig.preset("tiny")).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)                   # not the zero tail: it changes pixels
    im = lambda: Image.open(io.BytesIO(buf.getvalue()))   # noqa: E731
    default = np.asarray(fr.restore(im(), net))
    assert np.array_equal(default, np.asarray(fr.restore(im(), net, guard=False)))
    assert not np.array_equal(default, np.asarray(fr.restore(im(), net, guard=True)))


def test_api_and_cli_agree_on_a_cmyk_jpeg_given_to_the_hevc_model(tmp_path, capsys):
    """A CMYK JPEG has no tables the guard can use: restore() took it as TABLES (and then found no
    JPEG in its pixels: unchanged), the CLI as UNGUARDED (full correction, said): one route now."""
    from fastreshuffle.cli import main
    a = np.ascontiguousarray(__import__("skimage.data", fromlist=["astronaut"]).astronaut()[100:196, 100:196, :3])
    src = tmp_path / "c.jpg"
    Image.fromarray(a).convert("CMYK").save(src, quality=30)
    with pytest.warns(UserWarning, match="QP is unknown"):
        api = np.asarray(fr.restore(Image.open(src), "hevc", device="cpu").convert("RGB"))
    assert main(["restore", str(src), "--model", "hevc", "--device", "cpu", "--format", "png"]) == 0
    assert "QP is unknown" in capsys.readouterr().err
    cli = np.asarray(Image.open(tmp_path / "c_restored.png").convert("RGB"))
    assert np.abs(api.astype(int) - cli).max() <= 1     # (the CLI converts CMYK the same way, then writes RGB)


def test_flags_and_qp_take_only_what_they_mean():
    from fastreshuffle.errors import CodecError
    from fastreshuffle.io.codecs import check_qp
    for bad in ("²", "٣"):
        with pytest.raises(CodecError):
            check_qp(bad)
    for flag in ({"guard": 2}, {"half": -1}):
        with pytest.raises(TypeError, match="must be True or False"):
            fr.restore(np.zeros((16, 16, 3), np.uint8), **flag)
