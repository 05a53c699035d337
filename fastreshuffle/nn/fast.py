"""``FastReshuffleNet``: the reference network running on the fused dense-layer ops.

Same constructor, parameters and ``state_dict`` keys as :class:`~fastreshuffle.nn.reference.ReshuffleNet`
(weights load either way); only ``forward`` differs.

Inference (grad disabled or nothing requires grad):

* every dense block works in **one preallocated buffer**; each layer writes its ``N`` new
  channels in place (``dense_layer_``), so there is no ``torch.cat`` and no copy of the growing
  feature map;
* the third reshuffle-down writes straight into block 0's buffer prefix, and the reshuffle-up
  between blocks writes straight into the next block's prefix (fused into the first dense layer
  of the block on CUDA, ``dense_layer_reshuffle_``);
* the tail 3x3 convolution is applied at half resolution with an equivalent sub-pixel kernel
  (``pixel_shuffle(conv(Z, W')) == conv(pixel_shuffle(Z), W)``), so the full-resolution
  reshuffled copy of the last block is never materialised;
* the buffers are cached and reused while input shape, dtype and device repeat (eager only:
  under ``torch.compile`` / ``torch.export`` tracing each call allocates its three buffers
  separately -- :func:`~fastreshuffle.nn.buffers.separate_block_buffers` -- with no cache and
  no storage-pointer checks, which tracing cannot follow; the compiler plans that memory).  On CPU they
  are channels_last (faster GEMMs on the channel prefix) and blocks 0 and 2 share one
  allocation.  Elsewhere (CUDA / Triton) they are NCHW; for batch 1 without the fused reshuffle
  all three share one allocation the size of the last block: block 0 occupies the start,
  block 1 the second half (dead before the last block writes its new channels there).

Training (grad enabled and the input or a parameter requires grad) uses
:func:`fastreshuffle.ops.dense_block`, which builds each block in one buffer as well and
recomputes the bottleneck intermediates in its backward.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F


from ..ops.block import dense_block
from ..ops.dense import dense_layer_, dense_layer_reshuffle_, traced as _tracing, use_triton
from ..ops.reshuffle import reshuffle_down, reshuffle_up
from .buffers import block_buffers_plan, reshuffle_up_rows, separate_block_buffers, starts_inside
from .config import DOWN_STEPS, ReshuffleNetConfig
from .reference import ReshuffleNet, check_image_batch, pad_to_multiple

__all__ = ["FastReshuffleNet", "subpixel_tail_weight"]


def subpixel_tail_weight(weight: torch.Tensor, bias: Optional[torch.Tensor]):
    """Kernel ``W'`` with ``pixel_shuffle(conv3x3(Z, W'), 2) == conv3x3(pixel_shuffle(Z, 2), W)``.

    ``weight``: ``[O, C, 3, 3]`` (padding 1).  Returns ``[4*O, 4*C, 3, 3]`` and a ``[4*O]`` bias.
    Output phase ``(a, b)`` at tap ``(dy, dx)`` reads the full-resolution row ``2i + a + dy``,
    i.e. half-resolution row ``i + floor((a + dy)/2)`` of input phase ``(a + dy) mod 2``.
    """
    o, c = weight.shape[:2]
    w = weight.new_zeros((o, 4, c, 4, 3, 3))
    for a in range(2):
        for b in range(2):
            for ky in range(3):
                for kx in range(3):
                    ry, rx = a + ky - 1, b + kx - 1
                    p, q = ry % 2, rx % 2
                    w[:, 2 * a + b, :, 2 * p + q, ry // 2 + 1, rx // 2 + 1] = weight[:, :, ky, kx]
    w = w.reshape(4 * o, 4 * c, 3, 3)
    bb = None if bias is None else bias.repeat_interleave(4)
    return w, bb


def _autocast_dtype(t: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast runs convolutions on ``t`` in (``torch.autocast`` active for its device
    and ``t`` a 16/32-bit float of another dtype), else None."""
    dev = t.device.type
    if not torch.is_autocast_enabled(dev):
        return None
    dtype = torch.get_autocast_dtype(dev)
    return dtype if t.dtype in (torch.float32, torch.float16, torch.bfloat16) and t.dtype != dtype else None


def _dense_block_autocast(y: torch.Tensor, params, dtype: torch.dtype) -> torch.Tensor:
    """``dense_block`` under autocast: autocast does not reach into the fused block (a custom
    autograd function over custom ops), so cast as autocast does for a convolution -- the input
    and the (float32 master) weights to ``dtype``; the gradients flow back through the casts
    into the float32 parameters -- and run the block in ``dtype`` with autocast off inside."""
    with torch.autocast(y.device.type, enabled=False):
        return dense_block(y.to(dtype), [tuple(p.to(dtype) for p in ps) for ps in params])


