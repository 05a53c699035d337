"""io.webp_quant: the luma AC quantiser of a lossy WebP file, read from its VP8 frame header.

The header is written here by a boolean *encoder* (RFC 6386 section 7.3, independent of the
decoder under test) with known values in every field the reader passes over, so a field read in
the wrong order or width gives the wrong quantiser; then real libwebp files (Pillow)."""
import io
import struct

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.io.webp_quant import webp_quant


class _BoolEncoder:
    """RFC 6386 section 7.3's encoder."""

    def __init__(self):
        self.out, self.range, self.bottom, self.count = bytearray(), 255, 0, 24

    def _carry(self):
        i = len(self.out) - 1
        while i >= 0 and self.out[i] == 255:
            self.out[i] = 0
            i -= 1
        self.out[i] += 1

    def bool(self, bit, prob=128):
        split = 1 + (((self.range - 1) * prob) >> 8)
        if bit:
            self.bottom += split
            self.range -= split
        else:
            self.range = split
        while self.range < 128:
            self.range <<= 1
            if self.bottom & (1 << 31):
                self._carry()
            self.bottom = (self.bottom << 1) & 0xFFFFFFFF
            self.count -= 1
            if self.count == 0:
                self.out.append((self.bottom >> 24) & 0xFF)
                self.bottom &= (1 << 24) - 1
                self.count = 8

    def literal(self, v, n):
        for i in reversed(range(n)):
            self.bool((v >> i) & 1)

    def signed(self, v, n):     # an optional signed value: flag, magnitude, sign
        self.bool(v != 0)
        if v:
            self.literal(abs(v), n)
            self.bool(v < 0)

    def flush(self):
        c, v = self.count, self.bottom
        if v & (1 << (32 - c)):
            self._carry()
        v = (v << (c & 7)) & 0xFFFFFFFF
        for _ in range(c >> 3):
            v = (v << 8) & 0xFFFFFFFF
        for _ in range(4):
            self.out.append((v >> 24) & 0xFF)
            v = (v << 8) & 0xFFFFFFFF
        return bytes(self.out)


def _frame(base, segments=None, absolute=True, probs=(255, 255, 255), lf_deltas=True, extended=False):
    e = _BoolEncoder()
    e.literal(0, 1)
    e.literal(1, 1)                                   # colour space 0, clamping 1
    e.bool(segments is not None)
    if segments is not None:
        e.bool(probs != (255, 255, 255))              # update the map
        e.bool(1)                                     # update the feature data
        e.bool(absolute)
        for q in segments:
            e.signed(q, 7)
        for lf in (3, -5, 0, 63):
            e.signed(lf, 6)
        if probs != (255, 255, 255):
            for p in probs:
                e.bool(p != 255)
                if p != 255:
                    e.literal(p, 8)
    e.literal(1, 1)
    e.literal(37, 6)
    e.literal(5, 3)                                   # filter type, level, sharpness
    e.bool(lf_deltas)
    if lf_deltas:
        e.bool(1)
        for d in (2, 0, -2, -63, 4, -1, 0, 7):
            e.signed(d, 6)
    e.literal(2, 2)                                   # 4 DCT partitions
    e.literal(base, 7)
    for d in (-3, 0, 5, 0, -15):                      # y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas
        e.signed(d, 4)
    e.literal(0, 1)                                   # refresh_entropy_probs: past what is read
    part = e.flush() + bytes(64)
    tag = 0 | (0 << 1) | (1 << 4) | (len(part) << 5)   # key frame, version 0, shown
    frame = bytes([tag & 255, (tag >> 8) & 255, tag >> 16]) + b"\x9d\x01\x2a" + struct.pack("<HH", 64, 48) + part
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame + b"\0" * (len(frame) & 1)
    if extended:   # VP8X with an ICC profile chunk before the image
        icc = b"ICCP" + struct.pack("<I", 5) + b"abcde\0"
        chunk = b"VP8X" + struct.pack("<I", 10) + bytes([0x20, 0, 0, 0]) + bytes(6) + icc + chunk
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def test_encoded_headers_read_back():
    w = webp_quant(_frame(77, lf_deltas=False))
    assert (w.base, w.segments, w.shares, w.index) == (77, (77,), (1.0,), 77.0)
    assert webp_quant(_frame(5)).index == 5.0
    # absolute segment values, the map's tree probabilities weighting them
    w = webp_quant(_frame(60, segments=(90, 70, 40, 10), probs=(64, 192, 128)))
    p0, p1, p2 = 64 / 256, 192 / 256, 128 / 256
    shares = (p0 * p1, p0 * (1 - p1), (1 - p0) * p2, (1 - p0) * (1 - p2))
    assert w.base == 60 and w.segments == (90, 70, 40, 10)
    assert w.shares == pytest.approx(shares)
    assert w.index == pytest.approx(sum(q * s for q, s in zip((90, 70, 40, 10), shares)))
    # delta mode: base + delta, clamped to 0..127; an unchanged map (probabilities 255): all in segment 0
    w = webp_quant(_frame(100, segments=(-20, 0, 40, -127), absolute=False))
    assert w.segments == (80, 100, 127, 0)
    assert w.index == pytest.approx(80.0)
    assert webp_quant(_frame(33, segments=(50, 40, 30, 20), probs=(128, 128, 128), extended=True)).index == \
        pytest.approx(35.0)


