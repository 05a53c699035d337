"""Tiled inference: run a ReshuffleNet over a large image in overlapping tiles.

The image is cut into a grid of *core* tiles of ``tile x tile`` pixels.  Each core tile is
run through the network together with ``overlap`` pixels of real image context on every
side (less at the image border), and only the core of the result is kept ("center crop"),
so the output has no seams: wherever the network's effective receptive field fits inside
the overlap, the tiled result equals the untiled one.

Window origins are kept on multiples of 8 (``tile`` and ``overlap`` must be multiples of 8)
because the network starts with three 2x pixel-unshuffles; this keeps every tile on the
same 8x8 phase grid as the full image.

Memory is bounded by one tile's activations plus the input and output images.  The uint8
path (:func:`restore_pixels`) converts tile by tile, so a 24-megapixel photo needs only its
uint8 input and output (2 x 72 MB) plus one tile's worth of float activations.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from ..nn.config import PAD_MULTIPLE

# With the shipped (trained) models an overlap of 32 left seams of up to 2-3 levels (float
# difference 5e-3 .. 1e-2); 64 keeps every pixel within 1e-4 of the untiled result, i.e. within
# one 8-bit level (python -m benchmarks.tile_seams).  768-px tiles on CPU keep the extra work
# near what 512/32 cost ((768+128)^2 / 768^2 = 1.36x the pixels, against 1.27x) and the memory of
# one tile low (docs/restore.md, "Tiling").
DEFAULT_TILE_CPU = 768
DEFAULT_TILE_CUDA = 1024
DEFAULT_OVERLAP = 64

Box = Tuple[int, int, int, int]  # y0, y1, x0, x1


def too_small(height: int, width: int) -> bool:
    """Images under 8 pixels on a side are returned unchanged: the network works on 8x8 cells
    (three 2x reshuffles), and such an image would be all padding -- the models shift its
    colours (a 1x1 (199, 102, 51) came out (194, 100, 51)) without anything to restore."""
    return min(height, width) < PAD_MULTIPLE


# An image narrower or lower than this runs with mirrored context around it (on each side a multiple
# of 16 px, so that the codec's 8x8 blocks and 16x16 4:2:0 units keep their places): alone, the
# network's three 2x reductions leave it a few cells, and it made small crops worse
# (python -m benchmarks.small_images, 6 crops of each of the 7 outside photos, JPEG files: at q50,
# 32-px crops mean -0.07 -> +0.49 dB, worst -4.80 -> -2.65; 64-px mean +0.40 -> +0.64, worst
# -3.13 -> -2.15; at q90, 16-px crops -2.45 -> +0.13 with uniform areas kept as well).
MIN_CONTEXT = 128


def context_pad(n):
    """Pixels of mirrored context on each side of an image ``n`` pixels along one axis (an int,
    or a symbolic size while exporting: no Python branch on it)."""
    return torch.sym_max(0, (MIN_CONTEXT - n + 31) // 32 * 16)


def symmetric_index(n, pad, device=None) -> torch.Tensor:
    """Indices ``-pad .. n+pad-1`` mirrored into ``0 .. n-1`` (edge pixel repeated, as numpy's
    "symmetric" padding; any ``pad``, also beyond ``n``)."""
    nt = torch.scalar_tensor(n, dtype=torch.long, device=device)   # a tensor: the exporter takes no symbolic scalar here
    i = torch.remainder(torch.arange(-pad, n + pad, device=device), 2 * nt)
    return torch.where(i >= nt, 2 * nt - 1 - i, i)


def with_context(x: torch.Tensor):
    """``(N, C, H, W)`` ``x`` inside its mirrored context -> (padded, pad_y, pad_x)."""
    h, w = x.shape[-2], x.shape[-1]
    py, px = context_pad(h), context_pad(w)
    return x.index_select(-2, symmetric_index(h, py, x.device)).index_select(-1, symmetric_index(w, px, x.device)), \
        py, px


def default_tile(device) -> int:
    device = torch.device(device) if device is not None else torch.device("cpu")
    return DEFAULT_TILE_CUDA if device.type == "cuda" else DEFAULT_TILE_CPU


# A tile whose context (the overlap on every side) makes more than this many times the work of its
# own pixels is warned of, by the command and by restore(): --tile 8 --overlap 512 is 16641x, which
# looked like a hang.
TILE_WORK_WARNED = 16


def tile_work(tile: int, overlap: int) -> Tuple[float, int]:
    """(how many times the work of its own pixels a ``tile`` with ``overlap`` of context on every
    side costs -- 1 for no tiling --, a tile size to suggest instead: at least the CPU default, and
    4x the overlap)."""
    work = ((tile + 2 * overlap) / tile) ** 2 if tile > 0 else 1.0
    return work, max(DEFAULT_TILE_CPU, -(-4 * overlap // PAD_MULTIPLE) * PAD_MULTIPLE)


def check_tile_args(tile: int, overlap: int) -> None:
    import numbers
    for name, v in (("tile size", tile), ("tile overlap", overlap)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int (a multiple of {PAD_MULTIPLE}), got {type(v).__name__} {v!r}")
    if tile < 0 or tile % PAD_MULTIPLE:
        raise ValueError(f"tile size must be 0 (no tiling) or a positive multiple of {PAD_MULTIPLE}, got {tile}")
    if overlap < 0 or overlap % PAD_MULTIPLE:
        raise ValueError(f"tile overlap must be a non-negative multiple of {PAD_MULTIPLE}, got {overlap}")


def iter_tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[Tuple[Box, Box]]:
    """Yield ``(core, window)`` boxes covering an ``height x width`` image.

    Cores partition the image exactly; each window is its core grown by ``overlap`` on every
    side and clipped to the image.  ``tile <= 0`` or a tile larger than the image gives one
    window: the whole image.
    """
    check_tile_args(tile, overlap)
    if tile <= 0 or (tile >= height and tile >= width):
        yield (0, height, 0, width), (0, height, 0, width)
        return
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            yield ((y0, y1, x0, x1),
                   (max(0, y0 - overlap), min(height, y1 + overlap),
                    max(0, x0 - overlap), min(width, x1 + overlap)))


def _run(model, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, refused with a clear error where it is not an image of ``x``'s shape (a module
    that is not a restoring network: its output would otherwise be cut into tiles of the wrong size)
    or not finite."""
    y = model(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"the model gave {got} for an input of shape {tuple(x.shape)}: restoring needs a "
                         "network whose output is an image of its input's shape (N x 3 x H x W)")
    if not bool(torch.isfinite(y).all()):   # else clamped to black (NaN) or white and written as restored
        raise ValueError("the model's output holds NaN or infinite values (its weights overflow on this "
                         "input): nothing restored; check the weights file")
    return y


