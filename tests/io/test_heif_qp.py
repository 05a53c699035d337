"""io.heif_qp: the slice QP of a HEIF file's primary image, read from its bitstream."""
import io
import struct

import numpy as np
import pytest

from fastreshuffle.io import heif_qp as hq

pillow_heif = pytest.importorskip("pillow_heif")


def photo(size=96):
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[100:100 + size, 150:150 + size])


def heif(img, quality=50, qp=None, bits=8, params=None):
    if bits == 8:
        h = pillow_heif.from_bytes("RGB", img.shape[1::-1], img.tobytes())
    else:
        v = ((img.astype(np.uint32) * 1023 + 127) // 255) << 6
        h = pillow_heif.from_bytes("RGB;16", img.shape[1::-1], v.astype("<u2").tobytes())
    buf = io.BytesIO()
    h.save(buf, format="HEIF", quality=quality, chroma=420, save_to_12bit=False,
           enc_params={**({"x265:qp": str(qp)} if qp is not None else {}), **(params or {})})
    return buf.getvalue()


def test_fixed_qp_is_read_back():
    """x265 at a fixed --qp with no I-frame offset (ipratio 1) codes exactly that QP; with its
    default offset the QPs read back keep the differences; 10-bit files are read too."""
    a = photo()
    for q in (12, 20, 30, 41, 51):
        assert hq.heif_qp(heif(a, qp=q, params={"x265:ipratio": "1.0"})) == q
    got = [hq.heif_qp(heif(a, qp=q)) for q in (20, 30, 40)]
    assert None not in got and got[1] - got[0] == 10 and got[2] - got[1] == 10, got
    assert hq.heif_qp(heif(a, qp=30, bits=10, params={"x265:ipratio": "1.0"})) == 30


def test_quality_maps_to_qp_whatever_the_picture():
    """libheif's quality knob sets the slice QP monotonically, the same for a detailed photo and
    a flat one (so the guard's decision does not depend on how easy the content is)."""
    flat = np.full((96, 96, 3), 120, np.uint8)
    flat[:, 48:] = 200
    for q in (10, 40, 60):
        assert hq.heif_qp(heif(photo(), q)) == hq.heif_qp(heif(flat, q))
    qps = [hq.heif_qp(heif(photo(), q)) for q in (10, 20, 30, 40, 50, 60, 70)]
    assert all(b < a for a, b in zip(qps, qps[1:])), qps


def test_not_heif_or_damaged_gives_none_never_raises():
    data = heif(photo(), 30)
    buf = io.BytesIO()
    from PIL import Image
    Image.fromarray(photo()).save(buf, format="JPEG")
    assert hq.heif_qp(buf.getvalue()) is None
    assert hq.heif_qp(b"") is None and hq.heif_qp(b"\x00" * 64) is None
    for cut in range(0, len(data), max(1, len(data) // 60)):
        assert hq.heif_qp(data[:cut]) in (None, hq.heif_qp(data))      # truncated: None (or intact)
    rng = np.random.default_rng(0)
    for _ in range(200):                                               # corrupted bytes: no exception
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 3):
            bad[i] = int(rng.integers(0, 256))
        q = hq.heif_qp(bytes(bad))
        assert q is None or -12 <= q <= 51


# ------------------------------------------------------------------ a grid of tiles (phones)
def _box(kind, payload):
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full(kind, version, payload, flags=0):
    return _box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def _parts(data):
    """(hvcC payload, coded item bytes) of a single-image HEIF file."""
    ms, me = hq._child(data, 0, len(data), b"meta")
    primary, types, _, hvcc, extents, _ = hq._items(data, ms + 4, me)
    (method, off, n), = extents[primary]
    assert types[primary] == b"hvc1" and method == 0
    s, e = hvcc[primary]
    return data[s:e], data[off:off + n]


def grid_file(tiles, parts=None):
    """A HEIF file whose primary item is a grid of the given single-image files' coded images
    (item 1 = the grid, items 2.. = tiles, each with its own hvcC; ``parts``: (hvcC payload, coded
    bytes) pairs instead of files)."""
    parts = parts or [_parts(t) for t in tiles]
    n = len(parts)
    infe = b"".join(_full(b"infe", 2, struct.pack(">HH4s", i, 0, kind) + b"\x00")
                    for i, kind in [(1, b"grid")] + [(2 + k, b"hvc1") for k in range(n)])
    iinf = _full(b"iinf", 0, struct.pack(">H", n + 1) + infe)
    iref = _full(b"iref", 0, _box(b"dimg", struct.pack(">HH", 1, n) + b"".join(struct.pack(">H", 2 + k)
                                                                                  for k in range(n))))
    size = 96                                  # each tile's width and height (photo())
    ipco = _box(b"ipco", b"".join(_box(b"hvcC", h) for h, _ in parts)
                + _full(b"ispe", 0, struct.pack(">II", size, size))            # property n + 1
                + _full(b"ispe", 0, struct.pack(">II", size * n, size)))       # property n + 2
    ipma = _full(b"ipma", 0, struct.pack(">I", n + 1) + struct.pack(">HBB", 1, 1, n + 2)
                 + b"".join(struct.pack(">HBBB", 2 + k, 2, 0x80 | (k + 1), n + 1) for k in range(n)))
    iprp = _box(b"iprp", ipco + ipma)
    pitm = _full(b"pitm", 0, struct.pack(">H", 1))

    def meta(offsets):
        # iloc v1: offset/length 4 bytes, no base offset; the grid item's descriptor sits in idat
        items = [struct.pack(">HHHHII", 1, 1, 0, 1, 0, 8)]
        items += [struct.pack(">HHHHII", 2 + k, 0, 0, 1, offsets[k], len(parts[k][1])) for k in range(n)]
        iloc = _full(b"iloc", 1, bytes([0x44, 0x00]) + struct.pack(">H", n + 1) + b"".join(items))
        idat = _box(b"idat", struct.pack(">BBBBHH", 0, 0, 0, n - 1, size * n, size))
        return _full(b"meta", 0, _full(b"hdlr", 0, b"\x00" * 4 + b"pict" + b"\x00" * 13) + pitm + iinf + iref
                     + iprp + iloc + idat)

    ftyp = _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    head = len(ftyp) + len(meta([0] * n)) + 8
    offsets, pos = [], head
    for _, coded in parts:
        offsets.append(pos)
        pos += len(coded)
    return ftyp + meta(offsets) + _box(b"mdat", b"".join(c for _, c in parts))


def test_grid_of_tiles_averages_its_tiles():
    a = photo()
    t20, t40 = heif(a, qp=20), heif(a, qp=40)
    q20, q40 = hq.heif_qp(t20), hq.heif_qp(t40)
    assert hq.heif_qp(grid_file([t20])) == q20
    assert hq.heif_qp(grid_file([t20, t40, t40, t40])) == (q20 + 3 * q40) / 4
    # the grid is what pillow-heif / libheif decode too (so the file is a valid HEIF)
    grid = pillow_heif.open_heif(io.BytesIO(grid_file([t20, t40])))
    assert grid.size == (192, 96)
    dec = np.asarray(grid)
    assert np.abs(dec[:, :96].astype(int) - np.asarray(pillow_heif.open_heif(io.BytesIO(t20)))).max() == 0


# ------------------------------------------------------------------ out-of-range parameter sets
def _ue(v):
    b = bin(v + 1)[2:]
    return "0" * (len(b) - 1) + b


def _nal(kind, bits):
    """A NAL unit of type ``kind`` carrying ``bits`` (then a stop bit), with emulation prevention."""
    bits += "1"
    bits += "0" * (-len(bits) % 8)
    out, zeros = bytearray([kind << 1, 1]), 0
    for byte in (int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)):
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _sps_nal(sps_id=1, width=96, log2_ctb_delta=1):
    """An SPS up to its coding-block sizes: no sub-layers, 4:2:0, 8 bits."""
    head = "0001" + "000" + "1" + "10" * 48                     # VPS id, sub-layers, flag, profile
    bits = head + _ue(sps_id) + _ue(1) + _ue(width) + _ue(96) + "0" + _ue(0) * 3 + "1" + _ue(0) * 3
    return _nal(33, bits + _ue(0) + _ue(log2_ctb_delta) + _ue(0) * 4 + "0" + "0" + "0" + "1" * 8)


def _with_params(hvcc, extra):
    """An hvcC payload with the NAL units ``extra`` added to its parameter-set arrays."""
    arrays = hvcc[23:]
    add = b"".join(struct.pack(">BH", nal[0] >> 1, 1) + struct.pack(">H", len(nal)) + nal for nal in extra)
    return hvcc[:22] + bytes([hvcc[22] + len(extra)]) + arrays + add


def test_out_of_range_parameter_sets_are_refused_at_once():
    """An SPS's sizes are bounded before anything is computed from them (a coding block of 2**33
    samples once made a 1 GiB integer per SPS: seconds and gigabytes for a 500-byte file), and an
    hvcC holding more parameter sets than any still image has is not read."""
    import time
    ok = hq._sps(hq._rbsp(_sps_nal()))
    assert ok["id"] == 1 and ok["chroma"] == 1 and ok["address_bits"] == 6     # 16-px CTBs: 6 x 6 = 36
    for bad in (_sps_nal(log2_ctb_delta=2 ** 30), _sps_nal(log2_ctb_delta=4), _sps_nal(width=0),
                _sps_nal(width=2 ** 20), _sps_nal(sps_id=16)):
        with pytest.raises(hq._Bad):
            hq._sps(hq._rbsp(bad))
    a = heif(photo(), qp=30, params={"x265:ipratio": "1.0"})
    hvcc, coded = _parts(a)
    assert hq.heif_qp(grid_file(None, [(_with_params(hvcc, [_sps_nal()]), coded)])) == 30
    t = time.perf_counter()
    for extra in ([_sps_nal(log2_ctb_delta=2 ** 30)] * 20, [_sps_nal()] * 200):
        assert hq.heif_qp(grid_file(None, [(_with_params(hvcc, extra), coded)])) is None
    assert time.perf_counter() - t < 5


def _heif():
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[100:196, 150:246])
    h = pillow_heif.from_bytes("RGB", a.shape[1::-1], a.tobytes())
    buf = io.BytesIO()
    h.save(buf, format="HEIF", quality=30, chroma=420)
    return buf.getvalue()


@pytest.mark.parametrize("qp, want", [(52, None), (-13, None), (70, None), (51, 51), (-12, -12)])
def test_a_slice_qp_outside_hevcs_range_means_the_file_was_misread(monkeypatch, qp, want):
    """a slice QP outside -12..51 (what HEVC allows, 8 to 10 bits) is no reading at all (a
    damaged or misparsed header): None -- the size fallback -- not a QP that would pick a band and a
    strength (QP 70 gave the full correction of the low-quality model)."""
    data = _heif()
    assert hq.heif_qp(data) is not None
    monkeypatch.setattr(hq, "_slice_qp", lambda nal, sps, pps: qp)
    assert hq.heif_qp(data) == want
