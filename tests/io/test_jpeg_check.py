"""The JPEG scan check (``csrc/jpeg_check/jpeg_scan.h``, :func:`fastreshuffle.io.jpeg_check.jpeg_damage`):
every well-formed file Pillow writes passes; data that ends early, restart markers out of
sequence, damaged headers are found, with where."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from fastreshuffle.io.jpeg_check import jpeg_damage
from fastreshuffle.ops._extension import ops


def _status(data: bytes):
    return list(ops.jpeg_scan_check(torch.tensor(list(data), dtype=torch.uint8)))


def _photo(h, w, seed=0):
    """Smooth structure plus noise: codes of many lengths, long and short blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None] * np.array([1.0, 0.6, -0.8])
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _jpeg(a, mode="RGB", **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).convert(mode).save(b, "JPEG", **kw)
    return b.getvalue()


KINDS = [dict(quality=10), dict(quality=90, subsampling=0), dict(quality=95, subsampling=1), dict(quality=100),
         dict(quality=50, optimize=True), dict(quality=75, progressive=True),
         dict(quality=30, progressive=True, subsampling=0), dict(quality=80, restart_marker_blocks=3),
         dict(quality=80, restart_marker_rows=1, progressive=True)]


@pytest.mark.parametrize("kw", KINDS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (17, 9), (16, 16), (33, 65), (100, 3), (131, 257)], ids=str)
def test_every_file_pillow_writes_passes(kw, shape):
    a = _photo(*shape)
    for mode in ("RGB", "L", "CMYK"):
        data = _jpeg(a, mode, **kw)
        assert _status(data)[0] == 0 and jpeg_damage(data) is None, (mode, _status(data))


@pytest.mark.parametrize("kw", [dict(quality=50), dict(quality=50, progressive=True),
                                dict(quality=50, restart_marker_blocks=4), dict(quality=90, subsampling=0)], ids=str)
def test_data_that_ends_early_is_found_wherever_it_is_cut(kw):
    """Cut anywhere in its compressed data, with the end-of-image marker put back (what libjpeg
    then decodes as grey) or without: found, and said as a truncation."""
    data = _jpeg(_photo(120, 160), **kw)
    start = data.index(b"\xff\xda") + 20
    for cut in np.linspace(start, len(data) - 40, 12).astype(int):
        for tail in (b"", b"\xff\xd9"):
            damaged = data[:cut] + tail
            assert _status(damaged)[0] == 2, (cut, tail)
            assert jpeg_damage(damaged).startswith("truncated image file: its compressed data ends early (scan ")


def test_libjpeg_fills_the_missing_part_with_grey():
    """Why it matters: the decoder does not fail, it paints what is missing mid-grey."""
    data = _jpeg(_photo(128, 128), quality=50)
    damaged = data[:len(data) // 2] + b"\xff\xd9"
    a = np.asarray(Image.open(io.BytesIO(damaged)).convert("RGB"))
    assert (a[-16:] == 128).all()
    assert "scan 1: " in jpeg_damage(damaged)


def test_a_small_file_claiming_a_huge_picture_is_found_at_once():
    data = bytearray(_jpeg(_photo(16, 16), quality=50))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 16000, 16000)
    status, offset, done, total, scan = _status(bytes(data))
    assert (status, scan, total) == (2, 1, 16000 * 16000 // 64 * 3 // 2) and done < 10


def test_restart_markers_out_of_sequence():
    data = bytearray(_jpeg(_photo(64, 96), quality=50, restart_marker_blocks=4))
    i = data.index(b"\xff\xd3")
    data[i + 1] = 0xD5
    assert _status(bytes(data))[0] == 5
    assert jpeg_damage(bytes(data)).startswith("damaged JPEG: a restart marker missing or out of sequence (scan 1: ")


def test_damaged_tables_and_kinds_not_covered():
    data = _jpeg(_photo(32, 32), quality=50)
    i = data.index(b"\xff\xc4")
    bad = bytearray(data)
    bad[i + 5:i + 21] = bytes([0, 3, 3]) + bytes(13)    # more codes of length 2-3 than there are
    assert _status(bytes(bad))[0] == 6 and "a header segment is damaged" in jpeg_damage(bytes(bad))
    assert _status(data[:i + 10])[0] == 6                # the table cut short
    arith = bytearray(data)
    arith[data.index(b"\xff\xc0") + 1] = 0xC9            # arithmetic coding: not walked, the decoder trusted
    assert _status(bytes(arith))[0] == 1 and jpeg_damage(bytes(arith)) is None
    assert _status(b"\xff\xd8\xff\xd9")[0] == 2           # no picture at all
    assert _status(b"")[0] == 6 and _status(b"GIF89a")[0] == 6


def test_what_libjpeg_decodes_without_a_word_is_not_refused():
    """A file without Huffman tables (Motion-JPEG frames: libjpeg-turbo takes the standard ones)
    is not walked; a sequential scan whose Ss / Se are not 0 / 63 is read whole, as libjpeg reads it."""
    data = _jpeg(_photo(32, 48), quality=50)
    no_tables = bytearray()
    pos = 2
    no_tables += data[:2]
    while data[pos + 1] != 0xDA:                    # every segment before the scan but the DHTs
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] != 0xC4:
            no_tables += data[pos:pos + 2 + n]
        pos += 2 + n
    no_tables += data[pos:]
    assert _status(bytes(no_tables))[0] == 1 and jpeg_damage(bytes(no_tables)) is None
    odd = bytearray(data)
    sos = data.index(b"\xff\xda")
    ns = data[sos + 4]
    odd[sos + 5 + 2 * ns + 1] = 62                   # Se
    assert _status(bytes(odd))[0] == 0
    Image.open(io.BytesIO(bytes(odd))).load()