def self_ensemble(model, x: torch.Tensor) -> torch.Tensor:
    """Geometric self-ensemble: the mean of the model's outputs over the 8 flips / 90-degree
    rotations of ``x`` (each mapped back), 8x the compute.

    The input is first reflect-padded on the right and bottom to a multiple of 8, so every
    transformed copy keeps the codec's 8x8 block grid on the network's 8x8 reshuffle grid
    (flipping an image whose side is not a multiple of 8 would shift the JPEG blocks by
    ``side % 8`` pixels, a phase the models never see in training).
    """
    from ..nn.reference import pad_to_multiple

    x, (h, w) = pad_to_multiple(x)
    acc = None
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, (2, 3))
            if flip:
                t = t.flip(3)
            y = _run(model, t)
            if flip:
                y = y.flip(3)
            y = torch.rot90(y, -k, (2, 3)).float()
            acc = y if acc is None else acc.add_(y)
    return acc.div_(8)[..., :h, :w]


class SelfEnsemble(torch.nn.Module):
    """``model`` wrapped so that every call is :func:`self_ensemble` of it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    @property
    def input_dtype(self) -> torch.dtype:
        """The wrapped model's (:func:`_model_device_dtype`): a bf16 FastReshuffleNet takes float32."""
        return _model_device_dtype(self.model)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self_ensemble(self.model, x).to(x.dtype)