class FastReshuffleNet(ReshuffleNet):
    """:class:`ReshuffleNet` with a forward on the fused dense-layer ops (see module docs)."""

    def __init__(self, config: Optional[ReshuffleNetConfig] = None):
        super().__init__(config)
        self._buf_key = None
        self._buf_cache: Optional[Tuple[torch.Tensor, ...]] = None

    # --------------------------------------------------------------- buffers
    def _block_buffers(self, xp: torch.Tensor, fused_reshuffle: bool) -> List[torch.Tensor]:
        b, _, h, w = xp.shape
        key = (b, h, w, xp.dtype, xp.device, fused_reshuffle)
        if self._buf_key != key:
            self._buf_cache = None                      # free the old buffers first
            self._buf_cache = block_buffers_plan(self.config, xp, fused_reshuffle)
            self._buf_key = key
        return list(self._buf_cache)

    def clear_cache(self) -> None:
        """Release the cached block buffers."""
        self._buf_key = None
        self._buf_cache = None

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()          # .to()/.half()/.cuda(): the cached buffers are stale
        return super()._apply(fn, *args, **kwargs)

    # --------------------------------------------------------------- forward
    def _needs_autograd(self, x: torch.Tensor) -> bool:
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    @staticmethod
    def _layer_params(layer):
        return (layer.conv1.weight, layer.conv1.bias, layer.conv2.weight, layer.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        if self._needs_autograd(x):
            return self._forward_autograd(x)
        return self._forward_inference(x)

    def _forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        xp, (h, w) = pad_to_multiple(x)
        y = xp
        for _ in range(DOWN_STEPS):
            y = reshuffle_down(y, 2)
        cast = _autocast_dtype(y)
        for block in self.blocks:
            if len(block.layers):
                params = [self._layer_params(layer) for layer in block.layers]
                if cast is None:
                    y = dense_block(y, params)
                else:
                    y = _dense_block_autocast(y, params, cast)
            y = reshuffle_up(y, 2)
        y = self.tail(y)
        if self.config.residual:
            y = y + xp
        return y[..., :h, :w]

    @staticmethod
    def _strip_conv(z: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
                    strip_bytes: int = 16 << 20) -> torch.Tensor:
        """3x3 conv (padding 1) of ``z`` in horizontal strips, so that backends that reorder
        their input (oneDNN on CPU) copy one strip at a time instead of the whole buffer."""
        n, c, h, wd = z.shape
        rows = max(1, strip_bytes // max(1, n * c * wd * z.element_size()))
        if z.device.type != "cpu" or rows >= h:
            return F.conv2d(z, w, b, padding=1)
        out = torch.empty((n, w.shape[0], h, wd), dtype=z.dtype, device=z.device)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            lo, hi = max(0, r0 - 1), min(h, r1 + 1)
            part = F.conv2d(z[:, :, lo:hi], w, b, padding=1)      # rows lo..hi-1; keep r0..r1-1
            out[:, :, r0:r1].copy_(part[:, :, r0 - lo:r1 - lo])
        return out

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        xp, (h, w) = pad_to_multiple(x)
        if xp.dtype != self.tail.weight.dtype:
            raise TypeError(f"input dtype {xp.dtype} does not match the model dtype {self.tail.weight.dtype}")
        fused = use_triton(xp)
        traced = _tracing(xp)
        if traced and not fused:
            # torch.compile / torch.export on CPU: the functional dense layers (same weights, same
            # outputs within float rounding), which the compiler traces like any torch op; the
            # in-place ops' preallocated buffers are an eager optimisation
            return self._forward_autograd(x)
        bufs = list(separate_block_buffers(self.config, xp, fused)) if traced else self._block_buffers(xp, fused)
        channels = self.config.block_channels()

        y = xp
        for _ in range(DOWN_STEPS - 1):
            y = reshuffle_down(y, 2)
        reshuffle_down(y, 2, out=bufs[0][:, :channels[0][0]])
        del y

        for i, block in enumerate(self.blocks):
            buf = bufs[i]
            c = channels[i][0]
            layers = list(block.layers)
            if i > 0:
                src = bufs[i - 1]
                if layers and fused:
                    dense_layer_reshuffle_(buf, src, *self._layer_params(layers[0]))
                    c += layers[0].growth
                    layers = layers[1:]
                elif not traced and starts_inside(src, buf):
                    reshuffle_up_rows(src, buf[:, :c])
                else:
                    reshuffle_up(src, 2, out=buf[:, :c])
            for layer in layers:
                dense_layer_(buf, c, *self._layer_params(layer))
                c += layer.growth

        wt, bt = subpixel_tail_weight(self.tail.weight, self.tail.bias)
        out = F.pixel_shuffle(self._strip_conv(bufs[-1], wt, bt), 2)
        if self.config.residual:
            out += xp
        return out[..., :h, :w]
