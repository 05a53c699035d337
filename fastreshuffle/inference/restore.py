"""The one-call ``restore`` API: numpy arrays, PIL images and tensors in, the same kind out.

>>> import fastreshuffle
>>> out = fastreshuffle.restore(image, model="jpeg")          # numpy / PIL / torch in, same kind out

Models come from the factory (:func:`fastreshuffle.inference.loading.get_model`, cached), large
images go through :mod:`.tiling`.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from typing import Optional, Tuple

import numpy as np
import torch

from .loading import ModelArg, get_model

__all__ = ["restore"]


# Floats are taken as [0, 1]; this much outside is rounding noise, more is a wrong scale.
FLOAT_SLACK = 1e-3


def _warn_caller(message: str) -> None:
    """A UserWarning pointed at the first frame outside this module: the caller's line, however
    restore() was entered (a path opens the file and calls restore() again)."""
    import sys
    import warnings
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


def check_float_range(lo: float, hi: float, finite: bool) -> None:
    """Refuse float images that are not in [0, 1] (e.g. 0-255 floats), instead of clipping them."""
    if not finite:
        raise ValueError("image contains NaN or infinite values")
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        hint = (" (looks like 0-255: divide by 255, or pass uint8)" if 2 <= hi <= 255 + FLOAT_SLACK
                else " (an overshoot, e.g. of bicubic resizing: clamp to [0, 1] first)" if hi <= 2 and lo >= -1 else "")
        raise ValueError(f"float images must be in [0, 1]; this one spans [{lo:g}, {hi:g}]{hint}")


def _restore_float_hwc(net, arr: np.ndarray, tile, overlap) -> np.ndarray:
    """float32 H x W x 3 in [0, 1] -> same."""
    from .tiling import restore_tensor
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    y = restore_tensor(net, x, tile=tile, overlap=overlap)
    return y[0].permute(1, 2, 0).numpy()


def _uint8_runner(tile, overlap):
    """-> runner(net): a function restoring a uint8 image with ``net`` (the guards' ``run``)."""
    from .tiling import restore_uint8

    def runner(net):
        return lambda x: restore_uint8(net, x, tile=tile, overlap=overlap)
    return runner


def _guarded(net, rgb: np.ndarray, tile, overlap, tables, bands=None) -> np.ndarray:
    """The do-no-harm path (:func:`.guard.guard_pixels`) for an H x W x 3 array; ``bands``
    (:class:`.loading.Bands`): the network for the JPEG quality found, instead of ``net``."""
    from .guard import guard_pixels
    from .tiling import too_small

    if too_small(*rgb.shape[:2]):
        return rgb.copy()

    runner = _uint8_runner(tile, overlap)
    pick = (lambda q: runner(bands.net(q))) if bands is not None else None
    return guard_pixels(runner(net), rgb, tables, for_quality=pick,
                        model=bands.model if bands is not None else None)[0]


def _restore_numpy(net, arr: np.ndarray, tile, overlap, guard: bool = False, tables=None,
                   bands=None, run_rgb=None) -> np.ndarray:
    """``arr`` restored (grey and alpha split off and put back); ``run_rgb``: restores the
    H x W x 3 uint8 colour instead of the network / guard (a HEIF file's QP guard)."""
    from .tiling import fill_hidden, hidden_pixels, restore_uint8

    given = arr.dtype
    if not given.isnative:   # e.g. big-endian uint16 from a file: the same values, native order (given back)
        arr = arr.astype(given.newbyteorder("="))
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image has zero size: {arr.shape}")
    gray = arr.ndim == 2 or arr.shape[2] == 1
    alpha = arr[..., 3:] if (arr.ndim == 3 and arr.shape[2] == 4) else None
    rgb = arr.reshape(arr.shape[0], arr.shape[1], -1)[..., :3] if not gray else \
        np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    dtype = arr.dtype
    seen, hidden = rgb, hidden_pixels(alpha)    # colour under alpha 0: a fill from the visible pixels
    if np.issubdtype(dtype, np.floating) and rgb.size:
        # the colour under alpha 0 is given back as it was, whatever it holds (NaN, 0-255 leftovers):
        # only the visible pixels must be in [0, 1] (the hidden ones were refused as the picture's)
        if hidden is None:
            finite = bool(np.isfinite(rgb).all())
            lo, hi = (float(rgb.min()), float(rgb.max())) if finite else (0.0, 0.0)
        else:            # (reduced where they are seen: no copy of the visible pixels)
            seen_px = ~hidden[..., None]
            finite = not bool((~np.isfinite(rgb) & seen_px).any())
            lo = float(np.min(rgb, where=seen_px, initial=np.inf)) if finite else 0.0
            hi = float(np.max(rgb, where=seen_px, initial=-np.inf)) if finite else 0.0
            lo, hi = (0.0, 0.0) if lo > hi else (lo, hi)       # (nothing seen)
        check_float_range(lo, hi, finite)
        if hidden is not None:
            rgb = rgb.copy()
            rgb[hidden] = 0.0       # (NaN would spread through the fill)
    if dtype not in (np.uint8, np.uint16) and not np.issubdtype(dtype, np.floating):
        raise TypeError(f"unsupported array dtype {dtype}; use uint8, uint16 or float in [0, 1]")
    rgb = fill_hidden(rgb, hidden)
    if run_rgb is not None:
        if dtype != np.uint8:
            raise TypeError(f"a HEIF image decoded as {dtype}: only 8-bit HEIF pixels are restored")
        out = run_rgb(np.ascontiguousarray(rgb))
    elif guard:
        out = _guarded(net, rgb, tile, overlap, tables, bands)
    elif dtype == np.uint8:
        out = restore_uint8(net, np.ascontiguousarray(rgb), tile=tile, overlap=overlap)
    elif dtype == np.uint16:
        out = _restore_float_hwc(net, rgb.astype(np.float32) / 65535.0, tile, overlap)
        out = np.round(out * 65535.0).astype(np.uint16)
    else:
        out = _restore_float_hwc(net, rgb, tile, overlap).astype(dtype, copy=False)
    if hidden is not None:
        out[hidden] = seen[hidden]     # given back as it was
    if gray:
        if dtype == np.uint8 or dtype == np.uint16:
            out = np.round(out.astype(np.float32).mean(axis=2)).astype(dtype)
        else:    # (in float64: three equal float32 values average back to themselves exactly)
            out = out.mean(axis=2, dtype=np.float64).astype(dtype)
        if arr.ndim == 3:
            out = out[..., None]
    elif alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    return out if out.dtype == given else out.astype(given)


def _restore_pil(net, img, tile, overlap, guard: bool = False, tables=None, bands=None, run_rgb=None):
    from PIL import Image

    def numpy_path(a, t=None):
        return _restore_numpy(net, a, tile, overlap, guard, t, bands, run_rgb)

    mode = img.mode
    if mode in ("RGB", "L"):
        jpeg = guard and tables is None and getattr(img, "format", None) in ("JPEG", "MPO")
        source = _file_source(img) if jpeg else None    # before loading the pixels closes an in-memory file
        arr = np.asarray(img)
        if jpeg:
            from ..io.jpeg_tables import tables_from_pil
            from .jpeg_history import tables_fit
            tables = tables_from_pil(img)   # an opened JPEG: its own tables (stored orientation) ...
            # ... while its pixels are the file's (decoded again: a line drawn or a square pasted on
            # it still fit the tables, and the guard moved them by up to 74 levels); the file out of
            # reach, while they still fit its tables
            if tables is not None and not (_pixels_are_the_files(img, arr, source) if source is not None
                                           else tables_fit(arr if arr.ndim == 3 else np.dstack([arr] * 3),
                                                           tables.luma)):
                tables = None               # ... else as an array
                if source is None:          # (out of reach: say so, as for a HEIF file)
                    _warn_caller("a JPEG image whose file can no longer be read (opened from memory and already "
                                 "loaded), with pixels its quantisation tables do not evidently describe (a smooth "
                                 "picture, or changed in place): it is restored only where JPEG compression is "
                                 "found in its pixels; pass the image as Image.open returned it, or open it from "
                                 "its path")
        return Image.fromarray(numpy_path(arr, tables), mode)
    if mode in ("RGBA", "LA"):   # with the alpha: the colour under alpha 0 filled, and given back
        arr = np.asarray(img)
        if mode == "RGBA":
            return Image.fromarray(numpy_path(arr), mode)
        out = numpy_path(np.stack([arr[..., 0]] * 3 + [arr[..., 1]], axis=2))   # grey as RGB, as an H x W one is
        grey = np.round(out[..., :3].astype(np.float32).mean(axis=2)).astype(np.uint8)
        return Image.fromarray(np.stack([grey, out[..., 3]], axis=2), mode)
    if mode in ("P", "PA", "1"):
        # Re-quantising to a palette would undo the restoration: return RGB(A) / L instead.
        has_alpha = (mode == "PA" or "transparency" in img.info    # (an RGBA palette made in memory: no key)
                     or (mode == "P" and img.palette is not None and img.palette.mode == "RGBA"))
        target = "L" if mode == "1" else ("RGBA" if has_alpha else "RGB")
        return _restore_pil(net, img.convert(target), tile, overlap, guard, bands=bands, run_rgb=run_rgb)
    if mode == "F":   # 32-bit float grey: as a float array (through RGB it would be cut to 0 / 1)
        return Image.fromarray(numpy_path(np.asarray(img, dtype=np.float32)).astype(np.float32), "F")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        from ..io.images import int_gray_scale
        arr = np.asarray(img)
        scale = int_gray_scale(mode, arr)            # as the CLI reads such a file
        out = numpy_path(arr.astype(np.uint16 if scale > 255 else np.uint8))   # as that array would be
        return Image.fromarray(out.astype(np.uint16 if mode.startswith("I;16") else np.int32))
    # CMYK, YCbCr, LAB, HSV, ...: through RGB and back (premultiplied RGBa / La: through RGBA / LA,
    # their alpha kept).  These conversions are lossy (LAB, HSV by up to 255 levels, CMYK's black
    # rebuilt): where restoring changed nothing, the image comes back as it was.
    via = img.convert({"RGBa": "RGBA", "La": "LA"}.get(mode, "RGB"))
    out = _restore_pil(net, via, tile, overlap, guard, bands=bands, run_rgb=run_rgb)
    if np.array_equal(np.asarray(out), np.asarray(via)):
        return img.copy()
    return out.convert(mode)


def _check_loadable(img) -> None:
    """A clear error for a PIL image whose pixels can no longer be read: its file closed before
    they were (``with Image.open(...) as im:`` ended, ``im.close()``); Pillow's own is a bare
    AssertionError or "seek of closed file"."""
    pixels = getattr(img, "_im", None)          # (Pillow's: None until loaded, an error object once closed)
    fp = getattr(img, "fp", None)
    if pixels is None and (fp is None or getattr(fp, "closed", False)) or type(pixels).__name__ == "DeferredError":
        raise ValueError("the image's pixels cannot be read: its file was closed before they were (a "
                         "`with Image.open(...)` block that ended, or im.close()); load them inside the block "
                         "(im.load()), or open the file again")


def _refuse_damaged_jpeg(img) -> None:
    """An OSError for a JPEG image whose file's compressed data is damaged (cut short, corrupt:
    :mod:`fastreshuffle.io.jpeg_check`), which libjpeg decoded into grey or noise without an error,
    as ``fastreshuffle restore`` refuses it; a warning where its data cannot be checked (arithmetic
    coding), as the CLI's note; nothing where the file is out of reach."""
    data = _file_bytes(img)
    if data:
        from ..io.jpeg_check import jpeg_check
        damage, unchecked = jpeg_check(data)
        if unchecked:   # (arithmetic coding: a cut file decodes with grey, unnoticed)
            _warn_caller(f"{getattr(img, 'filename', None) or 'a JPEG image opened from memory'}: {unchecked}")
        # the file read again may no longer be the one decoded (overwritten, cut short since the
        # image was loaded): its damage then says nothing about these pixels, which were refused
        if damage and _pixels_are_the_files(img, np.asarray(img), data):
            name = getattr(img, "filename", None) or "a JPEG image opened from memory"
            raise OSError(f"{name}: {damage}; to restore the picture as it was decoded anyway, pass "
                          "np.asarray(image)")


def _file_source(img):
    """What a PIL image was opened from, for reading it again: its path, else the bytes of its
    still-open file object (an image opened from memory: loading its pixels closes it), or None."""
    import os
    name = getattr(img, "filename", None)
    if name and os.path.isfile(name):
        return name
    return _file_bytes(img)


def _frame_count(img) -> Tuple[int, bool]:
    """(frames, cut short) of the file a PIL image was opened from, counted on a fresh opening of
    it (:func:`~fastreshuffle.io.images.frame_count`): counting on ``img`` itself seeks through its
    frames and back, which decodes its frame again from the file (a caller's edits to a GIF were
    lost, and a closed one failed).  (1, False) when the file is out of reach or holds one."""
    from ..io.images import MULTI_FRAME_FORMATS, frame_count
    if getattr(img, "format", None) not in MULTI_FRAME_FORMATS:
        return 1, False
    source = _file_source(img)
    return (1, False) if source is None else frame_count(source)


def _pixels_are_the_files(img, arr: np.ndarray, source) -> bool:
    """Whether a PIL JPEG's pixels are still those of its file (``source``, from
    :func:`_file_source`), decoded again and compared exactly -- the file's tables then describe
    them, whatever :func:`.jpeg_history.tables_fit` made of them; False when the file is out of
    reach, changed, or the image was resized or painted in place."""
    if source is None:
        return False
    import io

    from PIL import Image
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            if f.size != img.size or f.mode != img.mode:
                return False
            return bool(np.array_equal(np.asarray(f), arr))
    except Exception:   # not decodable any more: no evidence either way
        return False


# The bytes of files that images opened from memory were read from, while those images live (by
# id: PIL images are not hashable): loading the pixels closes such a file, and a second restore()
# of the same image still needs it (a HEIF file's QP).  Emptied as the images go.
_READ_FROM_MEMORY: dict = {}


def _image_slot(table: dict, image, make):
    """``table``'s entry for a PIL image (by id: PIL images are not hashable), made by ``make()``
    the first time and dropped as the image goes."""
    key = id(image)
    if key not in table:
        table[key] = make()
        weakref.finalize(image, table.pop, key, None)
    return table[key]


def _file_bytes(img) -> Optional[bytes]:
    """The file a PIL image was opened from (its path, else its still-open file object, else what
    an earlier call read from that object), or None."""
    import os
    name = getattr(img, "filename", None)
    try:
        if name and os.path.isfile(name):
            with open(name, "rb") as f:
                return f.read()
        fp = getattr(img, "fp", None)
        if fp is not None and hasattr(fp, "seek"):
            pos = fp.tell()
            try:
                fp.seek(0)
                data = fp.read()
            finally:
                fp.seek(pos)
            if isinstance(data, bytes):
                _image_slot(_READ_FROM_MEMORY, img, lambda: data)
                return data
            return None
    except (OSError, ValueError):
        return None
    return _READ_FROM_MEMORY.get(id(img))


def _restore_heif(net, img, tile, overlap, bands=None):
    """A PIL image opened from a HEIF file, with the HEVC model: the guard of ``restore`` on the
    file (:func:`.guard.hevc_guarded_file`: the strength of its QP; ``bands``: the network of its
    QP), run on the pixels as coded (before the file's rotation, so the codec's blocks lie on the
    network's cells) and turned upright again.  A file no longer reachable (opened from memory,
    then loaded by something else than restore(): Pillow closes it), or pixels that are no longer
    the file's (pasted into, resized in place), have no QP to go by: returned unchanged, with a
    warning."""

    from ..io.images import INVERSE_ORIENTATION, coded_orientation, orient_array
    from .guard import hevc_guarded_file
    from .tiling import too_small

    data = _file_bytes(img)
    if data is None:
        _warn_caller("a HEIF image whose file can no longer be read (opened from memory and already loaded, or "
                     "its file since removed): "
                     "its QP is unknown, so it is returned unchanged; pass the image as Image.open returned "
                     "it, or open it from its path (guard=False restores it anyway)")
        return img.copy()
    if not _pixels_are_the_files(img, np.asarray(img), data):   # pasted into, resized in place, ...
        _warn_caller("a HEIF image whose pixels are no longer its file's (changed in place, or the file "
                     "replaced since): the file's QP "
                     "does not describe them, so it is returned unchanged (guard=False restores it anyway)")
        return img.copy()
    o = coded_orientation(img)
    runner = _uint8_runner(tile, overlap)
    for_qp = (lambda qp: runner(bands.net(qp=qp))) if bands is not None else None

    def run_rgb(rgb: np.ndarray) -> np.ndarray:     # modes, grey and alpha: as for any PIL image
        if too_small(*rgb.shape[:2]):
            return rgb.copy()
        out, _ = hevc_guarded_file(runner(net), orient_array(rgb, INVERSE_ORIENTATION[o]), data, for_qp)
        return orient_array(out, o)
    return _restore_pil(net, img, tile, overlap, run_rgb=run_rgb)


def _restore_webp(net, img, tile, overlap):
    """A PIL image opened from a lossy WebP file, with the WebP model: the guard of ``restore`` on
    the file (:func:`.guard.webp_guarded_file`: the strength of its quantiser).  A file no longer
    reachable, or pixels that are no longer the file's, have no quantiser to go by: returned
    unchanged, with a warning (as :func:`_restore_heif`)."""
    from .guard import webp_guarded_file
    from .tiling import too_small

    data = _file_bytes(img)
    if data is None:
        _warn_caller("a WebP image whose file can no longer be read (opened from memory and already loaded, or "
                     "its file since removed): "
                     "its quantiser is unknown, so it is returned unchanged; pass the image as Image.open "
                     "returned it, or open it from its path (guard=False restores it anyway)")
        return img.copy()
    if not _pixels_are_the_files(img, np.asarray(img), data):
        _warn_caller("a WebP image whose pixels are no longer its file's (changed in place, or the file "
                     "replaced since): the file's quantiser "
                     "does not describe them, so it is returned unchanged (guard=False restores it anyway)")
        return img.copy()
    runner = _uint8_runner(tile, overlap)

    def run_rgb(rgb: np.ndarray) -> np.ndarray:     # modes and alpha: as for any PIL image
        if too_small(*rgb.shape[:2]):
            return rgb.copy()
        return webp_guarded_file(runner(net), rgb, data)[0]
    return _restore_pil(net, img, tile, overlap, run_rgb=run_rgb)


def _lossy_webp(img) -> Optional[bool]:
    """Whether a PIL image is a still image opened from a lossy WebP file whose quantiser can be
    read; None for a WebP image whose file is out of reach (opened from memory and already loaded:
    which it was is unknown)."""
    if getattr(img, "format", None) != "WEBP" or int(getattr(img, "n_frames", 1) or 1) != 1:
        return False
    from ..io.webp_quant import webp_quant
    data = _file_bytes(img)
    return None if data is None else webp_quant(data) is not None


# what a restored PIL image keeps of its source's info: the photo's metadata (not how its file was
# coded), so that getexif() reads the source's EXIF -- orientation included: the pixels come back
# as stored -- and saving passes on what the caller passes on, as for the source image
_KEPT_INFO = ("exif", "icc_profile", "dpi", "xmp", "XML:com.adobe.xmp", "comment")


def _with_info(out, img):
    for key in _KEPT_INFO:
        if key in img.info:
            out.info[key] = img.info[key]
    return out


# keys Pillow's JPEG decoder puts in Image.info (JFIF / Adobe markers, progressive coding): they
# survive .convert() and .transpose(), the file's quantisation tables do not
_JPEG_INFO_KEYS = frozenset({"jfif", "jfif_version", "adobe", "adobe_transform", "progressive", "progression"})
# and those its WebP decoder puts there (a GIF has "background" and "loop" too, but no "timestamp")
_WEBP_INFO_KEYS = frozenset({"timestamp", "background"})


def _restore_torch(net, x: torch.Tensor, tile, overlap, guard: bool = False, bands=None) -> torch.Tensor:
    from .tiling import restore_tensor

    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    x = x.detach()   # inference: no graph (and no warning from reading the range of a leaf)
    if x.dim() == 4 and x.shape[0] == 0 and x.shape[1] in (1, 3):
        return x.clone()   # an empty batch
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected a tensor of shape (3, H, W) or (N, 3, H, W) (1 channel for grey), "
                         f"got {tuple(x.shape)}")
    if x.dim() == 3:
        return _restore_torch(net, x.unsqueeze(0), tile, overlap, guard, bands)[0]
    if x.device.type == "meta":
        raise ValueError("a tensor on the meta device has no values to restore")
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"image has zero size: tensor of shape {tuple(x.shape)}")
    if x.numel():
        finite = bool(torch.isfinite(x).all())
        check_float_range(float(x.min()) if finite else 0.0, float(x.max()) if finite else 0.0, finite)
    if guard:  # image by image through the numpy path (the guard works on 8-bit pixels)
        outs = []
        for img in x.detach():
            # (float64 kept: what the guard leaves as it was keeps its own values, as a float64 array's)
            a = (img if img.dtype == torch.float64 else img.float()).permute(1, 2, 0).cpu().numpy()
            a = a[..., 0] if a.shape[2] == 1 else a
            o = torch.from_numpy(np.ascontiguousarray(_restore_numpy(net, a, tile, overlap, True, bands=bands)))
            outs.append((o[None] if o.dim() == 2 else o.permute(2, 0, 1)).to(device=x.device, dtype=x.dtype))
        return torch.stack(outs)
    if x.shape[1] == 1:
        y = restore_tensor(net, x.expand(-1, 3, -1, -1).float(), tile=tile, overlap=overlap)
        return y.mean(dim=1, keepdim=True).to(x.dtype)
    return restore_tensor(net, x.detach(), tile=tile, overlap=overlap)


