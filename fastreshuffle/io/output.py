"""Writing restored images: the output format, its file extension, metadata, and our own mark.

Formats: ``png`` (lossless; 8 or 16 bits), ``jpeg`` (lossy, ``quality`` 1-100, default 95), ``webp``
(lossless, or lossy at a ``quality`` 1-100 when one is given),
``tiff`` (lossless: uncompressed at 8 bits, deflate at 16), and ``same``: the input's format where we can
write it (JPEG/MPO -> jpeg, PNG -> png, WebP -> webp, TIFF -> tiff), PNG otherwise.

Every output keeps the input's ICC profile (when it describes the output's colour space),
EXIF and XMP, with the orientation reset (the pixels are written upright), and carries
``Software = fastreshuffle <version>`` in its EXIF: :func:`is_restored_output` recognises our
own outputs by it, so a folder is never restored twice.  The exceptions, said where they
happen: a 16-bit colour TIFF is written by ``tifffile`` with ICC and XMP but without EXIF;
JPEG has no alpha channel (an image with transparency is refused, never flattened silently).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .images import icc_colour_space, round_16_to_8
from .safe_write import atomic_open

__all__ = ["FORMATS", "EXTENSIONS", "DEFAULT_QUALITY", "format_of_name", "resolve_format", "write_restored",
           "is_restored_output", "software_tag"]

FORMATS = ("png", "jpeg", "webp", "tiff", "same")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
DEFAULT_QUALITY = 95
_SAME = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}
_HOLDS_16 = {"png", "tiff"}
SOFTWARE = 0x0131
XMP_TIFF_TAG = 700
EXIF_IFD, MAKER_NOTE, PIXEL_X, PIXEL_Y = 0x8769, 0x927C, 0xA002, 0xA003
JPEG_MARKER_BYTES = 65533                   # the payload of one JPEG APPn / COM marker
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
_MARK = "fastreshuffle"


def software_tag() -> str:
    from .. import __version__
    return f"{_MARK} {__version__}"


def format_of_name(path) -> Optional[str]:
    """The format a file name asks for by its extension (``out.jpg`` -> "jpeg"), None for one
    we do not write."""
    ext = os.path.splitext(str(path))[1].lower()
    names = {e: f for f, e in EXTENSIONS.items()}
    names.update({".jpeg": "jpeg", ".jfif": "jpeg", ".tiff": "tiff"})   # the other spellings
    return names.get(ext)


def resolve_format(requested: str, input_format: Optional[str]) -> Tuple[str, Optional[str]]:
    """``requested`` (one of :data:`FORMATS`) and the input's Pillow format -> (format, note or None)."""
    if requested not in FORMATS:
        raise ValueError(f"unknown output format {requested!r}; choose from {', '.join(FORMATS)}")
    if requested != "same":
        return requested, None
    fmt = _SAME.get(input_format or "")
    if fmt is None:
        return "png", f"{input_format or 'this'} format is not written; output is PNG"
    return fmt, None


def _exif_bytes(exif: Optional[bytes], size: Optional[Tuple[int, int]] = None, xmp: Optional[bytes] = None,
                drop: Tuple[int, ...] = ()) -> bytes:
    """The output's EXIF block: the input's (``exif``) with our Software mark, the EXIF
    PixelX/YDimension set to ``size`` (width, height) where the input has them (a rotation by 90
    degrees swaps them), ``xmp`` as TIFF tag 700 when given, the EXIF sub-directory's ``drop``
    tags left out."""
    from PIL import Image
    ex = Image.Exif()
    if exif:
        try:
            ex.load(exif)
            sub = ex.get_ifd(EXIF_IFD) if EXIF_IFD in ex else {}   # (get_ifd would add an empty one)
            for tag in drop:
                sub.pop(tag, None)
            if size is not None:
                for tag, v in zip((PIXEL_X, PIXEL_Y), size):
                    if tag in sub:
                        sub[tag] = int(v)
        except Exception:
            ex = Image.Exif()
    ex[SOFTWARE] = software_tag()
    if xmp:
        ex[XMP_TIFF_TAG] = xmp
    return ex.tobytes()