def _prepare(model: torch.nn.Module, tile: Optional[int], ensemble: bool):
    """-> (model, maybe wrapped in the self-ensemble; its device; its dtype; the tile size)."""
    dev, dt = _model_device_dtype(model)
    if ensemble:
        model = SelfEnsemble(model)
    return model, dev, dt, (default_tile(dev) if tile is None else tile)


def _model_device_dtype(model: torch.nn.Module):
    """The model's device and the dtype its input is fed in (``input_dtype`` where the model has
    one: a bfloat16 FastReshuffleNet takes float32 and adds its residual in float32)."""
    for p in model.parameters():
        return p.device, getattr(model, "input_dtype", p.dtype)
    return torch.device("cpu"), torch.float32


@torch.no_grad()
def restore_tensor(model: torch.nn.Module, x: torch.Tensor, *, tile: Optional[int] = None,
                   overlap: int = DEFAULT_OVERLAP, clamp: bool = True,
                   ensemble: bool = False) -> torch.Tensor:
    """Restore a float batch ``(N, 3, H, W)`` in [0, 1] tile by tile.

    ``x`` may live on any device; tiles are moved to the model's device and dtype, and the
    result is returned on ``x``'s device with ``x``'s dtype.  ``tile=None`` picks a default
    for the model's device; ``tile=0`` runs the whole image at once.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    if too_small(h, w):
        return x.clone()
    if context_pad(h) or context_pad(w):
        big, py, px = with_context(x)
        return restore_tensor(model, big, tile=tile, overlap=overlap, clamp=clamp,
                              ensemble=ensemble)[:, :, py:py + h, px:px + w].contiguous()
    model, dev, dt, tile = _prepare(model, tile, ensemble)
    out = torch.empty_like(x)
    keep = [grey_kept(x[i].permute(1, 2, 0).float().cpu().numpy(), 1.0) for i in range(n)]
    for (cy0, cy1, cx0, cx1), (wy0, wy1, wx0, wx1) in iter_tiles(h, w, tile, overlap):
        win = x[:, :, wy0:wy1, wx0:wx1].to(device=dev, dtype=dt)
        y = _run(model, win)
        y = y[:, :, cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0]
        if clamp:
            y = y.clamp(0, 1)
        y = y.to(device=out.device, dtype=out.dtype)
        for i, k in enumerate(keep):
            if k is not None and k[cy0:cy1, cx0:cx1].any():
                kept = colour_kept(y[i:i + 1], x[i:i + 1, :, cy0:cy1, cx0:cx1])
                kept = (kept.clamp(0, 1) if clamp else kept).to(y.dtype)
                y[i] = torch.where(torch.from_numpy(k[cy0:cy1, cx0:cx1]).to(y.device), kept[0], y[i])
        out[:, :, cy0:cy1, cx0:cx1] = y
    return out


@torch.no_grad()
def restore_pixels(model: torch.nn.Module, image: np.ndarray, *, tile: Optional[int] = None,
                   overlap: int = DEFAULT_OVERLAP, progress=None, ensemble: bool = False) -> np.ndarray:
    """Restore a uint8 or uint16 ``H x W x 3`` RGB array tile by tile; returns a new array of the
    same dtype (values scaled by 255 or 65535 to [0, 1] for the network, rounded back).

    Only one tile at a time is ever held as float, so peak memory is roughly the two integer
    images plus one tile's activations.  ``progress``, if given, is called with the number
    of pixels finished after each tile.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 H x W x 3 array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if too_small(h, w):
        if progress is not None:
            progress(h * w)
        return image.copy()
    py, px = context_pad(h), context_pad(w)
    if py or px:   # inside its mirrored context, its progress counted in the image's own pixels
        big = image[symmetric_index(h, py).numpy()][:, symmetric_index(w, px).numpy()]
        share = (h * w) / big.shape[0] / big.shape[1]
        told = [0]

        def tick(n):
            n = min(h * w - told[0], int(round(n * share)))
            told[0] += n
            progress(n)
        out = restore_pixels(model, big, tile=tile, overlap=overlap, ensemble=ensemble,
                             progress=tick if progress is not None else None)[py:py + h, px:px + w]
        if progress is not None:
            progress(h * w - told[0])
        return np.ascontiguousarray(out)
    model, dev, dt, tile = _prepare(model, tile, ensemble)
    top = 255.0 if image.dtype == np.uint8 else 65535.0
    tdtype = torch.uint8 if image.dtype == np.uint8 else torch.int32
    out = np.empty_like(image)
    keep = grey_kept(image, top)
    for (cy0, cy1, cx0, cx1), (wy0, wy1, wx0, wx1) in iter_tiles(h, w, tile, overlap):
        win = torch.from_numpy(np.array(image[wy0:wy1, wx0:wx1], dtype=np.int32 if top > 255 else np.uint8))
        win = win.to(dev).permute(2, 0, 1).unsqueeze(0).to(dt).div_(top)
        y = _run(model, win)[0, :, cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0].float()
        if keep is not None and keep[cy0:cy1, cx0:cx1].any():
            x = torch.from_numpy(image[cy0:cy1, cx0:cx1].astype(np.float32)).to(y.device).permute(2, 0, 1) / top
            y = torch.where(torch.from_numpy(keep[cy0:cy1, cx0:cx1]).to(y.device),
                            colour_kept(y[None].clamp(0, 1), x[None])[0], y)
        y = y.mul(top).round_().clamp_(0, top).to(tdtype)
        out[cy0:cy1, cx0:cx1] = y.permute(1, 2, 0).cpu().numpy()
        del win, y
        if progress is not None:
            progress((cy1 - cy0) * (cx1 - cx0))
    return out