def restore(image, model: ModelArg = "auto", device=None, tile: Optional[int] = None, *,
            overlap: Optional[int] = None, half: bool = False, self_ensemble: bool = False,
            guard: Optional[bool] = None, precision: Optional[str] = "auto"):
    """Remove compression artifacts from ``image`` and return the same kind of object.

    ``image`` may be

    * a numpy array ``H x W x 3`` (RGB), ``H x W x 4`` (RGBA: alpha passed through) or
      ``H x W`` (grayscale), dtype uint8 (0..255), uint16 (0..65535) or float in [0, 1]
      (floats outside it, e.g. 0-255 floats, or NaN, are refused with ValueError, never
      clipped); the result has the same shape and dtype;
    * a PIL image: RGB, L, RGBA and LA come back in the same mode; palette ("P") images come
      back as RGB/RGBA (re-quantising would undo the restoration); "F" (float grey, values in
      [0, 1], else refused like a float array) as an "F" image; 16-bit grey ("I;16*", full
      scale 65535) as "I;16" and "I" (32-bit: full scale 255 when every value is 0..255, else
      65535; values outside 0..65535 refused with ValueError) as "I"; palette images ("P",
      "PA") come back as RGB(A) and 1-bit ones ("1") as "L", changed or not (a palette or 1 bit
      would undo the restoration); other modes (CMYK, ...) are restored through RGB and converted
      back (returned as they were where nothing changed);
    * a torch tensor ``(3, H, W)`` or ``(N, 3, H, W)`` (``1`` channel for grayscale), float in
      [0, 1], on any device; the result has the same shape, dtype and device;
    * a file's path (str or ``os.PathLike``): opened with Pillow (HEIF files too) and restored as
      that opened image is; the result is a PIL image (as stored: its EXIF orientation still applies,
      where ``fastreshuffle restore`` writes the pixels upright;
      16-bit colour at 8 bits, with a warning: pass a uint16 array for 16).

    An image under 8 pixels on a side comes back unchanged, with a warning (the network works on
    8 x 8 cells).

    ``model`` is a shipped model name ("jpeg", "hevc", "webp"), a safetensors path, a loaded model, or
    "auto" (default): ``hevc`` for a PIL image opened from a HEIF file, ``webp`` for one opened
    from a lossy WebP file, else ``jpeg``.  The
    shipped ``jpeg`` restores a JPEG of quality 20 or less (read from its tables, or detected in
    its pixels) with its low-quality specialist ``jpeg-low``, one of quality 45-80 with ``jpeg-mid``
    and one of quality 81 or more with ``jpeg-high`` (with the strengths of its own schedule), the shipped ``hevc`` a HEIF file
    coded at QP 42 or more (x265 quality 10 or less) with ``hevc-low``
    (:func:`fastreshuffle.inference.loading.band_model`).  ``"hevc-paper"`` (asked for by name
    only) is the paper's Table 1 network for HEIF files: a little better than ``hevc`` (+0.42 vs
    +0.40 dB on Kodak24 at quality 15) at 10x its multiply-adds.  ``device``: None/"auto" (CUDA if available), "cpu", "cuda".  ``tile``: tile size
    for large images (multiple of 8; None = default for the device, 0 = no tiling).
    ``self_ensemble``: average over the 8 flips / rotations (8x slower, slightly better).
    ``precision`` (for a model given by name or path): "auto" (default: bf16 on a CPU with
    AVX512-BF16 or AMX, within 0.003 dB of fp32 on Kodak24, else fp32), "fp32", "bf16", or "fp16" on CUDA
    (``half=True`` is "fp16" on CUDA; elsewhere ``precision``, with a warning, as ``fastreshuffle
    restore --half``).  A model object runs as it is: in its own dtype, on its own device
    (a ``device`` or ``precision`` given must be its own: it is not moved or converted, and
    another one raises ValueError), in eval mode (its modules' training
    flags are put back afterwards).

    ``guard`` (default: on for JPEG models given by name or path, or loaded by :func:`load_model` /
    ``load_pretrained`` from such a file (their ``codec``); for any model given by name or path
    -- also a weights file that names no codec -- and any loaded model that knows its codec, on a
    PIL image opened from a JPEG file (its tables, as ``fastreshuffle restore``); for the HEVC
    model on a PIL image opened from a HEIF file, the WebP model on one opened from a lossy WebP
    file (the share of its quantiser, :func:`.guard.webp_strength`); off for a network whose codec is unknown, such
    as one built in Python; a loaded model does not bring its quality band's specialist, as
    ``model="jpeg"`` does): do no harm
    (:mod:`fastreshuffle.inference.guard`).  A HEIF image gets the share of the correction the
    QP read from its file warrants (as ``fastreshuffle restore`` does).  An image is restored only where JPEG
    compression is found -- from the tables of an opened JPEG (a PIL image from ``Image.open``,
    while its pixels are the file's -- decoded again and compared -- or, the file out of reach,
    still fit its tables: not after an in-place ``thumbnail``), else detected in its 8-bit pixels (any 8x8 grid offset) -- with the share of the correction
    its quality warrants, kept consistent with the quantisation; anything else (a never-compressed
    photo, a JPEG of quality ~98 and above) comes back unchanged; a 16-bit or float image is
    guarded through its 8-bit rounding, and what the guard leaves as it was keeps its own values.
    ``guard=False``: the network's output as is, as ``fastreshuffle restore --no-guard``.
    ``guard=True`` with the HEVC or WebP model on pixels that are not its file's (no quantiser to
    go by) raises ValueError; left out, such pixels get the full correction, with a warning.
    """
    import os
    if isinstance(image, (str, os.PathLike)):   # a file: opened as the user would (HEIF too), tables kept
        from PIL import Image, UnidentifiedImageError

        from ..io.images import NOT_REGULAR, _register_heif, jpeg_unreadable, special_file, unreadable_reason
        if special_file(image):   # (a FIFO: the open blocked for ever)
            raise OSError(f"{os.fspath(image)}: {NOT_REGULAR}: restore reads image files")
        _register_heif()
        fh = open(image, "rb")
        try:
            # from a file object, not by name: by name Pillow maps an uncompressed file's samples
            # from disk at its reported size, which for a TIFF of orientation 5-8 is the turned one
            # (a scrambled picture; io.images.load_image_file reads files the same way)
            opened = Image.open(fh)
        except UnidentifiedImageError:    # (an OSError, as for any file Pillow cannot read)
            fh.close()
            if _float_tiff(image):
                raise UnidentifiedImageError(
                    f"{image}: a floating-point TIFF, which Pillow cannot read: pass its samples as an array "
                    "(tifffile.imread, floats in [0, 1]), or use the fastreshuffle restore command, which reads "
                    "it through tifffile") from None
            why = unreadable_reason(image)
            if why:
                raise UnidentifiedImageError(f"{image}: {why}") from None
            raise
        except BaseException:
            fh.close()
            raise
        with fh, opened:
            try:
                opened.load()
            except OSError:   # (a lossless JPEG opens, then fails as a "broken data stream")
                why = jpeg_unreadable(image)
                if why:
                    raise UnidentifiedImageError(f"{image}: {why}") from None
                raise
            opened.filename = os.fspath(image)    # (its name in messages; its file read again by name)
            if _sixteen_bit_colour(opened, image):
                _warn_caller(f"{image}: 16-bit colour, which a PIL image holds at 8 bits (so is 16-bit grey with "
                             "alpha): restored and returned at 8 bits; for 16, pass the samples as a uint16 "
                             "array (fastreshuffle.io.png16.read_png16 for a PNG, tifffile.imread for a TIFF) "
                             "or use the fastreshuffle restore command")
            return restore(opened, model, device, tile, overlap=overlap, half=half, self_ensemble=self_ensemble,
                           guard=guard, precision=precision)
    for name, v in (("guard", guard), ("self_ensemble", self_ensemble), ("half", half)):
        if not (v is None and name == "guard") and not (isinstance(v, (bool, np.bool_)) or
                                                         (isinstance(v, int) and v in (0, 1))):
            raise TypeError(f"{name} must be True or False{' (or None)' if name == 'guard' else ''}, "
                            f"got {type(v).__name__} {v!r}")
    guard = None if guard is None else bool(guard)     # (0 / 1 as False / True)
    self_ensemble, half = bool(self_ensemble), bool(half)
    with _in_eval_mode(model), _one_call_at_a_time(image):
        return _restore(image, model, device, tile, overlap, half, self_ensemble, guard, precision)


