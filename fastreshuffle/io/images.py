"""Robust image reading: anything Pillow (plus pillow-heif, when installed) reads -> RGB uint8.

* EXIF orientation is applied (``ImageOps.exif_transpose``).
* Grayscale (L, I;16, I, F), palette (P, with or without transparency), LA/RGBA/PA,
  16-bit RGB (PNG 48-bit), CMYK and YCbCr are converted to 8-bit RGB.
* Alpha is dropped; ``read_image(path, return_alpha=True)`` returns ``(rgb, alpha_or_None)``.
* Unreadable, corrupt or truncated files and decompression bombs raise :class:`ImageReadError`
  naming the file and the reason.

:func:`load_image_file` also keeps what an output needs: 16-bit pixels where the file has
them (16-bit grey through Pillow, 16-bit colour PNG through :mod:`.png16`, 16-bit colour TIFF
through ``tifffile`` when installed, a binary 16-bit PPM here), the ICC profile (a CMYK file is
converted to sRGB through its own profile), EXIF and XMP with the orientation reset to 1 (the
pixels are upright), the frame count, and notes saying what was done beyond plain decoding.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..errors import ImageReadError
from .jpeg_tables import JpegTables, tables_from_pil

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm",
                    ".gif", ".heic", ".heif", ".avif", ".tga", ".jp2", ".j2k", ".jfif"}
# those whose files are usually lossy-coded (not originals to measure a restoration against)
LOSSY_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".heic", ".heif", ".webp", ".avif"}


def known_image_extensions() -> frozenset:
    """Every extension that names a picture file: ours, those of every format Pillow knows (.ico,
    .psd, .pdf, ...), and a few of other programs (camera raw, JPEG XL, SVG).  An ``-o`` name
    ending in one of these means a file, never a folder to create."""
    from PIL import Image
    Image.init()
    return frozenset(IMAGE_EXTENSIONS | set(Image.registered_extensions())
                     | {".jxl", ".svg", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".exr", ".hdr"})

# Pillow warns above its MAX_IMAGE_PIXELS (~89.5 Mpixel by default), which the loader takes as a
# refusal; where a program has raised that limit, this many pixels (a 16k x 16k image) is still the
# most we decode.
MAX_PIXELS = 16384 * 16384

_heif_registered: Optional[bool] = None    # pillow-heif's opener registered (None: not tried yet)


def _register_heif() -> bool:
    """Register pillow-heif's opener with Pillow (once): whether HEIF files can be read."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
            pillow_heif.register_heif_opener()
            _heif_registered = True
        except Exception:  # optional: without it a HEIF file is said to need it (heif_unreadable)
            _heif_registered = False
    return _heif_registered


# ISO base media file brands (the "ftyp" box at the file's start) of HEIF and of AVIF still images
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")


def jpeg_unreadable(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` cannot be read when it is a JPEG of a kind Pillow does not decode (12- or
    16-bit samples, lossless coding: Pillow says only that the file is not an image), from its
    frame header; None otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)      # (the frame header comes after EXIF, ICC, XMP: up to 64 KB each)
    except OSError:
        return None
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            bits = data[i + 4] if i + 4 < len(data) else 8
            if marker in (0xC3, 0xC7, 0xCB, 0xCF):
                return f"a lossless JPEG ({bits}-bit samples): not read (only lossy 8-bit JPEGs are)"
            if bits != 8:
                return f"a {bits}-bit JPEG: not read (only 8-bit JPEGs are)"
            return None
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:   # (no length)
            i += 2
            continue
        i += 2 + length
    return None


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")   # a TIFF's first 4 bytes (and BigTIFF's)


def tiff_unreadable(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` cannot be read when it starts as a TIFF but neither Pillow nor tifffile can
    read it (its directory cut off or damaged), None for any other file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head in TIFF_MAGIC:
        layout = _tiff_layout(path)
        if layout:   # (a 16-bit 3-sample minisblack one had been called damaged)
            return f"a TIFF of a layout not supported ({layout}): save it as 8- or 16-bit RGB or grey"
        return "a damaged or truncated TIFF (its header is a TIFF's, its image directory cannot be read)"
    return None


def _tiff_layout(path) -> Optional[str]:
    """A TIFF's first image in words (bits, samples, photometric interpretation, sample format)
    where its directory can be read and its data is all in the file (tifffile installed), else None."""
    try:
        import tifffile
        with quiet_tifffile(), tifffile.TiffFile(str(path)) as t:
            page = t.pages[0]
            size = os.path.getsize(path)
            if not page.dataoffsets or any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts)):
                return None    # (cut short: damaged)
            photometric = getattr(page.photometric, "name", str(page.photometric)).lower()
            kind = {1: "unsigned", 2: "signed", 3: "float"}.get(int(page.sampleformat), "")
            return (f"{page.imagewidth} x {page.imagelength}, {page.samplesperpixel} samples of {page.bitspersample} "
                    f"bits{', ' + kind if kind else ''}, photometric {photometric}")
    except Exception:
        return None