def _jpeg_fit(exif: Optional[bytes], size, xmp: Optional[bytes], comment: Optional[bytes], notes: List[str]):
    """The output's EXIF block (:func:`_exif_bytes`), XMP and comment cut to what a JPEG marker
    holds (64 KB each), each drop said: the maker note goes first, then the rest of the EXIF (our
    mark stays)."""
    exif_b = _exif_bytes(exif, size)
    if len(exif_b) > JPEG_MARKER_BYTES:
        exif_b = _exif_bytes(exif, size, drop=(MAKER_NOTE,))
        what = "its maker note"
        if len(exif_b) > JPEG_MARKER_BYTES:
            exif_b, what = _exif_bytes(None), "its EXIF"
        notes.append(f"EXIF over the 64 KB a JPEG marker holds: written without {what}")
    if xmp and len(xmp) > JPEG_MARKER_BYTES - len(_XMP_HEADER):
        notes.append(f"XMP of {len(xmp)} bytes is over the 64 KB a JPEG marker holds: not kept")
        xmp = None
    if comment and len(comment) > JPEG_MARKER_BYTES:
        notes.append(f"comment of {len(comment)} bytes is over the 64 KB a JPEG marker holds: not kept")
        comment = None
    return exif_b, xmp, comment


def _text_items(text, comment: Optional[bytes]) -> List[Tuple[str, str]]:
    """A PNG output's text: the input's text chunks, and a JPEG's comment as "Comment"."""
    items = list(text)
    if comment and "Comment" not in dict(items):
        items.append(("Comment", comment.decode("utf-8", "replace")))
    return items


def _png_text(text, xmp: Optional[bytes], comment: Optional[bytes]):
    """A PngInfo with :func:`_text_items` and XMP, or None."""
    from PIL import PngImagePlugin
    items = _text_items(text, comment)
    if not items and not xmp:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in items:
        try:
            key.encode("latin-1"), str(value).encode("latin-1")
            info.add_text(key, str(value))
        except UnicodeEncodeError:
            info.add_itxt(key, str(value))
    if xmp:  # Pillow's PNG writer has no xmp= (it reads the iTXt chunk back as info["xmp"])
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
    return info