# A lock per PIL image that restore() calls are reading, while the image lives (by id: PIL images
# are not hashable): an opened image loads its pixels on first use and restore() reads its file
# object (a JPEG's data, a HEIF file's QP), neither of which Pillow does safely from two threads at
# once (calls on one image from several threads failed with "I/O operation on closed file" or an
# image of shape ()).  Calls on the same image run one after the other; on other images, in parallel.
_IMAGE_LOCKS: dict = {}
_IMAGE_LOCKS_LOCK = threading.Lock()


def _one_call_at_a_time(image):
    pil = sys.modules.get("PIL.Image")
    if pil is None or not isinstance(image, pil.Image):
        return contextlib.nullcontext()
    with _IMAGE_LOCKS_LOCK:
        return _image_slot(_IMAGE_LOCKS, image, threading.RLock)   # (re-entrant: restore() may call itself)


# Models in training mode that restore() calls are running in eval mode: id -> [calls, the modes
# to put back].  The first call saves the caller's modes and switches, the last one puts them
# back: calls from several threads on one model never save a half-switched state.
_EVAL_LOCK = threading.Lock()
_EVAL_USERS: dict = {}


@contextlib.contextmanager
def _in_eval_mode(model):
    """``model`` (if a module in training mode) in eval mode for the block, its modules' modes
    put back afterwards; a model already in eval mode, the usual case, is not touched."""
    entry = None
    if isinstance(model, torch.nn.Module):
        with _EVAL_LOCK:
            entry = _EVAL_USERS.get(id(model))
            if entry is not None:
                entry[0] += 1
            elif any(m.training for m in model.modules()):
                modes = [(m, m.training) for m in model.modules()]
                try:
                    model.eval()
                except BaseException:          # (a module's own train() may raise): nothing kept
                    for m, training in modes:
                        m.training = training
                    raise
                entry = _EVAL_USERS[id(model)] = [1, modes]
    try:
        yield
    finally:
        if entry is not None:
            with _EVAL_LOCK:
                entry[0] -= 1
                if entry[0] == 0:
                    del _EVAL_USERS[id(model)]
                    for m, training in entry[1]:
                        m.training = training


