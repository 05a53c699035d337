"""A whole dense block on one preallocated buffer, differentiable (memory-efficient DenseNet):
the forward runs the in-place dense-layer op layer after layer, the backward recomputes each
bottleneck intermediate instead of saving it.  This is what ``FastReshuffleNet`` trains with."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ._dense_torch import layer_backward
from ._checks import refuse_forward_ad
from .dense import _NO_JVP, _check_feature, _check_weights, _inplace_op

__all__ = ["dense_block"]


class _DenseBlockFn(torch.autograd.Function):
    """Whole dense block on one buffer; saves only the block output (memory-efficient DenseNet)."""

    @staticmethod
    def forward(ctx, x0, c_out, *params):
        b, c0, h, w = x0.shape
        # CPU: channels-last, so the layers run on the extension's kernel / the row-major prefix
        # GEMM as in FastReshuffleNet's inference (small preset, batch 16 of 96x96: a training
        # step 0.58 -> 0.46 s at 1 thread)
        fmt = torch.channels_last if x0.device.type == "cpu" else torch.contiguous_format
        buf = torch.empty((b, c_out, h, w), dtype=x0.dtype, device=x0.device, memory_format=fmt)
        buf[:, :c0].copy_(x0)
        c = c0
        for j in range(0, len(params), 4):
            w1, b1, w3, b3 = params[j:j + 4]
            _inplace_op(buf, c, w1, b1, w3, b3)
            c += w3.shape[0]
        ctx.c0 = c0
        ctx.save_for_backward(buf, *params)
        return buf

    @staticmethod
    def backward(ctx, g_out):
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():   # create_graph=True
            # (once_differentiable would let torch.autograd.grad say the inputs "appear to not
            # have been used in the graph", which suggests allow_unused=True: None for an answer)
            raise RuntimeError("dense_block (FastReshuffleNet's training forward) is differentiable once: "
                               "for second derivatives (a gradient penalty, create_graph=True) use "
                               "fastreshuffle.ReshuffleNet, which loads the same state_dict")
        return _DenseBlockFn._backward(ctx, g_out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def _backward(ctx, g_out):
        buf, *params = ctx.saved_tensors
        g = g_out.contiguous().clone()
        grads: List[Optional[torch.Tensor]] = [None] * len(params)
        c = buf.shape[1]
        for j in reversed(range(0, len(params), 4)):
            w1, b1, w3, b3 = params[j:j + 4]
            n = w3.shape[0]
            c -= n
            gx, gw1, gb1, gw3, gb3 = layer_backward(buf[:, :c], w1, b1, w3, g[:, c:c + n])
            g[:, :c] += gx
            grads[j:j + 4] = [gw1, gb1, gw3, gb3]
        return (g[:, :ctx.c0], None, *grads)


def dense_block(x0: torch.Tensor, params: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
    """Differentiable dense block: ``x0`` followed by the outputs of each ``(w1, b1, w3, b3)``
    layer, built in one buffer (no ``torch.cat``); the backward recomputes the intermediates."""
    _check_feature("dense_block", "x0", x0)
    c = x0.shape[1]
    flat = []
    for (w1, b1, w3, b3) in params:
        _check_weights("dense_block", x0, "x0", c, w1, b1, w3, b3)
        c += w3.shape[0]
        flat += [w1, b1, w3, b3]
    refuse_forward_ad("dense_block", (x0, *flat), _NO_JVP)
    return _DenseBlockFn.apply(x0, c, *flat)