# A grey picture stored as RGB (a black-and-white photo in a colour JPEG or WebP, a PNG of it) keeps
# its colour as it is: the networks put faint colour on it (|R-G|+|G-B| up to 5 levels in 42% of a
# grey WebP's pixels).  Grey: its channels within this many levels (of 255) of each other (libwebp's
# YUV to RGB of a grey file: 0.3% of the pixels off by 1-2 levels; a tone of a level or two).  The
# result is the mean of the network's channels plus each channel's own offset from the input's
# mean: exactly grey from exactly grey, a tone kept as it was.  A picture grey but for a little
# colour (a logo, a stamp, a signature: at least GREY_SHARE of its pixels grey) keeps it so
# wherever no colour is within GREY_AROUND pixels: a grey photo with a small red logo had taken
# colour up to 7.7 levels in 16% of its pixels, far from the logo (a probe, session 52).  Not
# less: dark photos coded at low quality decode grey in 96-98% of their pixels, and the network
# restores their colour there (8 CBSD432 photos at 5% exposure, JPEG q35: 0.95 cost 0.1 dB).
GREY_SPREAD = 2
GREY_SHARE = 0.99
GREY_AROUND = 8


def colour_kept(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The network's output ``y`` (N x 3 x h x w, clamped) with the colour of its input ``x``
    (the same pixels, float in [0, 1]): y's channel mean plus x's offsets from its own mean."""
    x = x.float()
    return y.float().mean(1, keepdim=True) + (x - x.mean(1, keepdim=True))


def grey_kept(image: np.ndarray, top: float) -> Optional[np.ndarray]:
    """H x W bool: where the H x W x 3 ``image`` (values 0..``top``: uint8, uint16 or float) keeps
    its colour as it is (see above); None where nowhere -- a colour picture, whose first strips
    of rows already hold more than 1 - GREY_SHARE of its pixels in colour, says so early."""
    h, w = image.shape[:2]
    bound = (GREY_SPREAD + 0.5) / 255.0 * top
    allowed, count, rows = (1.0 - GREY_SHARE) * h * w, 0, []
    for y in range(0, h, 64):     # strips of rows: little memory
        r, g, b = image[y:y + 64, :, 0], image[y:y + 64, :, 1], image[y:y + 64, :, 2]
        colour = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) > bound   # (>= 0: no wrap)
        count += int(colour.sum())
        if count > allowed:
            return None
        rows.append(colour)
    if count == 0:
        return np.ones((h, w), bool)
    from .jpeg_history import box_sum
    return box_sum(np.concatenate(rows), GREY_AROUND, np.int32) == 0


def restore_uint8(model: torch.nn.Module, image: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`restore_pixels` for a uint8 ``H x W x 3`` array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H x W x 3 array, got {image.dtype} {image.shape}")
    return restore_pixels(model, image, **kwargs)


# Colour under alpha 0 is not part of the picture, but the network reads it: an editor's leftover
# green under a transparent corner of a grey q15 JPEG coloured the visible pixels within 8 px of it
# by up to 57 levels (-7.7 dB there; tests/inference/test_api_edges.py).  Restoring sees a smooth
# fill from the visible pixels there instead (push-pull: means over 2x2, 4x4, ... cells of the
# visible ones, brought back up bilinearly), and the hidden pixels are given back as they were.
def hidden_pixels(alpha: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """H x W bool: where ``alpha`` (H x W or H x W x 1, any dtype) is 0 -- None where it is None
    or nothing is hidden."""
    if alpha is None:
        return None
    hidden = np.asarray(alpha).reshape(alpha.shape[0], alpha.shape[1]) <= 0
    return hidden if hidden.any() else None


FILL_MARGIN = 64     # pixels of the picture around the hidden ones that the fill is made from


def fill_hidden(rgb: np.ndarray, hidden: Optional[np.ndarray]) -> np.ndarray:
    """``rgb`` (H x W x 3, uint8 / uint16 / float) with its ``hidden`` pixels replaced by a smooth
    fill from the others (a new array of its dtype; ``rgb`` itself where ``hidden`` is None, or
    hides everything: nothing to fill from).  Worked in float32 on the box around the hidden
    pixels (FILL_MARGIN more on each side), so one transparent pixel costs little."""
    if hidden is None or hidden.all():
        return rgb
    import torch.nn.functional as F
    rows, cols = np.flatnonzero(hidden.any(axis=1)), np.flatnonzero(hidden.any(axis=0))
    box = (slice(max(0, rows[0] - FILL_MARGIN), rows[-1] + 1 + FILL_MARGIN),
           slice(max(0, cols[0] - FILL_MARGIN), cols[-1] + 1 + FILL_MARGIN))
    if hidden[box].all():   # (the margin cut off by the picture's edges, nothing visible in it)
        box = (slice(None), slice(None))
    hid = hidden[box]
    seen = torch.from_numpy(~hid).to(torch.float32)[None, None]
    c = torch.from_numpy(np.ascontiguousarray(rgb[box], dtype=np.float32)).permute(2, 0, 1)[None] * seen
    levels = [(c, seen)]
    while min(c.shape[-2:]) > 1 and not bool((seen > 0).all()):
        c, seen = F.avg_pool2d(c, 2, ceil_mode=True), F.avg_pool2d(seen, 2, ceil_mode=True)
        levels.append((c, seen))
    c, seen = levels[-1]
    fill = torch.where(seen > 0, c / seen.clamp_min(1e-30), c.sum((2, 3), keepdim=True) / seen.sum())  # (a 1-px side)
    for c, seen in reversed(levels[:-1]):
        up = F.interpolate(fill, size=c.shape[-2:], mode="bilinear", align_corners=False)
        fill = torch.where(seen > 0, c / seen.clamp_min(1e-30), up)
    fill = fill[0].permute(1, 2, 0).numpy()
    if np.issubdtype(rgb.dtype, np.integer):
        fill = np.round(fill)
    out = rgb.copy()
    out[box][hid] = fill[hid].astype(rgb.dtype)
    return out