def _float_tiff(path) -> bool:
    """Whether ``path`` is a TIFF of floating-point samples (which Pillow cannot open in colour)."""
    if not str(path).lower().endswith((".tif", ".tiff")):
        return False
    from ..io.images import quiet_tifffile
    try:
        import tifffile
        with quiet_tifffile(), tifffile.TiffFile(path) as t:   # (Pillow's error says what it cannot read)
            return t.pages[0].dtype is not None and t.pages[0].dtype.kind == "f"
    except Exception:   # no tifffile, or not a TIFF it can read either: Pillow's own error stands
        return False


def _sixteen_bit_colour(img, path) -> bool:
    """Whether an opened PNG or TIFF file holds 16-bit colour, or 16-bit grey with alpha (Pillow
    reads them at 8 bits; 16-bit grey alone it holds as I;16)."""
    if img.mode not in ("RGB", "RGBA", "LA"):
        return False
    if img.format == "PNG":
        from ..io.png16 import png_ihdr
        ihdr = png_ihdr(path)
        return ihdr is not None and ihdr[2] == 16
    return img.format == "TIFF" and img.tag_v2.get(258, (8,))[0] == 16


def _height_width(image):
    """(height, width) of an image restore() takes, or None for anything else, e.g. an array of
    another shape (refused later, with no word about its size first)."""
    if isinstance(image, torch.Tensor):
        ok = image.dim() in (3, 4) and image.shape[-3] in (1, 3) and image.is_floating_point() and image.numel()
        return tuple(image.shape[-2:]) if ok else None
    if isinstance(image, np.ndarray):
        ok = (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) and image.size
        return tuple(image.shape[:2]) if ok else None
    size = getattr(image, "size", None)
    return (size[1], size[0]) if isinstance(size, tuple) and len(size) == 2 else None


