"""The WebP model: a lossy WebP file is restored by ``webp`` with the share of the correction its
quantiser gives (read from the file, :mod:`fastreshuffle.io.webp_quant`), the same way by the
CLI, ``restore()`` and ``eval``; a lossless WebP, or a WebP of quality 100, comes back as it was."""
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import fastreshuffle as fr
from fastreshuffle.cli import main
from fastreshuffle.inference.guard import keep_uniform, webp_strength
from fastreshuffle.io.webp_quant import webp_quant


def _photo(size=160):
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[60:60 + size, 140:140 + size])


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def _expected(data: bytes) -> np.ndarray:
    """What the guard should make of a lossy WebP file, from parts checked on their own: the raw
    network (restore with guard=False), the share of the file's quantiser, the blend rounded, the
    decoded pixels kept where they are uniform."""
    dec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    s = webp_strength(webp_quant(data).index)
    if s <= 0:
        return dec
    raw = np.asarray(fr.restore(dec, "webp", device="cpu", precision="fp32", guard=False))
    mixed = np.clip(np.round(dec + s * (raw.astype(np.float32) - dec)), 0, 255).astype(np.uint8) if s < 1 else raw
    return keep_uniform(dec, mixed.copy())


def test_strength_follows_the_quantiser():
    idx = [webp_quant(_webp(_photo(), q)).index for q in (10, 30, 50, 75, 90, 95, 100)]
    s = [webp_strength(i) for i in idx]
    assert all(a >= b for a, b in zip(s, s[1:])), s           # less of the correction at higher qualities
    assert s[0] == 1.0 and s[-1] == 0.0 and webp_strength(127) == 1.0
    # just above the first point of the schedule (a flat or dark picture at q90: 9.0-9.2) a share
    # of 1% ran the network for nothing, and was said; none now, and a quarter where it was meant
    assert webp_strength(9.2) == 0.0 and webp_strength(9.4) > 0 and webp_strength(10.5) == 0.25


def _webp(a, q, **kw):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="WEBP", quality=q, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [20, 85])
def test_cli_api_and_eval_agree_on_a_lossy_webp(tmp_path, capsys, quality):
    a = _photo()
    data = _webp(a, quality)
    (tmp_path / "p.webp").write_bytes(data)
    assert main(["restore", str(tmp_path / "p.webp"), "--device", "cpu", "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "p.webp: model webp (" in err and "p.webp: WebP coded at quantiser" in err, err
    cli = np.asarray(Image.open(tmp_path / "p_restored.png"))
    want = _expected(data)
    np.testing.assert_array_equal(cli, want)
    api = fr.restore(Image.open(tmp_path / "p.webp"), device="cpu", precision="fp32")   # auto: webp
    np.testing.assert_array_equal(np.asarray(api), want)
    dec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    if quality == 20:
        assert _psnr(a, cli) > _psnr(a, dec) + 0.1             # it helps
    else:
        assert 0 < webp_strength(webp_quant(data).index) < 1 and not np.array_equal(cli, dec)   # a share of it
    from fastreshuffle.inference.evaluate import evaluate
    from fastreshuffle.inference.loading import get_model
    from fastreshuffle.io.codecs import parse_spec
    res = evaluate([a], ["a"], parse_spec("webp"), [{"quality": quality}],
                   model=get_model("webp", torch.device("cpu"), False, "fp32"))[0]
    assert res["per_image"][0]["psnr_restored"] == pytest.approx(_psnr(a, want), abs=1e-9)


def test_what_was_not_coded_lossy_comes_back_as_it_was(tmp_path, capsys):
    a = _photo()
    (tmp_path / "lossless.webp").write_bytes(_webp(a, 100, lossless=True))
    (tmp_path / "q100.webp").write_bytes(_webp(a, 100))
    assert main(["restore", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "lossless.webp: no JPEG compression found in the pixels" in err, err   # auto: the JPEG model, blind
    assert "q100.webp: WebP coded at quantiser 0 of 127: little to remove" in err, err
    assert "0 restored, 2 passed through" in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "lossless_restored.png")), a)
    q100 = np.asarray(Image.open(tmp_path / "q100.webp").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "q100_restored.png")), q100)