def _segments(data: bytes):
    """(offset, marker, length) of each segment before the first scan."""
    out, pos = [], 2
    while data[pos + 1] != 0xDA:
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        out.append((pos, data[pos + 1], n))
        pos += 2 + n
    return out + [(pos, 0xDA, struct.unpack(">H", data[pos + 2:pos + 4])[0])]


@pytest.mark.parametrize("subsampling", [0, 2])
def test_components_sharing_one_id_are_taken_in_order(subsampling):
    """libjpeg maps a scan's components to the frame's first unused one with that id, so a file
    whose components are all numbered 1 decodes as the original: it was refused (the walk took the
    last such component for each)."""
    data = _jpeg(_photo(48, 64), quality=50, subsampling=subsampling)
    same = bytearray(data)
    for pos, m, n in _segments(data):
        if m == 0xC0:
            for i in range(same[pos + 9]):
                same[pos + 10 + 3 * i] = 1
        if m == 0xDA:
            for i in range(same[pos + 4]):
                same[pos + 5 + 2 * i] = 1
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(bytes(same)))), np.asarray(Image.open(io.BytesIO(data))))
    assert _status(bytes(same))[0] == 0


def test_a_frame_header_before_another_costs_nothing_and_the_last_is_walked():
    """A progressive header claiming 65535 x 65535 before the real one: the walk made 2.3 GB of
    state for it, then stopped at the second header saying all was well (Pillow reports the last)."""
    import time
    data = _jpeg(_photo(64, 64), quality=50, progressive=True)
    pos = data.index(b"\xff\xc2")
    first = data.index(b"\xff\xda")
    after = min(i for i in (data.find(b"\xff\xc4", first + 2), data.find(b"\xff\xda", first + 2)) if i > 0)
    huge = b"\xff\xc2\x00\x14\x08\xff\xff\xff\xff\x04" + b"".join(bytes([i + 1, 0x44, 0]) for i in range(4))
    t0 = time.perf_counter()
    assert _status(data[:pos] + huge + data[pos:])[0] == 0       # the real frame, walked
    cut = data[:pos] + huge + data[pos:(first + after) // 2] + b"\xff\xd9"   # in the first scan
    assert _status(cut)[0] == 2 and time.perf_counter() - t0 < 2
    alone = bytearray(data)                                       # one frame claiming more blocks than bits
    alone[pos + 5:pos + 9] = struct.pack(">HH", 65535, 65535)
    status, _, done, total, scan = _status(bytes(alone))
    assert (status, done, scan) == (2, 0, 1) and total > 8 * len(alone)


def test_header_quirks_libjpeg_skips_are_not_refused():
    """An over-subscribed table no scan uses (libjpeg builds only those a scan reads) and FF 00
    between two segments (libjpeg skips it) decode to the same picture: not refused."""
    data = _jpeg(_photo(32, 32), quality=50)
    pos = data.index(b"\xff\xc4")
    payload = b"\x13" + bytes([0, 5] + [0] * 14) + bytes([1, 2, 3, 4, 5])   # AC table 3: 5 codes of 2 bits
    unused = b"\xff\xc4" + struct.pack(">H", len(payload) + 2) + payload
    for variant in (data[:pos] + unused + data[pos:], data[:pos] + b"\xff\x00" + data[pos:]):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(variant))), np.asarray(Image.open(io.BytesIO(data))))
        assert _status(variant)[0] == 0


def test_bytes_after_a_whole_scan_are_allowed():
    """libjpeg warns of "extraneous bytes" there and decodes the same picture; cameras write them."""
    data = _jpeg(_photo(32, 32), quality=50)
    eoi = data.rindex(b"\xff\xd9")
    assert _status(data[:eoi] + b"\x12\x34\x56" + data[eoi:])[0] == 0