def _restore(image, model, device, tile, overlap, half, self_ensemble, guard, precision):
    import os

    from .tiling import DEFAULT_OVERLAP, SelfEnsemble, check_tile_args
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    if not isinstance(model, (str, os.PathLike, torch.nn.Module)):
        raise TypeError("model must be a shipped model name (e.g. 'jpeg'), a weights file path or a loaded "
                        f"network, got {type(model).__name__} {model!r}")
    check_tile_args(0 if tile is None else tile, overlap)
    from .tiling import TILE_WORK_WARNED, tile_work
    work, larger = tile_work(tile or 0, overlap)
    if work > TILE_WORK_WARNED:   # (as the command says it: tile=8, overlap=512 looked like a hang)
        _warn_caller(f"tile={tile} with overlap={overlap}: each tile runs on {tile + 2 * overlap} px squares, "
                     f"{work:.0f}x the work of its own pixels (very slow); a larger tile, e.g. tile={larger}, takes "
                     f"{tile_work(larger, overlap)[0]:.2g}x")
    if isinstance(image, np.matrix):      # (its 2-D-only indexing failed deep in numpy: an AxisError)
        raise TypeError("a numpy matrix is not an image array: pass np.asarray(m)")
    if isinstance(image, torch.Tensor) and image.layout != torch.strided:
        raise TypeError(f"a {image.layout} tensor: pass a dense one (tensor.to_dense())")
    pil = not isinstance(image, (np.ndarray, torch.Tensor))
    if pil and hasattr(image, "load") and hasattr(image, "mode"):
        _check_loadable(image)
    # a lossy WebP file's image (None: a WebP whose file is out of reach -- the WebP route says so)
    lossy_webp = _lossy_webp(image) if pil else False
    webp_file = lossy_webp is not False
    if isinstance(model, str) and model == "auto":
        from .loading import auto_model_name
        model = auto_model_name(getattr(image, "format", None) if pil else None, webp_file)
    from .loading import Bands

    if half and not isinstance(model, torch.nn.Module):   # one warning per call, at the caller (not one per band)
        from ..backends import half_precision, resolve_device
        precision, note = half_precision(precision, half, resolve_device(device))
        half = precision == "fp16"
        if note:
            _warn_caller(note)

    def load(m):
        n = get_model(m, device, half, precision)
        return SelfEnsemble(n) if self_ensemble else n
    bands = Bands(model, load)   # the network of a JPEG's quality, a HEIF file's QP (jpeg: four bands, hevc: two)
    net = bands.net()
    from .guard import BLIND, HEIF_QP, UNGUARDED, WEBP_Q, route
    from .loading import model_codec
    codec = model_codec(model)      # a loaded model: the codec load_model recorded, if any
    fmt = None if isinstance(image, (np.ndarray, torch.Tensor)) else getattr(image, "format", None)
    jpeg_file = fmt in ("JPEG", "MPO")
    if jpeg_file:
        _refuse_damaged_jpeg(image)
    # the same decision as `fastreshuffle restore` and `eval` (guard.route); a JPEG file's tables
    # are used where they still describe its pixels (_restore_pil), else JPEG is looked for in them
    from ..io.jpeg_tables import tables_from_pil
    tables = jpeg_file and tables_from_pil(image) is not None   # (CMYK, RGB-coded: none it can use)
    how = route(codec, guard=guard, jpeg_file=jpeg_file, tables=tables, heif=fmt == "HEIF",
                webp=codec == "webp" and webp_file, named=not isinstance(model, torch.nn.Module))
    hw = _height_width(image)
    if hw is not None and min(hw) > 0:
        from .tiling import too_small
        if too_small(*hw):
            _warn_caller(f"a {hw[1]}x{hw[0]} image is under 8 pixels on a side: returned unchanged (the network "
                         "works on 8x8 cells)")
    frames, cut = _frame_count(image) if pil else (1, False)
    if cut:
        _warn_caller(f"the file of this image is cut short (truncated) after its first frame(s): only the one it is "
                     f"at, frame {image.tell()}, is restored and returned")
    elif frames > 1:   # (as the command's note: the rest came back missing without a word)
        _warn_caller(f"an image of {frames} frames (pages): only the one it is at, frame {image.tell()}, is "
                     "restored and returned")
    if how.kind == HEIF_QP:
        return _with_info(_restore_heif(net, image, tile, overlap, bands), image)
    if how.kind == WEBP_Q:
        return _with_info(_restore_webp(net, image, tile, overlap), image)
    if how.kind == UNGUARDED and how.note:
        what = "WebP" if codec == "webp" else "HEVC"
        if guard is True:   # asked for, and there is nothing to guard by: not done without a word
            raise ValueError(f"guard=True, but the {what} model has no quantiser to go by: {how.note.split(':')[0]}; "
                             f"pass the {'lossy WebP' if codec == 'webp' else 'HEIF'} file (its path, or the image "
                             "Image.open returned), or leave guard out for the full correction (said)")
        _warn_caller(f"{what} model: {how.note}")
    if how.kind == BLIND and fmt == "WEBP" and lossy_webp is True:
        _warn_caller("a lossy WebP file given to a JPEG model: it is restored only where JPEG compression is "
                     "found in its pixels (as a rule, nowhere); model='webp' or 'auto' restores lossy WebP files")
    elif how.kind == BLIND and fmt is None and _WEBP_INFO_KEYS <= set(getattr(image, "info", None) or {}):
        _warn_caller("this image was decoded from a WebP file (its info says so) but is no longer the image "
                     "Image.open returned (.convert(), ImageOps.exif_transpose() and copies lose the file): it is "
                     "restored only where JPEG compression is found in its pixels; if the file is a lossy WebP, "
                     "pass the image Image.open returned, as it is, or the file's path")
    if (how.kind != UNGUARDED and codec == "jpeg" and fmt is None
            and _JPEG_INFO_KEYS.intersection(getattr(image, "info", None) or {})):
        _warn_caller("this image was decoded from a JPEG file (its info says so) but no longer carries the "
                     "file's quantisation tables (.convert(), ImageOps.exif_transpose() and copies drop "
                     "them): it is restored only where JPEG compression is found in its pixels; pass the "
                     "image Image.open returned, as it is")
    guard = how.kind != UNGUARDED
    if isinstance(image, torch.Tensor):
        return _restore_torch(net, image, tile, overlap, guard, bands)
    if isinstance(image, np.ndarray):
        return _restore_numpy(net, image, tile, overlap, guard, bands=bands)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return _with_info(_restore_pil(net, image, tile, overlap, guard, bands=bands), image)
    raise TypeError(f"restore() takes a file path, a PIL image, a numpy array or a torch tensor, got "
                    f"{type(image).__name__}" + (" (open it with PIL.Image.open first)" if isinstance(image, (bytes, bytearray))
                                                 or hasattr(image, "read") else ""))