def test_webp_model_elsewhere(tmp_path, capsys):
    """A WebP image no longer its file's is returned unchanged, with a warning; the CLI says that
    pixels not from a lossy WebP file get the full correction (restore() on an array: test_route)."""
    a = _photo(64)
    dec = np.asarray(Image.open(io.BytesIO(_webp(a, 20))).convert("RGB"))
    for model in ("webp", "auto"):              # (auto took it to the JPEG model's blind path, silently)
        im = Image.open(io.BytesIO(_webp(a, 20)))
        im.load()                               # (Pillow lets go of the bytes)
        with pytest.warns(UserWarning, match="its quantiser is unknown, so it is returned unchanged"):
            same = fr.restore(im, model, device="cpu")
        np.testing.assert_array_equal(np.asarray(same), np.asarray(im))
    (tmp_path / "p.webp").write_bytes(_webp(a, 20))
    im = Image.open(tmp_path / "p.webp")
    im.load()
    im.putpixel((0, 0), (0, 0, 0))
    with pytest.warns(UserWarning, match="pixels are no longer its file's"):
        same = fr.restore(im, "webp", device="cpu")
    np.testing.assert_array_equal(np.asarray(same), np.asarray(im))
    Image.fromarray(dec).save(tmp_path / "d.png")
    assert main(["restore", str(tmp_path / "d.png"), "--model", "webp", "--device", "cpu"]) == 0
    assert "not a lossy still WebP file whose quantiser can be read" in capsys.readouterr().err


def test_webp_files_a_jpeg_model_or_a_copy_cannot_restore_say_so(tmp_path, capsys):
    """Findings of a helper's probe: a lossy WebP given to a JPEG model came back unchanged with a
    note that did not say why (and suggested --no-guard, which costs 1 dB at q90), and from the API
    with no word; so did a WebP image after .convert() / ImageOps.exif_transpose() / .copy() with
    --model auto.  An animated WebP was said to be restored ("only the first is restored") and
    then left as it was, and with --format same written as its first frame alone."""
    from PIL import ImageOps
    a = _photo(64)
    (tmp_path / "p.webp").write_bytes(_webp(a, 30))
    assert main(["restore", str(tmp_path / "p.webp"), "--model", "jpeg", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "a lossy WebP file, and no JPEG compression found" in err and "--model webp" in err, err
    assert "--no-guard" not in err
    with pytest.warns(UserWarning, match="a lossy WebP file given to a JPEG model"):
        fr.restore(Image.open(tmp_path / "p.webp"), "jpeg", device="cpu")
    for derive in (lambda i: i.convert("RGB"), lambda i: i.copy(), ImageOps.exif_transpose):
        with pytest.warns(UserWarning, match="decoded from a WebP file .its info says so."):
            fr.restore(derive(Image.open(tmp_path / "p.webp")), device="cpu")
    with warnings.catch_warnings():             # a PNG's image: nothing of the kind said
        warnings.simplefilter("error")
        Image.fromarray(a).save(tmp_path / "a.png")
        fr.restore(Image.open(tmp_path / "a.png").convert("RGB"), device="cpu")
    frames = [Image.fromarray(a), Image.fromarray(a[::-1].copy())]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], quality=30, duration=100)
    assert main(["restore", str(tmp_path / "anim.webp"), "--format", "same", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "an animated WebP" in err and "only the first is restored" not in err, err
    assert (tmp_path / "anim_restored.webp").read_bytes() == (tmp_path / "anim.webp").read_bytes()
    assert main(["restore", str(tmp_path / "anim.webp"), "--device", "cpu"]) == 0     # a PNG: the first frame
    assert "has 2 frames; only the first is read (and written)" in capsys.readouterr().err


def test_eval_takes_a_lossless_webp_for_an_original(tmp_path, capsys):
    """eval's "in a lossy format" warning went by the name: a lossless WebP was called lossy."""
    from fastreshuffle.io.webp_quant import webp_lossless
    a = _photo(64)
    (tmp_path / "lossless.webp").write_bytes(_webp(a, 100, lossless=True))
    (tmp_path / "q50.webp").write_bytes(_webp(a, 50))
    frames = [Image.fromarray(a), Image.fromarray(a[::-1].copy())]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert webp_lossless((tmp_path / "anim.webp").read_bytes()) and not webp_lossless(_webp(a, 50))
    assert not webp_lossless(b"RIFF") and not webp_lossless(None)
    assert main(["eval", "--data", str(tmp_path), "--codec", "jpeg", "--quality", "50", "--no-model"]) == 0
    err = capsys.readouterr().err
    assert "1 of the 3 images are in a lossy format (q50.webp)" in err, err
