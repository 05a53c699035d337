"""16-bit colour PNG (48-bit RGB, 64-bit RGBA): Pillow reads these at 8 bits and cannot write them.

:func:`read_png16` decodes the pixels at 16 bits (metadata still comes from Pillow);
:func:`encode_png16` writes them with ICC, EXIF, XMP and text chunks.  Only what a 16-bit
colour PNG needs is here: colour types 2 and 6 at bit depth 16, not interlaced (an Adam7
file is left to Pillow, at 8 bits).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {2: 3, 6: 4}  # colour type -> channels

__all__ = ["png16_header", "read_png16", "encode_png16"]


def png_ihdr(path: Union[str, Path]):
    """A PNG's ``(width, height, bit depth, colour type, interlace)``, or None when ``path`` is not
    a readable PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    if len(head) < 33 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def png16_header(path: Union[str, Path]):
    """``(width, height, channels)`` if ``path`` is a non-interlaced 16-bit RGB/RGBA PNG, else None."""
    ihdr = png_ihdr(path)
    if ihdr is None:
        return None
    w, h, depth, ctype, interlace = ihdr
    if depth != 16 or ctype not in _CHANNELS or interlace != 0:
        return None
    return w, h, _CHANNELS[ctype]


def _unfilter(data: bytes, h: int, w: int, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters; -> (h, w, bpp) uint8 (the raw big-endian sample bytes)."""
    stride = w * bpp
    if len(data) < h * (stride + 1):
        raise ValueError(f"PNG image data too short ({len(data)} bytes for {w}x{h})")
    rows = np.frombuffer(data, np.uint8, h * (stride + 1)).reshape(h, stride + 1)
    ft = rows[:, 0].astype(np.int64)
    if (ft > 4).any():
        raise ValueError(f"bad PNG filter type {int(ft.max())}")
    x = rows[:, 1:].reshape(h, w, bpp)
    if (ft <= 2).all():  # None / Sub / Up only: row by row, each row vectorised (uint8 wraps mod 256)
        out = np.empty((h, w, bpp), np.uint8)
        prev = np.zeros((w, bpp), np.uint8)
        for r in range(h):
            f = ft[r]
            if f == 0:
                out[r] = x[r]
            elif f == 1:
                np.cumsum(x[r], axis=0, dtype=np.uint8, out=out[r])
            else:
                np.add(x[r], prev, out=out[r])
            prev = out[r]
        return out
    x = x.astype(np.int64)
    # Average / Paeth depend on the reconstructed left neighbour: sweep anti-diagonals, each one
    # vectorised over every row (pixel (r, c) needs (r, c-1), (r-1, c) and (r-1, c-1)).
    rec = np.zeros((h + 1, w + 1, bpp), np.int64)
    for d in range(h + w - 1):
        r = np.arange(max(0, d - w + 1), min(d, h - 1) + 1)
        c = d - r
        a, b, cc, xv = rec[r + 1, c], rec[r, c + 1], rec[r, c], x[r, c]
        f = ft[r][:, None]
        p = a + b - cc
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        rec[r + 1, c + 1] = (xv + pred) & 255
    return rec[1:, 1:].astype(np.uint8)


def read_png16(path: Union[str, Path]) -> np.ndarray:
    """Decode a 16-bit RGB/RGBA PNG -> (H, W, 3|4) uint16.  ValueError on a malformed file."""
    head = png16_header(path)
    if head is None:
        raise ValueError("not a non-interlaced 16-bit RGB/RGBA PNG")
    w, h, ch = head
    raw = Path(path).read_bytes()
    pos, idat = 8, []
    while pos + 8 <= len(raw):
        (n,) = struct.unpack(">I", raw[pos:pos + 4])
        kind = raw[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat.append(raw[pos + 8:pos + 8 + n])
        elif kind == b"IEND":
            break
        pos += 12 + n
    try:
        data = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"corrupt PNG image data: {e}") from None
    samples = _unfilter(data, h, w, 2 * ch)
    return samples.reshape(h, w * ch * 2).view(">u2").reshape(h, w, ch).astype(np.uint16)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png16(arr: np.ndarray, *, icc: Optional[bytes] = None, exif: Optional[bytes] = None,
                 xmp: Optional[bytes] = None, text: Optional[Dict[str, str]] = None,
                 dpi: Optional[Tuple[float, float]] = None, level: int = 6) -> bytes:
    """(H, W, 3|4) uint16 -> the bytes of a 16-bit RGB/RGBA PNG (Sub filter on every row);
    ``text`` as tEXt chunks (iTXt where not Latin-1), ``dpi`` as pHYs."""
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) uint16 array, got {arr.dtype} {arr.shape}")
    h, w, ch = arr.shape
    bpp = 2 * ch
    b = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * bpp)
    filtered = b.copy()
    filtered[:, bpp:] = b[:, bpp:] - b[:, :-bpp]  # Sub: uint8 arithmetic wraps mod 256
    rows = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1)
    out = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2 if ch == 3 else 6, 0, 0, 0))]
    if icc:
        out.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    if xmp:
        out.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp))
    if dpi:
        ppm = [max(1, int(round(float(d) / 0.0254))) for d in dpi]
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    for key, value in (text or {}).items():
        try:
            out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
        except UnicodeEncodeError:
            out.append(_chunk(b"iTXt", key.encode("latin-1", "replace") + b"\0\0\0\0\0" + value.encode("utf-8")))
    data = zlib.compress(rows.tobytes(), level)
    step = 1 << 20
    out.extend(_chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)
