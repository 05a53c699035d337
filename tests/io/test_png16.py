"""16-bit colour PNG: our decoder against an independent per-byte encoder of all five filters."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.io.png16 import encode_png16, png16_header, read_png16


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def reference_png(arr: np.ndarray, filters) -> bytes:
    """Straight from the PNG spec, one byte at a time: row r uses filters[r % len(filters)]."""
    h, w, ch = arr.shape
    bpp = 2 * ch
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(int)
    rows = []
    for r in range(h):
        f = filters[r % len(filters)]
        cur, prev = raw[r], (raw[r - 1] if r else np.zeros_like(raw[r]))
        out = []
        for i in range(len(cur)):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][f]
            out.append((cur[i] - pred) % 256)
        rows.append(bytes([f] + out))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if ch == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("filters", [[0], [1], [2], [0, 1, 2], [3], [4], [0, 1, 2, 3, 4]])
def test_decoder_matches_every_filter(tmp_path, channels, filters):
    rng = np.random.default_rng(len(filters) * 10 + channels)
    a = (rng.random((13, 17, channels)) * 65536).astype(np.uint16)
    a[4:7] = 40000  # flat rows: predictions that hit exactly
    a[:, 3] = 0
    # rows 8+: bytes from {0, 2, 4} only, so Paeth's ties (c halfway between a and b) happen often
    a[8:] = rng.choice(np.array([0x0000, 0x0202, 0x0404], np.uint16), size=a[8:].shape)
    p = tmp_path / "x.png"
    p.write_bytes(reference_png(a, filters))
    assert png16_header(p) == (17, 13, channels)
    np.testing.assert_array_equal(read_png16(p), a)
    # Pillow reads the same file at 8 bits: the high bytes
    np.testing.assert_array_equal(np.asarray(Image.open(p)), (a >> 8).astype(np.uint8))


def test_encoder_roundtrip_and_metadata(tmp_path):
    rng = np.random.default_rng(1)
    a = (rng.random((21, 9, 3)) * 65536).astype(np.uint16)
    p = tmp_path / "y.png"
    p.write_bytes(encode_png16(a, icc=b"profile-bytes", xmp=b"<x/>", text={"Software": "t"}))
    np.testing.assert_array_equal(read_png16(p), a)
    im = Image.open(p)
    assert im.info["icc_profile"] == b"profile-bytes"
    assert im.info["xmp"] == b"<x/>"


def test_not_png16(tmp_path):
    p = tmp_path / "z.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p)
    assert png16_header(p) is None
    with pytest.raises(ValueError):
        read_png16(p)


def test_8bit_picture_of_a_16bit_png_is_rounded(tmp_path):
    """The 8-bit picture read from a 16-bit colour PNG (training data, eval, the guard) is each
    sample's nearest 8-bit value, as for 16-bit grey; Pillow's own decode keeps the high byte
    (0.5 level low on average, training targets included)."""
    from fastreshuffle.io.images import load_image_file
    a = np.array([[[0, 128, 129], [25850, 25828, 65535], [65407, 65408, 257 * 100 + 129]]], np.uint16)
    p = tmp_path / "c.png"
    p.write_bytes(encode_png16(a))
    f = load_image_file(p)
    np.testing.assert_array_equal(f.rgb16, a)
    np.testing.assert_array_equal(f.rgb, np.round(a / 257.0).astype(np.uint8))
    assert f.rgb[0, 1, 0] == 101 and np.asarray(Image.open(p))[0, 1, 0] == 100
    rgba = np.concatenate([a, np.full(a.shape[:2] + (1,), 25850, np.uint16)], axis=2)
    p4 = tmp_path / "a.png"
    p4.write_bytes(encode_png16(rgba))
    assert load_image_file(p4).alpha[0, 0] == 101
