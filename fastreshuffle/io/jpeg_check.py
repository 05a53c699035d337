"""Whether a JPEG file's compressed data is whole: every block of every scan there and well formed
(``torch.ops.fastreshuffle.jpeg_scan_check``; the walk in ``csrc/jpeg_check/jpeg_scan.h``).

libjpeg decodes damage into pictures and Pillow does not pass on its warnings: data that ends
early (a file cut and an end-of-image marker added; a header claiming 16000 x 16000 over 700
bytes, which also took minutes and gigabytes to decode) comes out flat grey, garbage as noise, a
restart marker out of sequence shifts what follows.  ``restore`` refuses such a file in one line
instead of restoring the damaged picture (docs/restore.md).  The walk reads the Huffman codes
without decoding pixels: about 1/10 of the decode's time."""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

__all__ = ["jpeg_check", "jpeg_damage", "one_whole_scan"]

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
    libjpeg writes all components in one scan: :func:`jpeg_damage` refuses it first, a component
    in none of its scans.)"""
    status, _, _, _, scans = _walk(data)
    return status == 0 and scans == 1


# a marker in or after a scan's data: FF then neither 00 (a stuffed FF), FF (fill) nor RST0-7
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _uncoded_components(data: bytes) -> Optional[Tuple[List[int], int]]:
    """(the 1-based numbers of the frame's components that none of the file's scans codes, its
    number of components), or None where the segments cannot be followed.  A file coded one
    component per scan and cut before its second walks whole, and libjpeg decodes the colours never
    coded as flat without a word (a review: ``cjpeg -scans``, cut, restored exit 0 with a note that
    its data was whole).  Only the first frame counts (an MPO's first image), as in the walk."""
    comps: List[int] = []
    seen: List[bool] = []
    pos, scans = 2, 0
    while True:
        while pos < len(data) and data[pos] != 0xFF:   # (bytes between segments, as the walk skips them)
            pos += 1
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 1 >= len(data):
            break
        m = data[pos + 1]
        pos += 2
        if m == 0xD9:
            break
        if m == 0x00 or m == 0x01 or 0xD0 <= m <= 0xD8:
            continue
        if pos + 2 > len(data):
            return None
        n = (data[pos] << 8) | data[pos + 1]
        seg = data[pos + 2:pos + n]
        if n < 2 or pos + n > len(data):
            return None
        pos += n
        if m in (0xC0, 0xC1, 0xC2):
            if scans:
                break                      # a second frame: not the one walked
            if len(seg) < 6 or len(seg) < 6 + 3 * seg[5]:
                return None
            comps = [seg[6 + 3 * i] for i in range(seg[5])]
            seen = [False] * len(comps)
        elif m == 0xDA:
            if not seg or len(seg) < 1 + 2 * seg[0]:
                return None
            scans += 1
            taken: List[int] = []
            for i in range(seg[0]):        # the first frame component with this id not yet in the scan
                k = next((k for k, c in enumerate(comps) if c == seg[1 + 2 * i] and k not in taken), None)
                if k is None:
                    return None
                taken.append(k)
                seen[k] = True
            found = _MARKER.search(data, pos)   # past the scan's data
            pos = found.start() if found else len(data)
    return ([k + 1 for k, s in enumerate(seen) if not s], len(comps)) if comps and scans else None


def _not_walked(data: bytes, offset: int) -> str:
    """Why the walk did not cover a file, from the marker of the segment it stopped at."""
    m = data[offset - 1] if 0 < offset <= len(data) else 0
    if m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
        return "it is arithmetic-coded"
    if m == 0xC3:
        return "it is lossless"
    if m in (0xC5, 0xC6, 0xC7):
        return "it is hierarchical"
    if m == 0xDA:
        return "its scans use Huffman tables the file leaves out"
    return "its height is given after its data (a DNL marker)"


def jpeg_check(data: bytes) -> Tuple[Optional[str], Optional[str]]:
    """(what is wrong with the JPEG file ``data``, in words, or None; why its data could not be
    checked, or None).  The walk does not cover arithmetic coding, lossless and hierarchical
    files, and a few rarer kinds: the decoder is then trusted, and a file cut short decodes with
    grey where its data ends, unnoticed -- the second says so, for a note (a review: a cut
    arithmetic-coded file was restored as if whole, with no word)."""
    status, offset, done, total, scan = _walk(data)
    if status == 1:
        return None, (f"its compressed data is not checked for damage ({_not_walked(data, offset)}): "
                      "if it is cut short, the missing part is decoded as grey")
    return _damage(data, status, offset, done, total, scan), None


def jpeg_damage(data: bytes) -> Optional[str]:
    """What is wrong with the JPEG file ``data``, in words, or None: whole, or of a kind the walk
    does not cover (arithmetic coding, lossless, hierarchical; the decoder is then trusted:
    :func:`jpeg_check` says so)."""
    return _damage(data, *_walk(data))


def _damage(data: bytes, status: int, offset: int, done: int, total: int, scan: int) -> Optional[str]:
    if status == 0:
        uncoded = _uncoded_components(data)
        if uncoded and uncoded[0]:
            missing, components = uncoded
            # every scan whole, but a component in none of them: the file was cut between scans
            # (one component a scan); libjpeg paints the colours never coded flat without a word
            which = ", ".join(str(k) for k in missing)
            return (f"truncated image file: its compressed data ends early (component{'s' if len(missing) > 1 else ''} "
                    f"{which} of its {components} in none of its {scan} scan{'s' if scan != 1 else ''}); "
                    "a decoder would fill what is missing with grey")
        return None
    if status == 1:
        return None
    what = _WHAT.get(status, "its compressed data is damaged")
    where = f"scan {scan}: {done} of its {total} blocks read, at byte {offset}" if status != 6 else f"at byte {offset}"
    if status == 2:
        # the data runs to the end of the file, or to an end-of-image marker there: cut short
        cut = offset >= len(data) - 2
        return (f"{'truncated image file' if cut else 'damaged JPEG'}: {what} ({where}); a decoder would fill "
                "what is missing with grey")
    return f"damaged JPEG: {what} ({where})"
