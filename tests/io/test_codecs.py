"""Codec round trips: shapes, exact sizes, quality ordering, spec strings."""
import numpy as np
import pytest

from fastreshuffle.io import codecs
from fastreshuffle.metrics import psnr


def _photo(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 7.0), 128 + 90 * np.cos(y / 5.0 + x / 11.0), (x * y) % 256], -1)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,lo,hi", [("jpeg", 10, 90), ("hevc", 10, 80), ("webp", 10, 90)])
def test_low_quality_is_worse_and_smaller(name, lo, hi):
    img = _photo()
    a = codecs.compress(img, f"{name}:{lo}")
    b = codecs.compress(img, f"{name}:{hi}")
    for c in (a, b):
        assert c.image.shape == img.shape and c.image.dtype == np.uint8
        assert c.nbytes > 0
        assert c.bpp == pytest.approx(8 * c.nbytes / (64 * 80))
    assert psnr(img, a.image) < psnr(img, b.image)
    assert a.bpp < b.bpp


def test_jpeg_size_is_the_file_size():
    import io
    from PIL import Image
    img = _photo()
    c = codecs.jpeg(img, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=30, subsampling=2)
    assert c.nbytes == len(buf.getvalue())


def test_odd_sizes_and_options():
    img = _photo(37, 51)
    for spec in ["jpeg:20:444", "hevc:30:444", "hevc:qp=35", "hevc:30:10bit", "webp:50", "jpg:10", "heic:20"]:
        c = codecs.compress(img, spec)
        assert c.image.shape == img.shape, spec
        assert psnr(img, c.image) > 14, spec


def test_hevc_qp_orders_rate():
    img = _photo()
    r = [codecs.compress(img, f"hevc:qp={qp}").bpp for qp in (22, 32, 42)]
    assert r[0] > r[1] > r[2]


def test_parse_spec():
    s = codecs.parse_spec("hevc:15:444")
    assert (s.name, s.quality, s.kwargs()["subsampling"]) == ("hevc", 15, "444")
    assert codecs.parse_spec("hevc:444").quality is None
    assert codecs.parse_spec("jpeg", 7).quality == 7
    assert str(codecs.parse_spec("JPEG:10")) == "jpeg:10"
    assert codecs.parse_spec("hevc:qp=30").kwargs() == {"qp": 30, "quality": None}
    for bad in ["png:10", "jpeg:0", "jpeg:101", "jpeg:10:bogus", "hevc:qp=60"]:
        with pytest.raises(codecs.CodecError):
            codecs.compress(_photo(16, 16), bad)


def test_rejects_non_rgb():
    with pytest.raises(codecs.CodecError):
        codecs.jpeg(np.zeros((8, 8), np.uint8))
    with pytest.raises(codecs.CodecError):
        codecs.jpeg(np.zeros((8, 8, 3), np.float32))
