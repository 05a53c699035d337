"""Lossy codecs used to make (compressed, original) pairs: JPEG, HEVC intra (HEIF), WebP.

Every codec maps an RGB ``uint8`` array of shape ``(H, W, 3)`` to a :class:`Coded` result:
the decoded RGB ``uint8`` image (same shape) and the exact size of the compressed bitstream
in bytes (so ``bpp = 8 * nbytes / (H * W)``).

Codecs are named by spec strings ``"name:quality"`` or ``"name:quality:opt=value,..."``::

    jpeg:10              JPEG via Pillow/libjpeg, quality 10, 4:2:0
    jpeg:10:444          JPEG, 4:4:4 chroma
    hevc:15              HEVC intra via pillow-heif/x265, "quality" 15 (x265 CRF, see docs/codecs.md)
    hevc:qp=37           HEVC intra with a fixed QP (like bpgenc -q 37)
    hevc:15:444          4:4:4 chroma;  hevc:15:10bit -> 10-bit coding
    hevc:15:threads=1    x265 with one thread (the same bitstream; see :func:`with_threads`)
    webp:20              WebP (lossy) via Pillow/libwebp

See ``docs/codecs.md`` for how the HEVC settings relate to bpgenc and what bpp they give.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..errors import CodecError
from .jpeg_tables import JpegTables, tables_from_pil




@dataclasses.dataclass(frozen=True)
class Coded:
    image: np.ndarray  # decoded RGB uint8 (H, W, 3)
    nbytes: int        # compressed size in bytes
    tables: Optional["JpegTables"] = None  # JPEG: quantisation tables and chroma sampling
    qp: Optional[float] = None             # HEVC: mean slice QP read from the file (io.heif_qp)
    webp_index: Optional[float] = None     # WebP: mean luma AC quantiser index read from the file (io.webp_quant)

    @property
    def bpp(self) -> float:
        h, w = self.image.shape[:2]
        return 8.0 * self.nbytes / float(h * w)


def check_qp(qp) -> int:
    """An HEVC QP: a whole number in 0..51 (an int, or its digits) -> int; else CodecError."""
    import numbers
    if isinstance(qp, bool) or not (isinstance(qp, numbers.Integral)
                                    or (isinstance(qp, str) and qp.isascii() and qp.isdigit())) \
            or not 0 <= int(qp) <= 51:
        raise CodecError(f"HEVC QP must be a whole number in 0..51, got {qp!r}")
    return int(qp)


def _check_rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise CodecError(f"expected an RGB uint8 array (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise CodecError(f"image has zero size: {img.shape}")
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------ JPEG
def jpeg_file(img: np.ndarray, quality: int = 10, subsampling: str = "420") -> bytes:
    """The bytes of the JPEG file :func:`jpeg` codes (Pillow: baseline, standard tables scaled by
    ``quality`` 1-100), for callers that need the file itself (its tables, a PIL image opened
    from it).  ``img``: H x W x 3 RGB, or H x W grey (a one-component JPEG)."""
    from PIL import Image

    grey = np.asarray(img).ndim == 2        # H x W: a one-component (grey) JPEG
    img = _check_rgb(np.asarray(img)[..., None].repeat(3, axis=2) if grey else img)
    q = int(quality)
    if not 1 <= q <= 100:
        raise CodecError(f"JPEG quality must be in 1..100, got {quality}")
    sub = {"420": 2, "422": 1, "444": 0}.get(str(subsampling))
    if sub is None:
        raise CodecError(f"JPEG subsampling must be 420, 422 or 444, got {subsampling!r}")
    buf = io.BytesIO()
    if grey:
        Image.fromarray(np.ascontiguousarray(img[..., 0]), "L").save(buf, format="JPEG", quality=q, optimize=False)
    else:
        Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=q, subsampling=sub, optimize=False)
    return buf.getvalue()


def jpeg(img: np.ndarray, quality: int = 10, subsampling: str = "420") -> Coded:
    """JPEG via Pillow: baseline, standard tables scaled by ``quality`` (1-100)."""
    from PIL import Image

    data = jpeg_file(img, quality, subsampling)
    with Image.open(io.BytesIO(data)) as im:
        tables = tables_from_pil(im)
        dec = np.asarray(im.convert("RGB"))
    return Coded(dec, len(data), tables)


# ------------------------------------------------------------------ HEVC
def _pillow_heif():
    """The pillow_heif module, or a CodecError saying how to install it."""
    try:
        import pillow_heif
    except ImportError:
        raise CodecError("HEVC coding needs pillow-heif: pip install pillow-heif (or the [heif] extra)") from None
    return pillow_heif


def hevc(img: np.ndarray, quality: Optional[int] = 15, qp: Optional[int] = None, subsampling: str = "420",
         bit_depth: int = 8, preset: Optional[str] = None, threads: Optional[int] = None) -> Coded:
    """HEVC intra via pillow-heif: :func:`hevc_file`'s file, decoded (see there), with its QP."""
    pillow_heif = _pillow_heif()

    data = hevc_file(img, quality, qp, subsampling, bit_depth, preset, threads)
    # decoded as `restore` reads a HEIF file (pillow-heif's own conversion of a 10-bit picture to
    # 8 bits), so a network trained on these pairs sees what it will be given
    arr = np.asarray(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True))
    arr = np.ascontiguousarray(arr[..., :3])
    from .heif_qp import heif_qp
    return Coded(arr, len(data), qp=heif_qp(data))


