"""The quantiser a lossy WebP file was coded with, read from its own VP8 frame header.

A WebP file does not state the quality its encoder was given, but its VP8 key frame states the
quantiser index (0-127, RFC 6386 section 9.6) of the luma AC coefficients, and, where the encoder
split the macroblocks into up to four segments (libwebp does by default, coding busy areas more
coarsely), each segment's index and the probabilities of the segment tree the macroblocks' ids
were coded with.  The guard needs how coarsely the picture was quantised
(:func:`fastreshuffle.inference.guard.webp_strength`): this module returns the luma AC index
averaged over the segments, each weighted by the share of macroblocks its tree probabilities
give (the encoder sets them from its own counts).

Only what that needs is parsed: the RIFF chunks (``VP8 `` alone, or inside the extended format
``VP8X``), the frame tag and the first partition's boolean-coded header up to the quantiser
indices.  A lossless (``VP8L``) or animated file, or anything unexpected or truncated, gives
``None``, never an exception.
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Tuple

__all__ = ["WebpQuant", "webp_lossless", "webp_quant"]


class _Bad(Exception):
    """Anything this parser does not understand."""


class WebpQuant(NamedTuple):
    base: int                       # y_ac_qi of the frame header (0-127)
    segments: Tuple[int, ...]       # each segment's luma AC index (one entry without segmentation)
    shares: Tuple[float, ...]       # the share of macroblocks each segment's tree probabilities give
    index: float                    # the mean luma AC index, weighted by those shares


class _Bool:
    """The boolean entropy decoder of RFC 6386 section 7.3 (bits read past the end are zeros)."""

    def __init__(self, data: bytes, start: int, end: int):
        if end - start < 2:
            raise _Bad("first partition too short")
        self.data, self.pos, self.end = data, start + 2, end
        self.value = (data[start] << 8) | data[start + 1]
        self.range, self.bits = 255, 0

    def bool(self, prob: int) -> int:
        split = 1 + (((self.range - 1) * prob) >> 8)
        big = split << 8
        if self.value >= big:
            bit, self.range, self.value = 1, self.range - split, self.value - big
        else:
            bit, self.range = 0, split
        while self.range < 128:
            self.value <<= 1
            self.range <<= 1
            self.bits += 1
            if self.bits == 8:
                self.bits = 0
                if self.pos < self.end:
                    self.value |= self.data[self.pos]
                    self.pos += 1
        return bit

    def literal(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bool(128)
        return v

    def signed(self, n: int) -> int:
        v = self.literal(n)
        return -v if self.bool(128) else v

    def optional_signed(self, n: int) -> int:
        return self.signed(n) if self.bool(128) else 0


def _vp8_chunk(data: bytes) -> Tuple[int, int]:
    """(start, end) of the lossy ``VP8 `` chunk's payload of a still WebP file."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _Bad("not a WebP file")
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    pos = 12
    while pos + 8 <= end:
        kind = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if start + size > end:
            raise _Bad("truncated chunk")
        if kind == b"VP8 ":
            return start, start + size
        if kind in (b"VP8L", b"ANIM", b"ANMF"):
            raise _Bad("lossless or animated")
        pos = start + size + (size & 1)
    raise _Bad("no VP8 chunk")


def webp_lossless(data: bytes) -> bool:
    """Whether the WebP file ``data`` is lossless: its (first frame's) image a ``VP8L`` chunk.
    False for a lossy one and for anything that is not a WebP file."""
    try:
        if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            return False
        pos, end = 12, len(data)
        while pos + 8 <= end:
            kind, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
            if kind in (b"VP8L", b"VP8 "):
                return kind == b"VP8L"
            if kind == b"ANMF":        # a frame: 16 bytes of its own, then its image's chunks
                pos += 8 + 16
                continue
            pos += 8 + size + (size & 1)
    except (struct.error, TypeError):
        pass
    return False


def webp_quant(data: bytes) -> Optional[WebpQuant]:
    """The luma AC quantiser of the lossy still WebP file ``data`` (:class:`WebpQuant`), or None
    where there is none to read (lossless, animated, not WebP, damaged)."""
    try:
        data = data if isinstance(data, bytes) else bytes(data)
        start, end = _vp8_chunk(data)
        if end - start < 10:
            raise _Bad("VP8 frame too short")
        tag = data[start] | (data[start + 1] << 8) | (data[start + 2] << 16)
        if tag & 1:
            raise _Bad("not a key frame")
        first = tag >> 5
        if data[start + 3:start + 6] != b"\x9d\x01\x2a":
            raise _Bad("no VP8 start code")
        if first == 0 or start + 10 + first > end:
            raise _Bad("first partition outside the chunk")
        b = _Bool(data, start + 10, start + 10 + first)
        b.literal(2)                                   # colour space, clamping type
        segment_q = None
        absolute = False
        probs = None                                   # no map coded: every macroblock in segment 0
        if b.bool(128):                                # segmentation enabled
            update_map = b.bool(128)
            if b.bool(128):                            # update segment feature data
                absolute = bool(b.bool(128))
                segment_q = [b.optional_signed(7) for _ in range(4)]
                for _ in range(4):
                    b.optional_signed(6)               # loop filter level per segment
            if update_map:
                probs = [b.literal(8) if b.bool(128) else 255 for _ in range(3)]
        b.literal(1 + 6 + 3)                           # filter type, level, sharpness
        if b.bool(128) and b.bool(128):                # loop filter deltas, updated
            for _ in range(8):
                b.optional_signed(6)
        b.literal(2)                                   # log2 of the DCT partitions
        base = b.literal(7)
        if segment_q is None:
            segments: Tuple[int, ...] = (base,)
            shares: Tuple[float, ...] = (1.0,)
        else:
            segments = tuple(min(127, max(0, q if absolute else base + q)) for q in segment_q)
            if probs is None:
                shares = (1.0, 0.0, 0.0, 0.0)
            else:
                p0, p1, p2 = (p / 256.0 for p in probs)
                shares = (p0 * p1, p0 * (1 - p1), (1 - p0) * p2, (1 - p0) * (1 - p2))
        total = sum(shares)
        if total <= 0:
            raise _Bad("no segment has macroblocks")
        index = sum(q * s for q, s in zip(segments, shares)) / total
        return WebpQuant(base, segments, tuple(s / total for s in shares), index)
    except (_Bad, struct.error, IndexError, ValueError, TypeError):   # (TypeError: not bytes at all)
        return None