@pytest.mark.parametrize("kw", [dict(quality=30), dict(quality=90, subsampling=0, restart_marker_blocks=3)])
def test_a_file_missing_only_its_end_marker_is_read(tmp_path, kw):
    """From a CLI probe (session 52): a whole JPEG without its last 2 bytes (FF D9) was refused
    as Pillow's "truncated image file (39 bytes not processed)"; its data is whole, and it decodes
    to the same pixels with the marker put back.  Cut one byte earlier it is still refused, and so
    is a progressive file cut between two scans (a review: it walks whole, and decoded 22 dB off)."""
    from fastreshuffle.errors import ImageReadError
    from fastreshuffle.io.images import load_image_file
    from fastreshuffle.io.jpeg_check import one_whole_scan
    data = _jpeg(_photo(96, 120), **kw)
    assert data.endswith(b"\xff\xd9")
    whole = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    (tmp_path / "a.jpg").write_bytes(data[:-2])
    f = load_image_file(tmp_path / "a.jpg")
    assert np.array_equal(f.rgb, whole)
    assert any("end-of-image marker is missing" in n for n in f.notes), f.notes
    assert one_whole_scan(data[:-2]) and not one_whole_scan(data[:-3])
    (tmp_path / "b.jpg").write_bytes(data[:-3])
    with pytest.raises(ImageReadError, match="truncated"):
        load_image_file(tmp_path / "b.jpg")
    prog = _jpeg(_photo(96, 120), quality=75, progressive=True)
    sos = [i for i in range(len(prog) - 1) if prog[i:i + 2] == b"\xff\xda"]
    for cut in (sos[1], len(prog) - 2):     # after its first scan (DC only); all scans, marker missing
        (tmp_path / "p.jpg").write_bytes(prog[:cut])
        with pytest.raises(ImageReadError, match="truncated"):
            load_image_file(tmp_path / "p.jpg")


def _one_component_of_three(data: bytes) -> bytes:
    """A grey file's frame header made to claim three components (1x1, table 0), its one scan still
    coding only the first: a file coded a component per scan, cut before its second (``cjpeg
    -scans`` writes them; Pillow does not)."""
    pos = data.index(b"\xff\xc0")
    n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
    assert data[pos + 9] == 1
    sof = data[pos + 4:pos + 9] + bytes([3]) + data[pos + 10:pos + 13] + bytes([2, 0x11, 0, 3, 0x11, 0])
    return data[:pos] + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + data[pos + 2 + n:]


@pytest.mark.parametrize("tail", [b"\xff\xd9", b""], ids=["eoi", "no-eoi"])
def test_a_component_in_no_scan_is_a_truncation(tmp_path, tail):
    """From a review: a file coded one component per scan, cut before its second scan (end-of-image
    marker put back or not), walks whole -- its one scan is -- and libjpeg decodes the colours never
    coded flat; it was restored, exit 0, without its end marker with a note that its data was whole."""
    from fastreshuffle.errors import ImageReadError
    from fastreshuffle.io.images import load_image_file
    grey = _jpeg(_photo(48, 64), "L", quality=50)
    cut = _one_component_of_three(grey)[:-2] + tail
    assert Image.open(io.BytesIO(cut)).mode == "RGB" and _status(cut)[0] == 0
    assert jpeg_damage(cut) == ("truncated image file: its compressed data ends early (components 2, 3 of its 3 "
                                "in none of its 1 scan); a decoder would fill what is missing with grey")
    (tmp_path / "c.jpg").write_bytes(cut)
    with pytest.raises(ImageReadError, match="components 2, 3 of its 3 in none"):
        load_image_file(tmp_path / "c.jpg")
    assert jpeg_damage(grey) is None


def test_a_file_the_walk_does_not_cover_is_said_unchecked(tmp_path):
    """From a review: an arithmetic-coded JPEG cut short (end-of-image marker put back) was restored
    as if whole, with no word; its damage cannot be found, so a note says it was not checked."""
    from fastreshuffle.io.images import load_image_file
    from fastreshuffle.io.jpeg_check import jpeg_check
    from helpers import ARITHMETIC_JPEG as ARITHMETIC
    cut = ARITHMETIC[:-30] + b"\xff\xd9"
    Image.open(io.BytesIO(cut)).load()                   # libjpeg: no error
    for data in (ARITHMETIC, cut):
        damage, unchecked = jpeg_check(data)
        assert damage is None and unchecked == ("its compressed data is not checked for damage (it is "
                                                "arithmetic-coded): if it is cut short, the missing part is "
                                                "decoded as grey")
        (tmp_path / "a.jpg").write_bytes(data)
        assert unchecked in load_image_file(tmp_path / "a.jpg").notes
    assert jpeg_check(_jpeg(_photo(16, 16), quality=50)) == (None, None)
