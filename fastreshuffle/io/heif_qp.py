"""The quantiser a HEIF (HEVC still image) file was coded with, read from its own bitstream.

A HEIF file does not state its quality, but every HEVC slice header does state its quantisation
parameter: ``SliceQpY = 26 + init_qp_minus26 (PPS) + slice_qp_delta (slice header)``.  This is
what the do-no-harm guard needs (:func:`fastreshuffle.inference.guard.hevc_guarded`): it measures
how coarsely the picture was quantised, whatever the encoder's quality knob and however easy the
content (a smooth picture coded at "quality 40" gets a lower QP than a detailed one).

Only what that needs is parsed: the ISO-BMFF boxes that locate the primary image's coded data
(``pitm``, ``iinf``, ``iref``/``dimg`` for a grid of tiles, ``iprp``/``ipma`` for each item's
``hvcC``, ``iloc``), the parameter sets (SPS, PPS) in the ``hvcC``, and each independent slice
header up to ``slice_qp_delta``.  Anything unexpected (another codec, a scaling list, a non-IDR or
non-intra slice, a truncated file) gives ``None`` -- the caller then falls back to another
estimate -- never an exception.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterator, List, Optional, Tuple

__all__ = ["heif_qp"]


# A slice header up to slice_qp_delta takes a few dozen bits; only this much of a slice NAL is
# unescaped and read (a phone photo's slices are megabytes).
_SLICE_HEADER_BYTES = 128
# Bounds the standard sets (or no real file exceeds), checked before anything is computed from
# them: a picture side (HEVC levels stop at 16,888), and parameter-set NAL units in one hvcC (a
# still image has one VPS, SPS and PPS; the ids allow 16 SPS and 64 PPS).
_MAX_SIDE = 1 << 16
_MAX_PARAMETER_SETS = 128


class _Bad(Exception):
    """Anything this parser does not understand."""


# ----------------------------------------------------------------------------- ISO-BMFF boxes
def _boxes(data: bytes, start: int = 0, end: Optional[int] = None) -> Iterator[Tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise _Bad("truncated box")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise _Bad("bad box size")
        yield kind, pos + head, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> Tuple[int, int]:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    raise _Bad(f"no {kind!r} box")


class _Reader:
    """Big-endian fields of a box payload."""

    def __init__(self, data: bytes, pos: int, end: int):
        self.data, self.pos, self.end = data, pos, end

    def uint(self, n: int) -> int:
        if n == 0:
            return 0
        if self.pos + n > self.end:
            raise _Bad("truncated field")
        v = int.from_bytes(self.data[self.pos:self.pos + n], "big")
        self.pos += n
        return v

    def full(self) -> Tuple[int, int]:
        """A FullBox's (version, flags)."""
        return self.uint(1), self.uint(3)


def _items(data: bytes, ms: int, me: int):
    """-> (primary item id, {item id: type}, {from id: [dimg ids]}, {item id: hvcC (start, end)},
    {item id: [(construction method, offset, length)]}, idat (start, end) or None)."""
    r = _Reader(data, *_child(data, ms, me, b"pitm"))
    version, _ = r.full()
    primary = r.uint(2 if version == 0 else 4)

    types: Dict[int, bytes] = {}
    s, e = _child(data, ms, me, b"iinf")
    r = _Reader(data, s, e)
    version, _ = r.full()
    r.uint(2 if version == 0 else 4)
    for k, bs, be in _boxes(data, r.pos, e):
        if k != b"infe":
            continue
        ir = _Reader(data, bs, be)
        v, _ = ir.full()
        if v < 2:
            continue
        item = ir.uint(2 if v == 2 else 4)
        ir.uint(2)
        types[item] = bytes(data[ir.pos:ir.pos + 4])

    dimg: Dict[int, List[int]] = {}
    for k, s, e in _boxes(data, ms, me):
        if k != b"iref":
            continue
        r = _Reader(data, s, e)
        version, _ = r.full()
        w = 2 if version == 0 else 4
        for rk, rs, re_ in _boxes(data, r.pos, e):
            rr = _Reader(data, rs, re_)
            src = rr.uint(w)
            dst = [rr.uint(w) for _ in range(rr.uint(2))]
            if rk == b"dimg":
                dimg[src] = dst

    s, e = _child(data, ms, me, b"iprp")
    cs, ce = _child(data, s, e, b"ipco")
    props = [(k, ps, pe) for k, ps, pe in _boxes(data, cs, ce)]
    hvcc: Dict[int, Tuple[int, int]] = {}
    for k, ps, pe in _boxes(data, s, e):
        if k != b"ipma":
            continue
        r = _Reader(data, ps, pe)
        version, flags = r.full()
        for _ in range(r.uint(4)):
            item = r.uint(2 if version < 1 else 4)
            for _ in range(r.uint(1)):
                index = r.uint(2) & 0x7FFF if flags & 1 else r.uint(1) & 0x7F
                if 1 <= index <= len(props) and props[index - 1][0] == b"hvcC":
                    hvcc[item] = props[index - 1][1:]

    extents: Dict[int, List[Tuple[int, int]]] = {}
    r = _Reader(data, *_child(data, ms, me, b"iloc"))
    version, _ = r.full()
    a, b = r.uint(1), r.uint(1)
    off_size, len_size, base_size = a >> 4, a & 15, b >> 4
    index_size = b & 15 if version in (1, 2) else 0
    for _ in range(r.uint(2 if version < 2 else 4)):
        item = r.uint(2 if version < 2 else 4)
        method = r.uint(2) & 15 if version in (1, 2) else 0
        r.uint(2)
        base = r.uint(base_size)
        ext = []
        for _ in range(r.uint(2)):
            r.uint(index_size)
            ext.append((base + r.uint(off_size), r.uint(len_size)))
        extents[item] = [(method, o, n) for o, n in ext]
    idat = next(((s, e) for k, s, e in _boxes(data, ms, me) if k == b"idat"), None)
    return primary, types, dimg, hvcc, extents, idat