def unreadable_reason(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why a file Pillow cannot identify is not read, where its first bytes tell (a HEIF / AVIF file
    without their support, a 12-bit or lossless JPEG, a damaged TIFF); None otherwise."""
    return heif_unreadable(path) or jpeg_unreadable(path) or tiff_unreadable(path)


def heif_unreadable(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` cannot be read when it is a HEIF file and pillow-heif is not installed, or an
    AVIF file and Pillow has no AVIF support (None otherwise)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if head[4:8] != b"ftyp":
        return None
    if head[8:12] in _AVIF_BRANDS:
        from PIL import features
        if features.check("avif"):
            return None
        return "an AVIF image: reading it needs Pillow 11.2 or later built with AVIF (pip install -U pillow)"
    if head[8:12] not in _HEIF_BRANDS or _register_heif():
        return None
    return (f"a HEIF image ({head[8:12].decode()}): reading it needs pillow-heif: pip install pillow-heif "
            "(or the [heif] extra)")


# formats whose files can hold more than one frame (page)
MULTI_FRAME_FORMATS = frozenset({"GIF", "TIFF", "WEBP", "PNG", "MPO", "HEIF", "AVIF", "FLI", "DCX", "ICNS", "ICO"})


def frame_count(source: Union[str, os.PathLike, bytes]) -> Tuple[int, bool]:
    """(frames, cut short) of a picture file (a path or its bytes), counted on an opening of its
    own: an animated GIF cut short among its frames had failed with Pillow's bare "index out of
    range" from counting them, though its first frame is whole; it counts the frames before the cut.
    A file that cannot be opened at all counts as (1, False) (its reading says why)."""
    from PIL import Image

    def opened():
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    try:
        with opened() as f:
            return max(1, int(getattr(f, "n_frames", 1) or 1)), False
    except Exception:
        pass
    n = 1
    try:
        f = opened()
    except Exception:
        return 1, False
    with f:
        while True:
            try:
                f.seek(n)
            except EOFError:         # (the end, where a whole file's frames end)
                return n, False
            except Exception:        # (a frame's header cut or damaged)
                return n, True
            n += 1


def list_images(folder: Union[str, os.PathLike], recursive: bool = False) -> List[Path]:
    """Image-like files in ``folder`` (by extension), sorted by name; hidden files skipped, and with
    ``recursive`` hidden folders too (``.ipynb_checkpoints``, ``.thumbnails``), as ``restore`` does."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def int_gray_scale(mode: str, a: np.ndarray) -> float:
    """The full scale of an integer grey image's samples (Pillow mode ``I;16*`` or ``I``): 65535
    for the 16-bit modes; for ``I`` (32-bit) 255 when every sample is 0..255 (what
    ``convert("I")`` makes of an 8-bit image), else 65535.  Samples outside 0..65535 raise
    ValueError: never clipped."""
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"mode {mode} samples span {a.min()}..{a.max()}, outside 0..65535")
    if mode.startswith("I;16"):
        return 65535.0
    return 65535.0 if a.size and a.max() > 255 else 255.0


def float_scale(a: np.ndarray) -> float:
    """The full scale of float samples read from a file: 1 when every finite sample is at most 2
    (the usual [0, 1] convention, what ``restore()`` takes of a float array or a PIL ``F`` image,
    with some overshoot, which is clipped; on a 0-255 scale such an image would be black), 255 up
    to 255 (what Pillow's ``convert("F")`` makes of an 8-bit image), else 65535."""
    finite = a[np.isfinite(a)]
    hi = float(finite.max()) if finite.size else 1.0
    return 1.0 if hi <= 2.0 else (255.0 if hi <= 255.0 else 65535.0)


# as restore()'s FLOAT_SLACK: this much outside [0, 1] is rounding noise, not said
_FLOAT_SLACK = 1e-3


def check_float_samples(path, a: np.ndarray, what: str = "samples") -> List[str]:
    """A file's float samples made explicit (a review: NaN became 0, samples above 1.0 were
    clipped, and a grey picture up to 3.0 was read on a 0-255 scale, near black -- each without a
    word): an ImageReadError naming the file for NaN or infinite ones (``restore()`` refuses such
    an array), else notes for a scale other than [0, 1] and for samples outside it, clipped."""
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ImageReadError(path, f"{bad} of its {a.size} float {what} are NaN or infinite: no picture to "
                                   "restore (replace them, e.g. numpy.nan_to_num, and save it again)")
    if not a.size:
        return []
    lo, hi, scale = float(a.min()), float(a.max()), float_scale(a)
    if scale != 1.0:
        note = f"float {what} span [{lo:g}, {hi:g}]: taken on a 0-{scale:g} scale"
        if hi < scale / 16:    # (2 < hi < 16: no [0, 1] picture's overshoot, and dark on 0-255)
            note += (", which makes the picture near black (samples above 1.0 of a high-dynamic-range "
                     "picture: tone-map it to [0, 1] first)")
        notes = [note]
    else:
        notes = []
    if lo < -_FLOAT_SLACK * scale or hi > (1 + _FLOAT_SLACK) * scale:
        notes.append(f"float {what} span [{lo:g}, {hi:g}], outside [0, {scale:g}]: clipped"
                     + (" (high-dynamic-range samples above 1.0 lost)" if scale == 1.0 and hi > 1 + _FLOAT_SLACK else ""))
    return notes


