"""Whether a JPEG file's compressed data is whole: every block of every scan there and well formed
(``torch.ops.fastreshuffle.jpeg_scan_check``; the walk in ``csrc/jpeg_check/jpeg_scan.h``).

libjpeg decodes damage into pictures and Pillow does not pass on its warnings: data that ends
early (a file cut and an end-of-image marker added; a header claiming 16000 x 16000 over 700
bytes, which also took minutes and gigabytes to decode) comes out flat grey, garbage as noise, a
restart marker out of sequence shifts what follows.  ``restore`` refuses such a file in one line
instead of restoring the damaged picture (docs/restore.md).  The walk reads the Huffman codes
without decoding pixels: about 1/10 of the decode's time."""
from __future__ import annotations

from typing import Optional

__all__ = ["jpeg_damage", "one_whole_scan"]

_WHAT = {
    2: "its compressed data ends early",
    3: "bits in its compressed data that are no code of its Huffman tables",
    4: "a block's coefficients run past the end of the block",
    5: "a restart marker missing or out of sequence",
    6: "a header segment is damaged",
}


def _walk(data: bytes):
    import torch

    from ..ops._extension import ops
    return ops.jpeg_scan_check(torch.frombuffer(bytearray(data), dtype=torch.uint8)
                               if data else torch.empty(0, dtype=torch.uint8))


def one_whole_scan(data: bytes) -> bool:
    """Whether the JPEG file ``data`` holds one scan, walked whole (False for the kinds the walk does
    not cover): a sequential file Pillow calls truncated is then only missing its end-of-image
    marker.  (A progressive file cut between two scans walks whole too -- 36 cuts of a 256-px q75
    one did, the first after its DC scan, 22 dB off the whole file -- and so would a sequential one
    coded a component per scan, cut after its first: the caller takes only sequential files, and
    libjpeg writes all components in one scan.)"""
    status, _, _, _, scans = _walk(data)
    return status == 0 and scans == 1


def jpeg_damage(data: bytes) -> Optional[str]:
    """What is wrong with the JPEG file ``data``, in words, or None: whole, or of a kind the walk
    does not cover (arithmetic coding, lossless, hierarchical; the decoder is then trusted)."""
    status, offset, done, total, scan = _walk(data)
    if status in (0, 1):
        return None
    what = _WHAT.get(status, "its compressed data is damaged")
    where = f"scan {scan}: {done} of its {total} blocks read, at byte {offset}" if status != 6 else f"at byte {offset}"
    if status == 2:
        # the data runs to the end of the file, or to an end-of-image marker there: cut short
        cut = offset >= len(data) - 2
        return (f"{'truncated image file' if cut else 'damaged JPEG'}: {what} ({where}); a decoder would fill "
                "what is missing with grey")
    return f"damaged JPEG: {what} ({where})"