# ----------------------------------------------------------------------------- HEVC syntax
def _rbsp(nal: bytes) -> bytes:
    """NAL payload without its 2-byte header and emulation-prevention bytes."""
    out = bytearray()
    zeros = 0
    for byte in nal[2:]:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            if self.pos >= 8 * len(self.data):
                raise _Bad("truncated bitstream")
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise _Bad("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _sps(rbsp: bytes) -> dict:
    b = _Bits(rbsp)
    b.u(4)
    sub_layers = b.u(3)
    b.u(1)
    b.u(96)                                   # general profile, tier, flags and level
    present = [(b.u(1), b.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        b.u(2 * (8 - sub_layers))
    for profile, level in present:
        b.u(88 * profile + 8 * level)
    sps_id = b.ue()
    chroma = b.ue()
    if sps_id > 15 or chroma > 3:
        raise _Bad("SPS id or chroma format out of range")
    separate = b.u(1) if chroma == 3 else 0
    width, height = b.ue(), b.ue()
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise _Bad("picture size out of range")
    if b.u(1):
        for _ in range(4):
            b.ue()
    b.ue(), b.ue(), b.ue()                    # bit depths, log2_max_pic_order_cnt_lsb_minus4
    ordering = b.u(1)
    for _ in range(0 if ordering else sub_layers, sub_layers + 1):
        b.ue(), b.ue(), b.ue()
    min_cb = b.ue() + 3
    ctb = min_cb + b.ue()
    if not (3 <= min_cb <= ctb and 4 <= ctb <= 6):     # MinCbLog2SizeY >= 3, CtbLog2SizeY in 4..6
        raise _Bad("coding block sizes out of range")
    for _ in range(4):
        b.ue()
    if b.u(1) and b.u(1):                     # scaling_list_enabled and sps_scaling_list_data_present
        raise _Bad("scaling lists are not parsed")
    b.u(1)                                    # amp_enabled_flag
    sao = b.u(1)
    ctbs = -(-width // (1 << ctb)) * -(-height // (1 << ctb))
    return {"id": sps_id, "sao": sao, "chroma": 0 if separate else chroma, "separate": separate,
            "address_bits": (ctbs - 1).bit_length()}     # Ceil(Log2(PicSizeInCtbsY))


def _pps(rbsp: bytes) -> dict:
    b = _Bits(rbsp)
    pps_id, sps_id = b.ue(), b.ue()
    if pps_id > 63 or sps_id > 15:
        raise _Bad("PPS or SPS id out of range")
    dependent, output, extra = b.u(1), b.u(1), b.u(3)
    b.u(1), b.u(1)
    b.ue(), b.ue()
    return {"id": pps_id, "sps": sps_id, "dependent": dependent, "output": output, "extra": extra,
            "init_qp": 26 + b.se()}


def _slice_qp(nal: bytes, sps: Dict[int, dict], pps: Dict[int, dict]) -> Optional[int]:
    """SliceQpY of an independent IDR intra slice segment; None for a dependent segment."""
    kind = (nal[0] >> 1) & 63
    if kind not in (19, 20):                  # IDR_W_RADL, IDR_N_LP: what still images are
        raise _Bad(f"slice NAL type {kind} is not IDR")
    b = _Bits(_rbsp(nal[:_SLICE_HEADER_BYTES]))
    first = b.u(1)
    b.u(1)                                    # no_output_of_prior_pics_flag
    p = pps.get(b.ue())
    if p is None or p["sps"] not in sps:
        raise _Bad("slice refers to a missing parameter set")
    s = sps[p["sps"]]
    if not first:
        if p["dependent"] and b.u(1):
            return None
        b.u(s["address_bits"])
    b.u(p["extra"])
    if b.ue() != 2:
        raise _Bad("not an intra slice")
    if p["output"]:
        b.u(1)
    if s["separate"]:
        b.u(2)
    if s["sao"]:
        b.u(1)
        if s["chroma"]:
            b.u(1)
    return p["init_qp"] + b.se()


def _nals(data: memoryview, start: int, end: int, length_size: int) -> Iterator[memoryview]:
    pos = start
    while pos + length_size <= end:
        n = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if n < 2 or pos + n > end:
            raise _Bad("bad NAL length")
        yield data[pos:pos + n]      # a view of the file, not a copy
        pos += n


def _hvcc(data: bytes, s: int, e: int) -> Tuple[int, List[bytes]]:
    if e - s < 23:
        raise _Bad("short hvcC")
    length_size = (data[s + 21] & 3) + 1
    pos, out = s + 23, []
    for _ in range(data[s + 22]):
        if pos + 3 > e:
            raise _Bad("truncated hvcC")
        count = struct.unpack_from(">H", data, pos + 1)[0]
        pos += 3
        if len(out) + count > _MAX_PARAMETER_SETS:
            raise _Bad("too many parameter sets")
        for _ in range(count):
            n = struct.unpack_from(">H", data, pos)[0]
            out.append(bytes(data[pos + 2:pos + 2 + n]))
            pos += 2 + n
    return length_size, out


def _parameter_sets(data: bytes, s: int, e: int) -> Tuple[int, Dict[int, dict], Dict[int, dict]]:
    """(NAL length size, {id: SPS}, {id: PPS}) of the hvcC box payload data[s:e]."""
    length_size, params = _hvcc(data, s, e)
    sps: Dict[int, dict] = {}
    pps: Dict[int, dict] = {}
    for nal in params:
        if not nal:
            raise _Bad("empty parameter set")
        kind = (nal[0] >> 1) & 63
        if kind == 33:
            v = _sps(_rbsp(nal))
            sps[v["id"]] = v
        elif kind == 34:
            v = _pps(_rbsp(nal))
            pps[v["id"]] = v
    return length_size, sps, pps


# ----------------------------------------------------------------------------- the answer
def heif_qp(data: bytes) -> Optional[float]:
    """Mean slice QP of the primary image of the HEIF file ``data`` (all tiles of a grid), or None
    when it cannot be read (not HEVC, an unsupported feature, a damaged file)."""
    try:
        data = data if isinstance(data, bytes) else bytes(data)
        ms, me = _child(data, 0, len(data), b"meta")
        r = _Reader(data, ms, me)
        r.full()
        ms = r.pos
        primary, types, dimg, hvcc, extents, idat = _items(data, ms, me)
        items = dimg.get(primary, []) if types.get(primary) == b"grid" else [primary]
        qps: List[int] = []
        parsed: Dict[Tuple[int, int], tuple] = {}     # the tiles of a grid share one hvcC
        for item in items:
            if types.get(item) != b"hvc1" or item not in hvcc or item not in extents:
                raise _Bad("primary image is not HEVC")
            if hvcc[item] not in parsed:
                parsed[hvcc[item]] = _parameter_sets(data, *hvcc[item])
            length_size, sps, pps = parsed[hvcc[item]]
            for method, off, n in extents[item]:
                if method == 1:               # inside the idat box
                    if idat is None:
                        raise _Bad("no idat")
                    off += idat[0]
                elif method != 0:             # 0: file offset; 2 (from another item): not used for HEVC
                    raise _Bad(f"iloc construction method {method}")
                if n == 0 or off + n > len(data):
                    raise _Bad("item data outside the file")
                for nal in _nals(memoryview(data), off, off + n, length_size):
                    if ((nal[0] >> 1) & 63) < 32:          # a slice segment (VCL NAL)
                        qp = _slice_qp(nal, sps, pps)
                        if qp is not None:
                            qps.append(qp)
        if not qps or not all(-12 <= q <= 51 for q in qps):
            return None
        return sum(qps) / len(qps)
    except (_Bad, struct.error, IndexError, ValueError, OverflowError, MemoryError):
        return None