def _float_to_8bit(a: np.ndarray) -> np.ndarray:
    """Float samples (scale from :func:`float_scale`; NaN as 0) -> uint8, rounded and clipped."""
    return np.clip(np.round(np.nan_to_num(a / float_scale(a)) * 255.0), 0, 255).astype(np.uint8)


def _to_rgb_array(im, int_scale: Optional[float] = None,
                  unsigned32: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """-> (H x W x 3 uint8, alpha or None).  ``int_scale``: the full scale of mode ``I`` samples
    where the file states it (a 16-bit PGM's), else guessed by :func:`int_gray_scale`;
    ``unsigned32``: mode ``I`` holds a file's unsigned 32-bit samples (Pillow's ``I`` is signed)."""

    alpha = None
    mode = im.mode
    if mode == "P" or mode == "PA":
        if mode == "PA" or "transparency" in im.info:
            im = im.convert("RGBA")
            mode = "RGBA"
        else:
            return np.asarray(im.convert("RGB")), None
    if mode in ("RGB", "L", "1") and "transparency" in im.info:   # a tRNS colour key: its pixels are transparent
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im)
        if unsigned32 and a.dtype == np.int32:   # (read signed, 2**31 and over came out negative,
            a = a.view(np.uint32)                # refused as "negative" samples they are not)
        a = a.astype(np.float64)
        if mode == "F":
            g = _float_to_8bit(a)
        else:
            scale = int_gray_scale(mode, a)   # (raises for samples outside 0..65535)
            g = np.clip(np.round(a / (int_scale or scale) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2), None
    if mode in ("RGB;16", "RGBA;16", "RGB;16B", "RGBA;16B"):  # unusual Pillow modes / pillow-heif HDR
        a = np.asarray(im).astype(np.float64) / 65535.0
        rgb = np.clip(np.round(a[..., :3] * 255.0), 0, 255).astype(np.uint8)
        if a.shape[-1] == 4:
            alpha = np.clip(np.round(a[..., 3] * 255.0), 0, 255).astype(np.uint8)
        return rgb, alpha
    if mode in ("LA", "La", "RGBA", "RGBa"):
        if mode == "La":
            im = im.convert("LA")
        if mode == "RGBa":
            im = im.convert("RGBA")
        a = np.asarray(im)
        alpha = a[..., -1].copy()
        rgb = np.asarray(im.convert("RGB"))
        return rgb, alpha
    if mode == "1" or mode == "L":
        g = np.asarray(im.convert("L"))
        return np.repeat(g[..., None], 3, axis=2), None
    if mode != "RGB":
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...
    return np.asarray(im), alpha


# Modes whose pixels are grey: restored outputs go back to one channel.
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageFile(NamedTuple):
    """One decoded image file: everything ``restore`` needs, read in one open."""
    rgb: np.ndarray                 # H x W x 3 uint8, EXIF orientation applied
    alpha: Optional[np.ndarray]     # H x W uint8 where the file has transparency, else None
    gray: bool                      # stored as a grey mode
    mode: str                       # Pillow mode of the stored pixels
    format: Optional[str]           # Pillow format name ("JPEG", "PNG", ...)
    icc_profile: Optional[bytes]    # for the pixels above (sRGB after a CMYK conversion)
    rgb16: Optional[np.ndarray] = None    # H x W x 3 uint16 where the file has 16-bit samples
    alpha16: Optional[np.ndarray] = None  # H x W uint16 alpha of a 16-bit RGBA file
    exif: Optional[bytes] = None    # EXIF block, orientation removed (pixels are upright)
    xmp: Optional[bytes] = None     # XMP packet, tiff:Orientation set to 1
    n_frames: int = 1               # frames / pages in the file; only the first is decoded
    notes: Tuple[str, ...] = ()     # what was done beyond decoding (conversions, dropped frames)
    orientation: int = 1            # EXIF orientation that was applied (1-8)
    coded_orientation: int = 1      # HEIF: the rotation the decoder applied (see coded_orientation)
    jpeg_tables: Optional["JpegTables"] = None  # a JPEG's quantisation tables and chroma sampling
    dpi: Optional[Tuple[float, float]] = None   # resolution (x, y) of the upright pixels
    text: Tuple[Tuple[str, str], ...] = ()      # a PNG's text chunks (Author, Copyright, ...), XMP aside
    comment: Optional[bytes] = None             # a JPEG's / GIF's comment
    source: Optional[Tuple[int, ...]] = None    # the file decoded (see read_unchanged)


def _identity(st: os.stat_result) -> Tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_unchanged(path: Union[str, os.PathLike], source: Optional[Tuple[int, ...]]) -> bytes:
    """The bytes of ``path``, refused (:class:`ImageReadError`) where it is no longer the file
    :func:`load_image_file` decoded (``source``): replaced or rewritten since, by a sync tool, a
    camera import or an editor saving over it.  A copy of the file "as it was" would otherwise be
    another file's bytes, with the notes of the one decoded."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if source is not None and _identity(os.fstat(f.fileno())) != source:
                raise ImageReadError(path, "the file changed while it was being read and restored (replaced or "
                                           "written to): nothing written for it; run again")
            return f.read()
    except OSError as e:
        raise ImageReadError(path, f"cannot read the file again: {e.strerror or e}") from None


NOT_REGULAR = "not a regular file (a pipe, socket or device)"


def special_file(path) -> bool:
    """Whether ``path`` is there but neither a regular file nor a folder: a FIFO would block the
    read for ever, a device never end (``fastreshuffle restore`` and ``restore()`` refuse it)."""
    return os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if special_file(path):
        raise ImageReadError(path, NOT_REGULAR)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
    except OSError as e:
        raise ImageReadError(path, f"cannot access file: {e.strerror or e}") from None


ORIENTATION = 0x0112
# EXIF orientation -> the numpy operation that makes the stored pixels upright
# (the same transforms as Pillow's ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


# the orientation that undoes each one (rotations by 90 degrees swap; flips undo themselves)
INVERSE_ORIENTATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def coded_orientation(im) -> int:
    """The orientation (1-8) a HEIF decoder applied to the coded pixels: pillow-heif returns the
    picture upright (the file's irot/imir boxes, which it writes from the EXIF orientation) and
    keeps that orientation as ``info["original_orientation"]``, the EXIF tag reset to 1.  The coded
    pixels are then ``orient_array(upright, INVERSE_ORIENTATION[o])``.  1 for other formats."""
    if getattr(im, "format", None) != "HEIF":
        return 1
    try:
        o = int(im.info.get("original_orientation") or 1)
    except (TypeError, ValueError):
        return 1
    return o if 1 <= o <= 8 else 1


def orient_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (1-8) to an H x W [x C] array, as Pillow's exif_transpose does."""
    f = _ORIENT.get(int(orientation))
    return np.ascontiguousarray(f(a) if f else a)


def icc_colour_space(icc: Optional[bytes]) -> Optional[str]:
    """The data colour space an ICC profile describes ("RGB", "GRAY", "CMYK", ...), from its header."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("latin-1", "replace").strip() or None


def _xmp_upright(xmp) -> Optional[bytes]:
    import re
    if not xmp:
        return None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    xmp = re.sub(rb'(tiff:Orientation\s*=\s*["\'])\d(["\'])', rb"\g<1>1\g<2>", xmp)
    return re.sub(rb"(<tiff:Orientation>)\s*\d\s*(</tiff:Orientation>)", rb"\g<1>1\g<2>", xmp)


# The tags of a TIFF's first directory that describe the photo rather than how its pixels are
# stored.  A TIFF's "EXIF" as Pillow gives it is that whole directory: size, bits, photometric,
# colour map, strips, ICC (34675) and XMP (700, both carried on their own) and possibly megabytes
# of private data.  Written into another TIFF those tags override the real ones (a palette or
# CMYK source made the output unreadable, an oriented one a wrong size), so only these travel
# (the resolution travels as ``dpi``, turned with the pixels).
_TIFF_DESCRIPTIVE = frozenset({
    0x010D, 0x010E, 0x010F, 0x0110, 0x0112,   # DocumentName ImageDescription Make Model Orientation
    0x011D,                                   # PageName
    0x0131, 0x0132, 0x013B, 0x013C,           # Software DateTime Artist HostComputer
    0x4746, 0x4749, 0x8298,                   # Rating RatingPercent Copyright
    0x8769, 0x8825,                           # the EXIF and GPS sub-directories
    0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,   # Windows XPTitle ... XPSubject
})


def _exif_upright(im) -> Tuple[int, Optional[bytes]]:
    """-> (orientation, EXIF bytes without the orientation tag, or None when the file has none)."""
    try:
        exif = im.getexif()
        if im.format == "TIFF":
            for tag in [t for t in exif if t not in _TIFF_DESCRIPTIVE]:
                del exif[tag]
    except Exception:  # broken EXIF: dropped, pixels kept as stored
        return 1, None
    orientation = exif.get(ORIENTATION, 1)
    try:
        orientation = int(orientation)
    except (TypeError, ValueError):
        orientation = 1
    if not len(exif):
        return 1, None
    stored = exif.pop(ORIENTATION, None)  # this is the image's own Exif: put the tag back below
    try:
        for ifd in (0x8769, 0x8825):  # EXIF and GPS sub-IFDs, so that tobytes() writes them
            if ifd in exif:           # (only those it has: get_ifd makes an empty one, written as a pointer)
                exif.get_ifd(ifd)
        data = exif.tobytes()
    except Exception:
        data = None
    finally:
        if stored is not None:
            exif[ORIENTATION] = stored
    return (orientation if 1 <= orientation <= 8 else 1), data


def _dpi(value, orientation: int) -> Optional[Tuple[float, float]]:
    """A file's ``info["dpi"]`` as (x, y) of the upright pixels, or None when absent or not positive."""
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (0 < x < 1e6 and 0 < y < 1e6):
        return None
    return (y, x) if orientation >= 5 else (x, y)   # 5-8 turn the image by 90 degrees


def _jpeg_dpi(im) -> Optional[Tuple[float, float]]:
    """A JPEG's resolution where the file states one: its JFIF density in dots per inch or cm
    (units 1 or 2; 0 is an aspect ratio), else its EXIF X/YResolution in inches or cm (no unit:
    inches, the TIFF default).  Pillow's ``info["dpi"]`` is 72 x 72 for a file with EXIF and
    neither, which outputs carried as if the file had said it."""
    if im.info.get("jfif_unit") in (1, 2):
        return im.info.get("dpi")   # (Pillow's, from the density, cm turned into inches)
    try:
        exif = im.getexif()
        x, unit = exif.get(0x011A), exif.get(0x0128, 2)
        y = exif.get(0x011B, x)
        if x is None or unit not in (2, 3):
            return None
        k = 2.54 if unit == 3 else 1.0
        return float(x) * k, float(y) * k
    except Exception:   # (a damaged EXIF, a zero denominator: no resolution)
        return None


def _png_text(im) -> Tuple[Tuple[str, str], ...]:
    """A PNG's text chunks, without XMP and ImageMagick's raw profiles (EXIF, ICC, XMP and IPTC
    as hex text: the first three travel on their own, orientation reset, which a copy would undo)."""
    try:
        items = dict(im.text).items()
    except Exception:
        return ()
    return tuple((str(k), str(v)) for k, v in items
                 if k != "XML:com.adobe.xmp" and not str(k).startswith("Raw profile type"))


def _key_alpha(rgb16: np.ndarray, key) -> Optional[np.ndarray]:
    """The alpha of a 16-bit PNG's tRNS colour key (an (r, g, b) tuple, or one grey value):
    transparent exactly where the 16-bit samples equal it; None for a key of another form."""
    try:
        k = np.array(key if isinstance(key, tuple) else (key,) * 3, dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if k.shape != (3,):
        return None
    return np.where((rgb16 == k).all(axis=2), 0, 65535).astype(np.uint16)


def round_16_to_8(a: np.ndarray) -> np.ndarray:
    """16-bit samples to the nearest 8-bit ones (65535 / 255 = 257 exactly; no sample lies halfway)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _read_16bit(path: Path, im, orientation: int = 1) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """16-bit samples -> (H x W x 3 uint16 or None, alpha uint16 or None), before orientation
    (``orientation``: the file's, which Pillow's TIFF ``load()`` has already applied)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        g = np.asarray(im).astype(np.uint16)
        if im.format == "TIFF":   # loaded upright: back to as stored, as the caller turns them once
            g = orient_array(g, INVERSE_ORIENTATION.get(orientation, 1))   # (turned twice, 2-4 came out as stored)
        return np.repeat(g[..., None], 3, axis=2), None
    if im.format == "PPM" and mode == "I":   # a 16-bit PGM: Pillow's samples are on 0..65535 whatever
        g = np.asarray(im)                   # its maxval (not 0..255: see load_image_file)
        if g.size and 0 <= g.min() and g.max() <= 65535:
            return np.repeat(g.astype(np.uint16)[..., None], 3, axis=2), None
    if im.format == "PPM" and mode == "RGB":   # a 16-bit PPM: Pillow decodes it at 8 bits
        a = _ppm16(path)
        if a is not None:
            return a, None
    if im.format == "PNG" and mode in ("RGB", "RGBA"):
        from .png16 import png16_header, read_png16
        if png16_header(path) is not None:
            a = read_png16(path)
            return np.ascontiguousarray(a[..., :3]), (a[..., 3].copy() if a.shape[2] == 4 else None)
    if im.format == "TIFF" and mode in ("RGB", "RGBA") and im.tag_v2.get(258, (8,))[0] == 16:
        try:
            import tifffile
        except ImportError:
            return None, None
        a = tifffile.imread(str(path), key=0)
        if a.dtype == np.uint16 and a.ndim == 3 and a.shape[2] in (3, 4):
            return np.ascontiguousarray(a[..., :3]), (a[..., 3].copy() if a.shape[2] == 4 else None)
    return None, None


def _pnm_header(path: Path) -> Optional[Tuple[bytes, int, int, int, int]]:
    """A PGM/PPM's (magic, width, height, maxval, offset of its samples), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:2] not in (b"P2", b"P3", b"P5", b"P6"):
        return None
    values, i = [], 2
    while len(values) < 3:
        while i < len(head) and (head[i:i + 1].isspace() or head[i:i + 1] == b"#"):
            if head[i:i + 1] == b"#":   # a comment, to the end of its line
                while i < len(head) and head[i:i + 1] not in (b"\n", b"\r"):
                    i += 1
            else:
                i += 1
        j = i
        while j < len(head) and head[j:j + 1].isdigit():
            j += 1
        if j == i:
            return None
        values.append(int(head[i:j]))
        i = j
    if i >= len(head) or not head[i:i + 1].isspace():
        return None
    return (head[:2], values[0], values[1], values[2], i + 1)   # (one whitespace byte, then the samples)


def _ppm16(path: Path) -> Optional[np.ndarray]:
    """A binary PPM's samples of maxval 256..65535 as H x W x 3 uint16 on 0..65535 (scaled as
    Pillow scales its 8-bit ones: ``round(v / maxval * full scale)``), None for any other file."""
    h = _pnm_header(path)
    if h is None or h[0] != b"P6" or not 255 < h[3] <= 65535:
        return None
    _, w, hh, maxval, offset = h
    n = w * hh * 3
    with open(path, "rb") as f:
        f.seek(offset)
        a = np.frombuffer(f.read(2 * n), dtype=">u2")
    if a.size != n or (a.size and int(a.max()) > maxval):   # (Pillow has refused such a file already)
        return None
    a = a.reshape(hh, w, 3)
    if maxval != 65535:
        a = np.round(a.astype(np.float64) * (65535.0 / maxval))
    return a.astype(np.uint16)


def _cmyk_to_srgb(im, icc: Optional[bytes]):
    """CMYK -> (RGB image, its ICC profile, note): through the file's own profile when it has one."""
    if icc_colour_space(icc) == "CMYK":
        try:
            import io as _io

            from PIL import ImageCms
            srgb = ImageCms.createProfile("sRGB")
            rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(_io.BytesIO(icc)), srgb, outputMode="RGB")
            return rgb, ImageCms.ImageCmsProfile(srgb).tobytes(), "CMYK converted to sRGB through its ICC profile"
        except Exception:
            pass
    return im.convert("RGB"), None, "CMYK converted to RGB without a colour profile (its profile is not kept)"


def load_image_file(path: Union[str, os.PathLike], max_pixels: int = MAX_PIXELS) -> ImageFile:
    """Open and decode ``path`` once: RGB pixels (see :func:`read_image`), alpha, 16-bit samples,
    mode, ICC, EXIF, XMP, frame count (first frame decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    _register_heif()
    path = Path(path)
    _check_file(path)
    notes = []
    rgb16 = alpha16 = None
    try:
        source = _identity(os.stat(path))
    except OSError as e:
        raise ImageReadError(path, f"cannot access file: {e.strerror or e}") from None
    caught: List[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:   # (Pillow's on a damaged EXIF: said as a note)
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Opened from a file object, not by name: for a name Pillow maps an uncompressed file's
            # L/P/I;16/RGBA/CMYK samples straight from disk (mmap), at its reported size, which for
            # a TIFF of orientation 5-8 is already the upright (turned) one, not the stored one: the
            # rows came out sheared, a scrambled picture, exit 0.  Read, they are decoded at the
            # stored size and turned upright after.
            with open(path, "rb") as fh, Image.open(fh) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise ImageReadError(path, f"image has zero size {w}x{h}")
                if w * h > max_pixels:
                    raise ImageReadError(path, f"image too large ({w}x{h} = {w * h} pixels > {max_pixels}); "
                                               "possible decompression bomb")
                mode, fmt = im.mode, im.format
                gray = mode in GRAY_MODES
                try:
                    n_frames, cut = int(getattr(im, "n_frames", 1) or 1), False
                except Exception:    # (cut among its frames: counted again up to the cut; it is back at 0)
                    n_frames, cut = frame_count(path)
                if cut:
                    notes.append("is cut short (truncated) after its first frame(s); only the first is read (and "
                                 "written)")
                elif n_frames > 1:
                    notes.append(f"has {n_frames} frames; only the first is read (and written)")
                transparent = "A" in im.getbands() or "transparency" in im.info
                unsigned32 = (fmt == "TIFF" and mode == "I" and tuple(im.tag_v2.get(258, (0,)))[:1] == (32,)
                              and tuple(im.tag_v2.get(339, (1,)))[:1] == (1,))   # (SampleFormat 1: unsigned)
                if fmt == "PNG":   # decoded first: its getexif() decodes it, and a decoding error swallowed
                    im.load()      # there (as a broken EXIF) once left a PNG damaged mid-file "restored"
                    #                mostly black, exit 0 (a TIFF must not be: its load() turns it upright)
                depth = im.info.get("bit_depth") if fmt in ("HEIF", "AVIF") else None
                if isinstance(depth, int) and depth > 8:
                    notes.append(f"{depth}-bit {fmt} decoded at 8 bits")
                icc = im.info.get("icc_profile")
                icc = icc if isinstance(icc, bytes) and icc else None
                xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
                orientation, exif = _exif_upright(im)
                coded = coded_orientation(im)
                tables = tables_from_pil(im) if fmt in ("JPEG", "MPO") else None
                data = None
                if fmt in ("JPEG", "MPO"):   # damage libjpeg would decode into grey or noise, said
                    from .jpeg_check import jpeg_check
                    data = read_unchanged(path, source)
                    damage, unchecked = jpeg_check(data)
                    if damage:
                        raise ImageReadError(path, damage)
                    if unchecked:    # (arithmetic coding: a cut file decodes with grey, unnoticed)
                        notes.append(unchecked)
                try:
                    im.load()
                except OSError:   # "truncated" by Pillow, one whole scan by the walk: only its end-of-image
                    from .jpeg_check import one_whole_scan   # marker missing (a download short of its last 2 bytes)
                    if (data is None or im.info.get("progressive") or im.info.get("progression")
                            or not one_whole_scan(data)):
                        raise
                    im = Image.open(io.BytesIO(data + b"\xff\xd9"))
                    im.load()
                    notes.append("its end-of-image marker is missing (its data is whole): decoded as if it were there")
                text = _png_text(im) if fmt == "PNG" else ()
                comment = im.info.get("comment") if fmt in ("JPEG", "MPO", "GIF") else None
                # (a TIFF without resolution tags: Pillow says 1 x 1 dpi, a placeholder, not the file's;
                # so does its 72 x 72 for a JPEG with EXIF but neither JFIF nor EXIF resolution)
                if fmt in ("JPEG", "MPO"):
                    dpi = _dpi(_jpeg_dpi(im), orientation)
                else:
                    dpi = _dpi(im.info.get("dpi"), orientation) if fmt != "TIFF" or 282 in im.tag_v2 else None
                rgb16, alpha16 = _read_16bit(path, im, orientation)
                if rgb16 is None and fmt == "PPM" and mode == "RGB":
                    pnm = _pnm_header(path)
                    if pnm is not None and pnm[3] > 255:   # (a plain-text one: not read at 16 bits here)
                        notes.append(f"{pnm[3].bit_length()}-bit PPM decoded at 8 bits")
                key16 = im.info.get("transparency") if (fmt == "PNG" and rgb16 is not None
                                                        and alpha16 is None) else None
                if rgb16 is None and fmt == "PNG" and not mode.startswith("I"):
                    from .png16 import png_ihdr
                    ihdr = png_ihdr(path)
                    if ihdr is not None and ihdr[2] == 16:   # grey with alpha (Pillow: RGBA), or interlaced
                        gray = gray or ihdr[3] == 4
                        notes.append(("16-bit grey PNG with alpha" if ihdr[3] == 4 else "interlaced 16-bit PNG")
                                     + " decoded at 8 bits")
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # broken EXIF: keep the pixels as stored
                    orientation = 1
                if mode == "CMYK":
                    im, icc, note = _cmyk_to_srgb(im, icc)
                    notes.append(note)
                if mode == "F":
                    notes.append("32-bit float grey decoded at 8 bits")
                    notes += check_float_samples(path, np.asarray(im))
                if key16 is not None:   # a 16-bit colour key, for the 16-bit samples (Pillow's are 8-bit)
                    im.info.pop("transparency", None)
                    alpha16 = _key_alpha(rgb16, key16)
                # a PGM of maxval over 255: Pillow gives its samples on 0..65535 (scaled from its
                # maxval), which a dark one's 2..200 would not tell (taken for 8-bit: 257x brighter)
                rgb, alpha = _to_rgb_array(im, 65535.0 if fmt == "PPM" and mode == "I" else None, unsigned32)
        for w in caught:   # the file's name on it, once, instead of a library line per reading
            said = str(w.message).strip()
            # (a tag claiming more data than the file holds: Pillow's "Tag data larger than file.
            # Skipping tag 270" had been printed raw, also with -q)
            if said.startswith(("Corrupt EXIF data", "Tag data larger than file")):
                note = f"its EXIF is damaged ({said}): read as far as it goes"
                if note not in notes:
                    notes.append(note)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's message quotes twice the limit in force for the error, the limit for the warning
        import re
        size = re.search(r"\((\d+) pixels\)", str(e))
        limit = Image.MAX_IMAGE_PIXELS
        what = f"{int(size.group(1)):,} pixels" if size else "its size"
        advice = (f"; a real photo this large: raise PIL.Image.MAX_IMAGE_PIXELS (the fastreshuffle command reads "
                  f"up to {MAX_PIXELS:,})" if limit is not None and limit < MAX_PIXELS else "")
        raise ImageReadError(path, f"decompression bomb refused: the header claims {what}, over the limit of "
                                   f"{limit:,} pixels{advice}") from None
    except UnidentifiedImageError:
        f = _float_tiff(path, max_pixels) if path.suffix.lower() in (".tif", ".tiff") else None
        if f is not None:
            return f
        raise ImageReadError(path, unreadable_reason(path)
                             or "not a recognised image format (corrupt file or not an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, RuntimeError) as e:
        why = jpeg_unreadable(path) if isinstance(e, OSError) else None
        if why:    # (a lossless JPEG opens, then fails as a "broken data stream")
            raise ImageReadError(path, why) from None
        msg = str(e).strip() or type(e).__name__    # (libheif's messages end with a line break)
        if msg.startswith("image file is truncated"):   # Pillow's: "... (6 bytes not processed)"
            msg = "truncated image file" + msg[len("image file is truncated"):]
        elif "truncated" in msg.lower():
            msg = f"truncated image file ({msg})"
        raise ImageReadError(path, f"cannot decode image: {msg}") from None
    if alpha is not None and not transparent:
        alpha = None  # e.g. a palette image without transparency, converted via RGBA
    if rgb16 is not None:
        rgb16 = orient_array(rgb16, orientation)
        alpha16 = orient_array(alpha16, orientation) if alpha16 is not None else None
        if rgb16.shape[:2] != rgb.shape[:2]:  # should not happen; never risk a mismatch
            rgb16 = alpha16 = None
        else:   # the 8-bit picture rounded from the 16-bit samples (Pillow keeps their high bytes)
            rgb = round_16_to_8(rgb16)
            if alpha16 is not None and (alpha is not None or key16 is not None):   # (a 16-bit colour key's too)
                alpha = round_16_to_8(alpha16)
    return ImageFile(rgb=np.ascontiguousarray(rgb, dtype=np.uint8), alpha=alpha, gray=gray,
                     mode=mode, format=fmt, icc_profile=icc, rgb16=rgb16, alpha16=alpha16, exif=exif,
                     xmp=_xmp_upright(xmp), n_frames=n_frames, notes=tuple(notes), orientation=orientation,
                     jpeg_tables=tables, coded_orientation=coded, dpi=dpi, text=text,
                     comment=comment if isinstance(comment, bytes) and comment else None, source=source)


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile's log silenced while it reads a file that may be damaged (its complaint was printed
    as a stray line before ours: "<tifffile.TiffPages @117444> invalid offset to first page")."""
    import logging
    log = logging.getLogger("tifffile")
    was, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = was


def _float_tiff(path: Path, max_pixels: int = MAX_PIXELS) -> Optional[ImageFile]:
    """A floating-point TIFF Pillow cannot open (colour, or grey with alpha), read through
    ``tifffile`` when it is installed: 8-bit RGB(A) as :func:`float_scale` takes the samples, its
    orientation applied, its ICC profile kept, not its EXIF (said).  None when it is not such a
    file; its size is checked before its pixels are decoded."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with quiet_tifffile(), tifffile.TiffFile(str(path)) as t:
            page = t.pages[0]
            if page.dtype is None or page.dtype.kind != "f":
                return None
            h, w = int(page.imagelength), int(page.imagewidth)
            if h * w > max_pixels or h == 0 or w == 0:
                raise ImageReadError(path, f"image size {w}x{h} refused (more than {max_pixels} pixels, or empty)")
            n_frames = len(t.pages)
            a = page.asarray()
            bits = page.bitspersample
            tag = page.tags.get(34675)
            icc = bytes(tag.value) if tag is not None else None
            tag = page.tags.get(ORIENTATION)
            orientation = int(tag.value) if tag is not None and 1 <= int(tag.value) <= 8 else 1
    except ImageReadError:
        raise
    except Exception:
        return None
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 2, 3, 4))):
        return None
    a = orient_array(a if a.ndim == 3 else a[..., None], orientation).astype(np.float64)
    c = a.shape[2]
    colour = a[..., :3] if c >= 3 else np.repeat(a[..., :1], 3, axis=2)
    notes = [f"{bits}-bit float TIFF read through tifffile, decoded at 8 bits (its EXIF is not kept)"]
    notes += check_float_samples(path, colour[..., :1] if c <= 2 else colour)
    if c in (2, 4):
        notes += check_float_samples(path, a[..., -1], "alpha samples")
    rgb = _float_to_8bit(colour)
    alpha = _float_to_8bit(a[..., -1]) if c in (2, 4) else None
    if n_frames > 1:
        notes.append(f"has {n_frames} frames; only the first is read (and written)")
    return ImageFile(rgb=np.ascontiguousarray(rgb), alpha=alpha, gray=c <= 2, mode="F", format="TIFF",
                     icc_profile=icc if isinstance(icc, bytes) and icc else None, n_frames=n_frames,
                     notes=tuple(notes), orientation=orientation)


def read_image(path: Union[str, os.PathLike], return_alpha: bool = False,
               max_pixels: int = MAX_PIXELS):
    """Read an image file as an RGB ``uint8`` array of shape ``(H, W, 3)``.

    With ``return_alpha=True`` returns ``(rgb, alpha)`` where ``alpha`` is ``(H, W) uint8`` or None.
    """
    f = load_image_file(path, max_pixels)
    return (f.rgb, f.alpha) if return_alpha else f.rgb


def write_image(path: Union[str, os.PathLike], img: np.ndarray) -> Path:
    """Write an RGB uint8 array (PNG unless the extension says otherwise)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path)
    return path


def to_tensor(img: np.ndarray):
    """HxWx3 uint8 -> 3xHxW float32 tensor in [0, 1]."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(img).transpose(2, 0, 1).copy()).float().div_(255.0)


def to_uint8(t) -> np.ndarray:
    """3xHxW float tensor in [0, 1] -> HxWx3 uint8 (clamped, rounded)."""
    import torch
    return t.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