def hevc_file(img: np.ndarray, quality: Optional[int] = 15, qp: Optional[int] = None, subsampling: str = "420",
              bit_depth: int = 8, preset: Optional[str] = None, threads: Optional[int] = None) -> bytes:
    """The bytes of a HEIF file: HEVC intra (one still image) via pillow-heif + libheif + x265.

    ``quality`` (0-100) is libheif's quality knob, which it maps to x265's constant rate factor
    (CRF).  ``qp`` (0-51) instead fixes x265's quantiser (``x265:qp``), which is what bpgenc's
    ``-q`` does.  ``nbytes`` is the size of the whole ``.heic`` file (the container adds a few
    hundred bytes; see ``docs/codecs.md``).  ``bit_depth`` 10 codes the image at 10 bits
    (Main 10 profile); :func:`hevc` brings the decoded image back to 8 bits by pillow-heif's own
    conversion, as ``restore`` reads a 10-bit HEIF file.  ``threads`` sizes x265's
    thread pool (``x265:pools``; default one thread per CPU) and sets ``x265:frame-threads`` to 1;
    the bitstream is the same for any value (tested), only the cost changes: a pool is made for
    every image, and on a 96x96 patch a pool of 16 threads took twice the CPU time of one
    (2-core VM; see :func:`with_threads`).
    """
    pillow_heif = _pillow_heif()

    img = _check_rgb(img)
    chroma = {"420": 420, "422": 422, "444": 444}.get(str(subsampling))
    if chroma is None:
        raise CodecError(f"HEVC subsampling must be 420, 422 or 444, got {subsampling!r}")
    enc_params: Dict[str, str] = {}
    if qp is not None:
        enc_params["x265:qp"] = str(check_qp(qp))
    if quality is not None and not 0 <= int(quality) <= 100:
        raise CodecError(f"HEVC quality must be in 0..100, got {quality}")
    if preset:
        enc_params["preset"] = str(preset)
    if threads is not None:
        if int(threads) < 1:
            raise CodecError(f"HEVC encoder threads must be at least 1, got {threads}")
        enc_params["x265:pools"] = str(int(threads))
        enc_params["x265:frame-threads"] = "1"
    h, w = img.shape[:2]
    if bit_depth == 8:
        heif = pillow_heif.from_bytes("RGB", (w, h), img.tobytes())
    elif bit_depth == 10:
        # 16-bit container, values scaled to 10 bits and left-aligned (pillow-heif convention).
        v = (img.astype(np.uint32) * 1023 + 127) // 255
        heif = pillow_heif.from_bytes("RGB;16", (w, h), (v << 6).astype("<u2").tobytes())
    else:
        raise CodecError(f"HEVC bit depth must be 8 or 10, got {bit_depth}")
    buf = io.BytesIO()
    try:
        heif.save(buf, format="HEIF", quality=None if quality is None else int(quality), chroma=chroma,
                  enc_params=enc_params, save_to_12bit=False)
    except (RuntimeError, ValueError) as e:
        raise CodecError(f"HEVC encoder failed: {e}") from None
    return buf.getvalue()


