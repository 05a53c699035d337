"""``fastreshuffle restore`` (the CLI) gives the pixels of ``fastreshuffle.restore`` (the API),
pixel for pixel, for each kind of input file, with the shipped JPEG model.

What the CLI reads is documented in docs/restore.md ("What happens to odd inputs"): EXIF
orientation applied, grey saved as grey, alpha re-attached, CMYK converted to RGB, 16-bit
restored at 16 bits, ICC profile copied.  Each test builds the file, runs the CLI in-process,
and compares its output with the API applied to the pixels the file holds, decoded here
independently (for EXIF: ``np.rot90`` of the stored pixels, so a rotation the wrong way fails;
the old test compared only the size, which both directions give).

Two pipelines: the network's output as is (CLI ``--model jpeg --no-guard``, API
``guard=False``) for every kind of file; and the default, guarded one for JPEG files (CLI
defaults, API on the PIL image, whose quantisation tables it reads): restored in the stored
orientation, then turned.
"""
from __future__ import annotations

import numpy as np
import pytest
from helpers import png16_bytes
from PIL import Image

import fastreshuffle
from fastreshuffle.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")

ORIENTATION = 0x0112


def _photo(h, w, seed=0):
    """Smooth texture + noise: content where the model makes real changes and no two
    orientations look alike."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(x / 4.0 + y / 9.0), 120 + 80 * np.cos(y / 3.0),
                    100 + 2 * x + y], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _cli(src, out_dir, *extra, guard=False):
    raw = [] if guard else ["--model", "jpeg", "--no-guard"]
    assert cli_main(["restore", "--quiet", "--device", "cpu", *raw, str(src), "-o", str(out_dir),
                     *map(str, extra)]) == 0
    outs = list(out_dir.glob(f"{src.stem}_restored.png"))
    assert len(outs) == 1, list(out_dir.iterdir())
    return Image.open(outs[0])


def _api(pixels, **kw):
    """The network's output as is (the CLI's --no-guard)."""
    return fastreshuffle.restore(np.ascontiguousarray(pixels), "jpeg", device="cpu", guard=False, **kw)


def _assert_same(cli_img, expect, mode):
    assert cli_img.mode == mode
    got = np.asarray(cli_img)
    assert got.shape == expect.shape, (got.shape, expect.shape)
    diff = got.astype(int) != np.asarray(expect).astype(int)
    assert not diff.any(), f"{diff.sum()} of {diff.size} values differ from the API"


def test_rgb(tmp_path):
    src = tmp_path / "rgb.jpg"
    Image.fromarray(_photo(40, 56)).save(src, quality=20)
    stored = np.asarray(Image.open(src).convert("RGB"))
    out = _cli(src, tmp_path / "o")
    expect = _api(stored)
    assert np.abs(expect.astype(int) - stored).max() > 0            # the model changed the image
    _assert_same(out, expect, "RGB")
    _assert_same(out, np.asarray(fastreshuffle.restore(Image.open(src), "jpeg", device="cpu", guard=False)), "RGB")


def test_rgb_guarded(tmp_path):
    """Defaults on both sides: the CLI's auto model and JPEG guard (the file's tables) against
    the API on the PIL image of the file (it reads the same tables)."""
    src = tmp_path / "rgb.jpg"
    Image.fromarray(_photo(40, 56)).save(src, quality=20)
    out = _cli(src, tmp_path / "o", guard=True)
    expect = np.asarray(fastreshuffle.restore(Image.open(src), device="cpu"))
    assert np.abs(expect.astype(int) - np.asarray(Image.open(src).convert("RGB"))).max() > 0
    _assert_same(out, expect, "RGB")


def test_rgb_tiled(tmp_path):
    """--tile 16 against tile=16 (several tiles, overlap 32)."""
    src = tmp_path / "big.png"
    Image.fromarray(_photo(45, 70, seed=1)).save(src)
    _assert_same(_cli(src, tmp_path / "o", "--tile", 16), _api(np.asarray(Image.open(src)), tile=16), "RGB")


def test_gray(tmp_path):
    src = tmp_path / "gray.png"
    gray = _photo(33, 47, seed=2)[..., 1]
    Image.fromarray(gray, "L").save(src)
    out = _cli(src, tmp_path / "o")
    _assert_same(out, _api(gray), "L")
    _assert_same(out, np.asarray(fastreshuffle.restore(Image.open(src), "jpeg", device="cpu", guard=False)), "L")


def test_rgba(tmp_path):
    src = tmp_path / "rgba.png"
    rgba = np.dstack([_photo(30, 41, seed=3), np.random.default_rng(3).integers(0, 256, (30, 41), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src)
    out = _cli(src, tmp_path / "o")
    _assert_same(out, _api(rgba), "RGBA")
    assert np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_cmyk(tmp_path):
    """CMYK JPEG: the CLI converts to RGB and saves RGB (documented); the API restores a CMYK
    PIL image through the same RGB conversion and converts back."""
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo(36, 52, seed=4)).convert("CMYK").save(src, quality=40)
    im = Image.open(src)
    assert im.mode == "CMYK"
    out = _cli(src, tmp_path / "o")
    _assert_same(out, _api(np.asarray(im.convert("RGB"))), "RGB")
    api_cmyk = fastreshuffle.restore(Image.open(src), "jpeg", device="cpu", guard=False)
    assert api_cmyk.mode == "CMYK"
    _assert_same(out, np.asarray(api_cmyk.convert("RGB")), "RGB")


def _png16(path, a):
    """A 16-bit PNG (grey or RGB) written by hand: Pillow cannot write 16-bit RGB."""
    path.write_bytes(png16_bytes(a))


def _read16(path):
    from fastreshuffle.io.png16 import read_png16
    return read_png16(path)


def test_16bit_gray(tmp_path):
    """16-bit grey PNG: restored at 16 bits, saved as 16-bit grey."""
    src = tmp_path / "g16.png"
    v = _photo(28, 44, seed=5)[..., 0].astype(np.uint16) * 257 + np.random.default_rng(5).integers(0, 257, (28, 44)).astype(np.uint16)
    _png16(src, v)
    assert Image.open(src).mode == "I;16"
    out = _cli(src, tmp_path / "o")
    got = np.asarray(out).astype(np.uint16) if out.mode.startswith("I") else None
    assert got is not None, out.mode
    expect = _api(v)
    assert expect.dtype == np.uint16
    assert np.array_equal(got.reshape(expect.shape), expect), np.abs(got.astype(int) - expect).max()


def test_16bit_rgb(tmp_path):
    """16-bit RGB PNG: decoded at 16 bits (fastreshuffle.io.png16), restored and saved at 16 bits."""
    src = tmp_path / "rgb16.png"
    v = _photo(28, 44, seed=6).astype(np.uint16) * 257 + np.random.default_rng(6).integers(0, 257, (28, 44, 3)).astype(np.uint16)
    _png16(src, v)
    _cli(src, tmp_path / "o")
    got = _read16(tmp_path / "o" / "rgb16_restored.png")
    expect = _api(v)
    assert got.dtype == np.uint16 and got.shape == expect.shape
    assert np.array_equal(got, expect), np.abs(got.astype(int) - expect).max()


@pytest.mark.parametrize("guard", [False, True], ids=["raw", "guarded"])
@pytest.mark.parametrize("orientation,k", [(6, -1), (8, 1)], ids=["6-rotate-cw", "8-rotate-ccw"])
def test_exif_orientation(tmp_path, orientation, k, guard):
    """EXIF 6: the stored pixels are shown rotated 90 degrees clockwise (np.rot90(stored, -1));
    EXIF 8: counter-clockwise (np.rot90(stored, 1)).  The CLI writes the upright image: raw, the
    network on the upright pixels; guarded, the network on the stored pixels (the JPEG's block
    grid on the network's), then turned."""
    src = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(_photo(24, 40, seed=7)).save(src, quality=30, exif=exif)
    stored = np.asarray(Image.open(src).convert("RGB"))            # Pillow does not rotate on open
    assert stored.shape == (24, 40, 3)
    out = _cli(src, tmp_path / "o", guard=guard)
    if guard:
        restored_stored = np.asarray(fastreshuffle.restore(Image.open(src), device="cpu"))
        expect, wrong_way = np.rot90(restored_stored, k), np.rot90(restored_stored, -k)
    else:
        expect, wrong_way = _api(np.rot90(stored, k)), _api(np.rot90(stored, -k))
    _assert_same(out, expect, "RGB")
    assert not np.array_equal(np.asarray(out), wrong_way)       # the check can tell the directions apart
    assert out.getexif().get(ORIENTATION) in (None, 1)           # the PNG is upright: no rotation tag


def _icc_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("kind", ["jpeg-rgb", "png-rgba"])
def test_icc_profile_bytes_preserved(tmp_path, kind):
    icc = _icc_profile()
    assert len(icc) > 100
    if kind == "jpeg-rgb":
        src = tmp_path / "icc.jpg"
        pixels = _photo(32, 32, seed=8)
        Image.fromarray(pixels).save(src, quality=50, icc_profile=icc)
        pixels, mode = np.asarray(Image.open(src).convert("RGB")), "RGB"
    else:
        src = tmp_path / "icc.png"
        pixels = np.dstack([_photo(32, 32, seed=9), np.full((32, 32), 200, np.uint8)])
        Image.fromarray(pixels, "RGBA").save(src, icc_profile=icc)
        mode = "RGBA"
    assert Image.open(src).info.get("icc_profile") == icc
    out = _cli(src, tmp_path / "o")
    assert out.info.get("icc_profile") == icc
    _assert_same(out, _api(pixels), mode)