def _pil_image(pixels: np.ndarray, alpha: Optional[np.ndarray], gray: bool):
    """8-bit pixels (or 16-bit grey) -> a Pillow image in the output's mode."""
    from PIL import Image
    if pixels.dtype == np.uint16:  # only grey without alpha reaches here at 16 bits
        g = np.round(pixels.astype(np.float64).mean(axis=2)).astype(np.uint16)
        return Image.fromarray(g)  # uint16 2-D -> mode I;16
    if gray:
        color = np.round(pixels.astype(np.float32).mean(axis=2)).astype(np.uint8)
        arr, mode = (color, "L") if alpha is None else (np.dstack([color, alpha]), "LA")
    else:
        arr, mode = (pixels, "RGB") if alpha is None else (np.dstack([pixels, alpha]), "RGBA")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def _to8(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is None or a.dtype == np.uint8:
        return a
    return round_16_to_8(a)


def check_alpha_fits(fmt: str, alpha: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The alpha channel to write as ``fmt``: None for a JPEG when every pixel is opaque (JPEG
    has no alpha; nothing is lost).  Raises ValueError for real transparency into JPEG, which
    is never flattened silently -- callers check before restoring."""
    if fmt != "jpeg" or alpha is None:
        return alpha
    if np.all(alpha == np.iinfo(alpha.dtype).max):
        return None
    raise ValueError("JPEG cannot hold the image's transparency (alpha channel); "
                     "use --format png, webp or tiff")


def write_restored(path: Path, pixels: np.ndarray, alpha: Optional[np.ndarray], gray: bool, fmt: str, *,
                   quality: Optional[int] = None, icc: Optional[bytes] = None, exif: Optional[bytes] = None,
                   xmp: Optional[bytes] = None, dpi: Optional[Tuple[float, float]] = None,
                   text: Tuple[Tuple[str, str], ...] = (), comment: Optional[bytes] = None,
                   overwrite: bool = False) -> List[str]:
    """Write ``pixels`` (H x W x 3, uint8 or uint16) with ``alpha`` as ``fmt`` at ``path``, atomically.

    ``quality``: of a JPEG or WebP output; None, the format's default (JPEG quality
    :data:`DEFAULT_QUALITY`, WebP lossless).  ``gray``: the source was grey (written as one
    channel where the format has it).  ``dpi``,
    ``text`` (a PNG's text chunks) and ``comment`` (a JPEG's) go where the format has a place
    for them.  Returns notes on anything the format could not hold (16 bits in JPEG/WebP, ...).
    Raises ValueError for what must not be done silently (transparency into JPEG).
    """
    notes: List[str] = []
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown output format {fmt!r}")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise ValueError(f"output quality must be 1-100, got {quality}")
    alpha = check_alpha_fits(fmt, alpha)
    if pixels.dtype == np.uint16 and (fmt not in _HOLDS_16 or (gray and alpha is not None)):
        notes.append(f"16-bit input written at 8 bits ({fmt.upper()} holds 8)" if fmt not in _HOLDS_16
                     else "16-bit grey with transparency written at 8 bits")
        pixels, alpha = _to8(pixels), _to8(alpha)
    if alpha is not None and pixels.dtype != alpha.dtype:
        alpha = _to8(alpha) if pixels.dtype == np.uint8 else alpha.astype(np.uint16) * 257
    out_gray = gray and fmt != "webp"  # WebP has no grey mode
    icc_ok = icc if icc_colour_space(icc) == ("GRAY" if out_gray else "RGB") else None
    if icc and not icc_ok:
        notes.append(f"its ICC profile ({icc_colour_space(icc) or 'unreadable'}) does not describe the "
                     f"{'grey' if out_gray else 'RGB'} output: left out")
    if text and fmt != "png":
        notes.append(f"the PNG's text ({', '.join(k for k, _ in text)}) is not kept: {fmt.upper()} has no place for it")
    if comment and fmt not in ("png", "jpeg"):
        notes.append(f"the comment is not kept: {fmt.upper()} has no place for it")
    size = (pixels.shape[1], pixels.shape[0])
    if fmt == "jpeg":
        exif_b, xmp, comment = _jpeg_fit(exif, size, xmp, comment, notes)
    else:
        exif_b = _exif_bytes(exif, size)
    if pixels.dtype == np.uint16 and not gray:
        data = _encode_16bit_colour(pixels, alpha, fmt, icc_ok, exif_b, xmp, dpi, text, comment, notes)
    else:
        im = _pil_image(pixels, alpha, gray and out_gray)
        kwargs = {"exif": exif_b}
        if icc_ok:
            kwargs["icc_profile"] = icc_ok
        if dpi and fmt != "webp":
            kwargs["dpi"] = dpi
        if fmt == "png":
            kwargs.update(format="PNG", compress_level=4)
            info = _png_text(text, xmp, comment)
            if info is not None:
                kwargs["pnginfo"] = info
        elif fmt == "jpeg":
            kwargs.update(format="JPEG", quality=int(quality or DEFAULT_QUALITY), subsampling=0, optimize=True)
            if xmp:
                kwargs["xmp"] = xmp
            if comment:
                kwargs["comment"] = comment
        elif fmt == "webp":
            # no quality asked: lossless (libwebp's lossy mode halves the chroma: a q95 WebP of a
            # q95 JPEG lost 1.8 dB, more than restoring gains there)
            kwargs.update(format="WEBP", method=4,
                          **({"lossless": True} if quality is None else {"quality": int(quality)}))
            if alpha is not None:   # libwebp zeroes the colour under alpha 0 unless told to keep it
                kwargs["exact"] = True
            if xmp:
                kwargs["xmp"] = xmp
        else:
            # uncompressed: libtiff's compressors cannot write the EXIF sub-IFD through Pillow;
            # XMP goes in as TIFF tag 700 inside the EXIF block (Pillow's writer has no xmp=)
            kwargs.update(format="TIFF", compression=None)
            if xmp:
                kwargs["exif"] = _exif_bytes(exif, size, xmp=xmp)
        buf = io.BytesIO()
        im.save(buf, **kwargs)
        data = buf.getvalue()
    with atomic_open(path, overwrite=overwrite) as f:
        f.write(data)
    return notes


def _encode_16bit_colour(pixels, alpha, fmt, icc, exif, xmp, dpi, text, comment, notes) -> bytes:
    arr = pixels if alpha is None else np.dstack([pixels, alpha])
    if fmt == "png":
        from .png16 import encode_png16
        return encode_png16(np.ascontiguousarray(arr), icc=icc, exif=exif, xmp=xmp, text=dict(_text_items(text, comment)),
                            dpi=dpi)
    import tifffile
    extratags = []
    if icc:
        extratags.append((34675, "B", len(icc), icc, True))
    if xmp:
        extratags.append((XMP_TIFF_TAG, "B", len(xmp), xmp, True))
    notes.append("16-bit colour TIFF: EXIF not kept (ICC and XMP are)")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(arr), photometric="rgb", compression="zlib",
                     extrasamples=(2,) if alpha is not None else None, software=software_tag(),
                     extratags=extratags, metadata=None,
                     resolution=tuple(dpi) if dpi else None, resolutionunit="INCH" if dpi else None)
    return buf.getvalue()


def is_restored_output(path: Path) -> bool:
    """Whether ``path`` is an image this package wrote (EXIF Software = fastreshuffle ..., or a PNG
    text chunk Software of the same: eval's ``--plot``).

    Reads the file's header only; any error means "no"."""
    if path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}:
        return False
    import warnings
    try:
        from PIL import Image
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")      # (a damaged EXIF: the reading says so, once)
            tags = (im.getexif().get(SOFTWARE), im.info.get("Software") if im.format == "PNG" else None)
    except Exception:
        return False
    return any(isinstance(t, str) and t.startswith(_MARK + " ") for t in tags)
