"""Block-buffer plan of ``FastReshuffleNet``'s inference: one preallocated buffer per dense block,
each layer writing its new channels into the next slice, and allocations shared between blocks
that are never alive together.

On CPU the buffers are channels_last (faster GEMMs on the channel prefix) and blocks 0 and 2
share one allocation; for batch 1 all three share one (block 1 at its end, reshuffled into
block 2's prefix row by row: :func:`reshuffle_up_rows`).  Elsewhere (CUDA / Triton) they are
NCHW; for batch 1 without the fused reshuffle all three share one allocation the size of the
last block: block 0 occupies the start, block 1 the second half.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from ..ops.reshuffle import reshuffle_into
from .config import DOWN_STEPS, ReshuffleNetConfig

__all__ = ["block_shapes", "block_buffers_plan", "separate_block_buffers", "starts_inside",
           "reshuffle_up_rows"]


def block_shapes(config: ReshuffleNetConfig, b: int, h: int, w: int) -> List[Tuple[int, int, int, int]]:
    shapes = []
    s = 2 ** DOWN_STEPS
    for i, (_, c_out) in enumerate(config.block_channels()):
        f = s // 2 ** i
        shapes.append((b, c_out, h // f, w // f))
    return shapes


def block_buffers_plan(config: ReshuffleNetConfig, xp: torch.Tensor, fused_reshuffle: bool) -> Tuple[torch.Tensor, ...]:
    """The three block buffers for the padded input ``xp`` (see the module docs)."""
    shapes = block_shapes(config, xp.shape[0], xp.shape[2], xp.shape[3])
    numel = [s[0] * s[1] * s[2] * s[3] for s in shapes]
    if xp.device.type == "cpu" and not fused_reshuffle:
        # CPU: channels_last buffers.  A channel prefix is then a [H*W, M] row-major matrix
        # (row stride C), on which the 1x1 GEMMs run 1.2-1.6x faster than on the column-major
        # prefix of an NCHW buffer, and the 3x3 conv (channels_last) writes its slice without
        # a layout change (measured, paper preset 768x512, 1 thread: 3.19 s -> 2.68 s).
        def nhwc(flat, shape):
            b, c, h, w = shape
            return flat.view(b, h, w, c).permute(0, 3, 1, 2)

        if shapes[0][0] == 1 and numel[0] + numel[1] <= numel[2]:
            # Batch 1: one allocation of block 2's size.  Block 0 at its start, block 1 at
            # its end; block 1 is reshuffled into block 2's prefix row by row from the top
            # (reshuffle_up_rows), which only overwrites block-1 rows already consumed.
            a = torch.empty(numel[2], dtype=xp.dtype, device=xp.device)
            return (nhwc(a[:numel[0]], shapes[0]), nhwc(a[numel[2] - numel[1]:], shapes[1]),
                    nhwc(a, shapes[2]))
        # Otherwise blocks 0 and 2 (never alive together) share an allocation.
        a = torch.empty(max(numel[0], numel[2]), dtype=xp.dtype, device=xp.device)
        b1 = torch.empty(shapes[1], dtype=xp.dtype, device=xp.device, memory_format=torch.channels_last)
        return nhwc(a[:numel[0]], shapes[0]), b1, nhwc(a[:numel[2]], shapes[2])
    c2_in = config.block_channels()[2][0]
    b, _, h2, w2 = shapes[2]
    prefix2 = b * c2_in * h2 * w2
    # Batch 1: block 2's prefix is the first `prefix2` elements of its buffer.  Block 0 fits
    # before it and block 1 after it (dead once reshuffled into block 2's prefix) -- unless the
    # reshuffle is fused into the first layer, which writes block 2's channels while reading
    # block 1 (CUDA), or the last block does not double its channels.
    if (b == 1 and not fused_reshuffle and numel[0] <= prefix2
            and prefix2 + numel[1] <= numel[2]):
        arena = torch.empty(numel[2], dtype=xp.dtype, device=xp.device)
        return (arena[:numel[0]].view(shapes[0]),
                arena[prefix2:prefix2 + numel[1]].view(shapes[1]),
                arena.view(shapes[2]))
    # Otherwise blocks 0 and 2 (never alive together) share one allocation.
    a = torch.empty(max(numel[0], numel[2]), dtype=xp.dtype, device=xp.device)
    b1 = torch.empty(shapes[1], dtype=xp.dtype, device=xp.device)
    return a[:numel[0]].view(shapes[0]), b1, a[:numel[2]].view(shapes[2])


def separate_block_buffers(config: ReshuffleNetConfig, xp: torch.Tensor,
                           fused_reshuffle: bool) -> Tuple[torch.Tensor, ...]:
    """The three block buffers, each its own allocation (same layouts as the plan), for traced
    forwards (``torch.compile``, ``torch.export``): no shared memory, so nothing needs the
    storage pointers that tracing cannot see; the compiler plans the memory itself."""
    shapes = block_shapes(config, xp.shape[0], xp.shape[2], xp.shape[3])
    fmt = (torch.channels_last if xp.device.type == "cpu" and not fused_reshuffle
           else torch.contiguous_format)
    return tuple(torch.empty(s, dtype=xp.dtype, device=xp.device, memory_format=fmt) for s in shapes)


def starts_inside(src: torch.Tensor, buf: torch.Tensor) -> bool:
    """True when ``src`` starts inside the memory span of ``buf`` (same allocation)."""
    if src.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr():
        return False
    span = sum((n - 1) * st for n, st in zip(buf.shape, buf.stride())) + 1
    return buf.storage_offset() <= src.storage_offset() < buf.storage_offset() + span


def reshuffle_up_rows(src: torch.Tensor, dst: torch.Tensor, clone_rows: int = 32) -> None:
    """``reshuffle_up(src, 2, out=dst)`` where ``src`` (batch 1, channels_last) lies at the
    end of the allocation whose start ``dst`` (channels_last, twice the rows) begins.

    Rows go top to bottom in chunks: writing output rows up to 2 r1 only touches memory below
    the start of input row r1 (``src`` sits at the end: the gap between the two shrinks by
    2 row_dst - row_src >= 0 per input row and reaches 0 at the last row).  A chunk of input
    rows [r0, r1) whose output ends before the start of input row r0 is reshuffled straight
    from the buffer; the largest such chunk is taken (early chunks are long, the gap is wide
    there); where not even one row fits, up to ``clone_rows`` rows are copied out first (input
    rows below r1 are all consumed by then).  One op call per chunk instead of per row (the
    ``small`` and ``paper`` presets at 1920x1080: 10 calls, halving chunks, no clone).
    """
    if clone_rows < 1:
        raise ValueError(f"clone_rows must be >= 1, got {clone_rows}")
    rows = src.shape[2]
    row_dst = 2 * dst.stride(2)              # elements per pair of output rows (all channels)
    row_src = src.stride(2)
    gap = src.storage_offset() - dst.storage_offset()
    r0 = 0
    while r0 < rows:
        r1 = min(rows, (gap + r0 * row_src) // row_dst)   # output of rows < r1 ends before input row r0
        if r1 > r0:
            chunk = src[:, :, r0:r1]
        else:
            r1 = min(rows, r0 + clone_rows)
            chunk = src[:, :, r0:r1].clone()
        reshuffle_into(chunk, 2, dst[:, :, 2 * r0:2 * r1], down=False)
        r0 = r1