# ------------------------------------------------------------------ WebP
def webp_file(img: np.ndarray, quality: int = 20, method: int = 4) -> bytes:
    """The bytes of the lossy WebP file :func:`webp` codes (Pillow/libwebp, always 4:2:0)."""
    from PIL import Image

    img = _check_rgb(img)
    q = int(quality)
    if not 0 <= q <= 100:
        raise CodecError(f"WebP quality must be in 0..100, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="WEBP", quality=q, method=int(method), lossless=False)
    return buf.getvalue()


def webp(img: np.ndarray, quality: int = 20, method: int = 4) -> Coded:
    """Lossy WebP via Pillow/libwebp (always 4:2:0)."""
    from PIL import Image

    data = webp_file(img, quality, method)
    with Image.open(io.BytesIO(data)) as im:
        dec = np.asarray(im.convert("RGB"))
    from .webp_quant import webp_quant
    wq = webp_quant(data)
    return Coded(dec, len(data), webp_index=None if wq is None else wq.index)


# ------------------------------------------------------------------ registry / specs
CODECS: Dict[str, Callable[..., Coded]] = {"jpeg": jpeg, "hevc": hevc, "webp": webp}
ALIASES = {"jpg": "jpeg", "heif": "hevc", "heic": "hevc", "bpg": "hevc", "x265": "hevc"}
QUALITY_RANGE = {"jpeg": (1, 100), "hevc": (0, 100), "webp": (0, 100)}
# the options each codec takes in a spec ("hevc:15:444", "webp:20:method=6")
SAMPLINGS = ("420", "422", "444")      # chroma, written alone ("jpeg:444") or as subsampling=444
_OPTIONS = {"jpeg": {*SAMPLINGS, "subsampling"},
            "hevc": {*SAMPLINGS, "subsampling", "8bit", "10bit", "bit_depth", "qp", "preset", "threads"},
            "webp": {"method"}}
X265_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    name: str
    quality: Optional[int] = None
    options: Tuple[Tuple[str, str], ...] = ()

    def kwargs(self) -> Dict:
        """The codec function's keyword arguments; CodecError naming an option this codec does not
        take, a value it cannot take, or a setting given twice (``jpeg:420:444``)."""
        kw: Dict = {}
        if self.quality is not None:
            kw["quality"] = self.quality

        def put(key, value, shown):
            if key in kw:
                raise CodecError(f"{self.name}: {shown} given twice (or with another option setting it)")
            kw[key] = value

        for k, v in self.options:
            if k not in _OPTIONS[self.name]:
                raise CodecError(f"unknown option {k!r} for codec {self.name!r}; it takes "
                                 f"{', '.join(sorted(_OPTIONS[self.name]))}")
            if k in SAMPLINGS:
                put("subsampling", k, "the chroma sampling")
            elif k == "subsampling":
                if v not in SAMPLINGS:
                    raise CodecError(f"{self.name}: subsampling must be 420, 422 or 444, got {v!r}")
                put("subsampling", v, "the chroma sampling")
            elif k in ("10bit", "8bit"):
                put("bit_depth", int(k[:-3]), "the bit depth")
            elif k == "bit_depth":
                if v not in ("8", "10"):
                    raise CodecError(f"HEVC bit_depth must be 8 or 10, got {v!r}")
                put("bit_depth", int(v), "the bit depth")
            elif k == "qp":
                put("qp", check_qp(v), "qp")
                if self.quality is None:
                    kw["quality"] = None
            elif k == "preset":
                if v not in X265_PRESETS:
                    raise CodecError(f"HEVC preset must be one of {', '.join(X265_PRESETS)}, got {v!r}")
                put("preset", v, "preset")
            elif k == "method":
                if not v.isdigit() or not 0 <= int(v) <= 6:
                    raise CodecError(f"WebP method must be a whole number in 0..6, got {v!r}")
                put("method", int(v), "method")
            else:                                   # threads (HEVC)
                if not v.isdigit() or int(v) < 1:
                    raise CodecError(f"HEVC encoder threads must be a whole number >= 1, got {v!r}")
                put("threads", int(v), "threads")
        return kw

    def with_sampling(self, sampling: str) -> "CodecSpec":
        """This spec with its chroma sampling set to ``sampling`` ("444"), however it was written."""
        keep = tuple(o for o in self.options if o[0] not in SAMPLINGS and o[0] != "subsampling")
        return dataclasses.replace(self, options=keep + ((sampling, ""),))

    def with_quality(self, quality: int) -> "CodecSpec":
        return dataclasses.replace(self, quality=int(quality))

    def __call__(self, img: np.ndarray) -> Coded:
        return CODECS[self.name](img, **self.kwargs())

    def __str__(self) -> str:
        parts = [self.name]
        if self.quality is not None:
            parts.append(str(self.quality))
        opts = [k if v == "" else f"{k}={v}" for k, v in self.options]
        return ":".join(parts + opts)


def with_threads(spec: CodecSpec, threads: Optional[int]) -> CodecSpec:
    """``spec`` with x265's thread count set to ``threads`` (None: removed, so x265 decides).
    The coded bytes are the same for any count, so training names its runs and keys its caches
    by the spec without it.  Codecs without threads (JPEG, WebP) are returned unchanged."""
    if spec.name != "hevc":
        return spec
    opts = tuple(o for o in spec.options if o[0] != "threads")
    if threads is not None:
        opts += (("threads", str(int(threads))),)
    return dataclasses.replace(spec, options=opts)


def _not_whole(text: str) -> bool:
    """Whether ``text`` is a number, but not written as a whole one ("50.5", "1e3", "+50")."""
    try:
        float(text)
    except ValueError:
        return False
    return not text.lstrip("-").isdigit()


def parse_spec(spec: str, quality: Optional[int] = None) -> CodecSpec:
    """Parse ``"jpeg"``, ``"jpeg:10"``, ``"hevc:15:444"``, ``"hevc:qp=37"``, ``"webp:20:method=6"``."""
    if isinstance(spec, CodecSpec):
        s = spec if quality is None else spec.with_quality(quality)
        return _checked(s)
    parts = [p.strip() for p in str(spec).strip().lower().split(":")]
    name = ALIASES.get(parts[0], parts[0])
    if name not in CODECS:
        raise CodecError(f"unknown codec {parts[0]!r}; choose one of {sorted(CODECS)}")
    q: Optional[int] = None
    opts = []
    for p in parts[1:]:
        if not p:
            continue
        if p.lstrip("-").isdigit() and q is None and not opts and p not in SAMPLINGS:
            q = int(p)
            lo, hi = QUALITY_RANGE[name]
            if (quality is None and not lo <= q <= hi and len(p) == 3 and p.isdigit()
                    and "subsampling" in _OPTIONS[name]):   # "jpeg:411": a sampling we do not code?
                raise CodecError(f"{name}: {p} is neither a quality ({lo}..{hi}) nor a chroma sampling "
                                 f"({', '.join(SAMPLINGS)})")
            continue
        if _not_whole(p):   # "jpeg:50.5": it was said as an unknown option
            lo, hi = QUALITY_RANGE[name]
            raise CodecError(f"{name}: quality {p!r} is not valid: give a whole number in {lo}..{hi}")
        for item in p.split(","):
            k, _, v = item.partition("=")
            opts.append((k.strip(), v.strip()))
    if quality is not None:
        q = int(quality)
    return _checked(CodecSpec(name, q, tuple(opts)))


def fixed_qp(spec: "CodecSpec") -> Optional[int]:
    """The QP an ``hevc:qp=N`` spec fixes (its quality, if any, is then not what is coded), else None."""
    for k, v in spec.options:
        if k == "qp":
            return int(v)
    return None


def _checked(s: "CodecSpec") -> "CodecSpec":
    """``s`` once its options and quality are valid (CodecError naming the first that is not)."""
    s.kwargs()  # validate options early
    if s.quality is not None:
        lo, hi = QUALITY_RANGE[s.name]
        if not lo <= s.quality <= hi:
            raise CodecError(f"{s.name} quality must be in {lo}..{hi}, got {s.quality}")
    return s


def compress(img: np.ndarray, spec, quality: Optional[int] = None) -> Coded:
    """Compress and decompress ``img`` with a codec spec string (or :class:`CodecSpec`)."""
    return parse_spec(spec, quality)(img)


def check_encoder(spec, quality: Optional[int], label: str, side: int = 32) -> None:
    """Code one flat ``side`` x ``side`` picture with ``spec`` at ``quality``: a value only the
    encoder refuses, or an encoder that cannot run (pillow-heif missing), fails here as one
    :class:`CodecError` starting with ``label`` (e.g. ``--codec hevc``), before any real work."""
    try:
        parse_spec(spec, quality)(np.full((side, side, 3), 128, np.uint8))
    except CodecError as e:
        raise CodecError(f"{label}: {e}") from None
    except Exception as e:    # noqa: BLE001  an encoder library's own error, whatever its type
        raise CodecError(f"{label}: the encoder failed on a test picture: {type(e).__name__}: {e}") from None


def available() -> Dict[str, bool]:
    """Which codecs work in this environment."""
    out = {}
    probe = np.zeros((16, 16, 3), np.uint8)
    for name in CODECS:
        try:
            compress(probe, name, 50)
            out[name] = True
        except Exception:  # pragma: no cover - depends on the installed libraries
            out[name] = False
    return out