def test_what_has_no_quantiser_gives_none():
    good = _frame(40, segments=(50, 40, 30, 20), probs=(100, 50, 200))
    assert webp_quant(good) is not None
    for bad in (b"", b"RIFF", good[:20], good[:40], b"\x89PNG\r\n\x1a\n" + good[8:],
                good[:12] + b"VP8L" + good[16:],                                # lossless
                good[:12] + b"ANIM" + good[16:],                                # animated
                good[:23] + b"\x00\x00\x00" + good[26:]):                        # no start code
        assert webp_quant(bad) is None
    for not_bytes in (None, "RIFF", 12):                                        # (a TypeError before)
        assert webp_quant(not_bytes) is None
    tag = bytearray(good)
    tag[20] |= 1                                                                # an inter frame
    assert webp_quant(bytes(tag)) is None
    rng = np.random.default_rng(0)
    for _ in range(200):                                                        # damaged: never an exception
        d = bytearray(good)
        d[rng.integers(12, len(d))] = rng.integers(0, 256)
        webp_quant(bytes(d)[: rng.integers(8, len(d) + 1)])


def _webp(img, **kw):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", **kw)
    return buf.getvalue()


def test_libwebp_files():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([128 + 90 * np.sin(x / 9), 128 + 80 * np.cos(y / 7), (x + y) % 256], -1) + rng.normal(0, 8, (96, 128, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    index = [webp_quant(_webp(img, quality=q)).index for q in (0, 10, 30, 50, 75, 90, 95, 100)]
    assert index[0] == 127 and index[-1] == 0
    assert all(a > b for a, b in zip(index, index[1:])), index                # coarser at a lower quality
    for q in (10, 50, 90):
        w = webp_quant(_webp(img, quality=q))
        assert sum(w.shares) == pytest.approx(1.0) and min(w.segments) <= w.index <= max(w.segments)
        assert webp_quant(_webp(img, quality=q, method=6)).index == pytest.approx(w.index, abs=3)
    assert webp_quant(_webp(img, lossless=True)) is None
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 200, np.uint8)], -1)
    data = _webp(rgba, quality=30)                                              # VP8X + ALPH + VP8
    assert data[12:16] == b"VP8X"
    assert webp_quant(data).index == pytest.approx(webp_quant(_webp(img, quality=30)).index, abs=3)
    frames = [Image.fromarray(img), Image.fromarray(img[::-1].copy())]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], quality=30)
    assert webp_quant(buf.getvalue()) is None
