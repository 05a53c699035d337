"""Reshuffle ops (paper Eq. 3 / Eq. 4) as torch custom ops backed by ``fastreshuffle._C``.

``reshuffle_down(x, s)`` equals ``torch.nn.functional.pixel_unshuffle(x, s)`` and
``reshuffle_up(x, s)`` equals ``pixel_shuffle(x, s)``, bit for bit, for every dtype and memory
format; the result keeps the input's memory format.  Both take ``out=`` to write into an
existing tensor or view (e.g. ``buf[:, :C]``), which the fast network uses for zero-copy
concatenation.  The ops are reachable as ``torch.ops.fastreshuffle.reshuffle_down`` etc.,
differentiable (the gradient of one is the other applied to the gradient), and traceable by
``torch.compile`` (fake kernels registered below).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._extension import built_with_cuda, ops as _ops

__all__ = ["reshuffle_down", "reshuffle_up", "built_with_cuda"]


# --------------------------------------------------------------------------- checks
def _check(x, scale, op: str):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: expected a torch.Tensor, got {type(x).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, int):
        try:
            import operator
            scale = operator.index(scale)
        except TypeError:
            raise TypeError(f"{op}: scale must be an int, got {type(scale).__name__}") from None
    if x.dim() != 4:
        raise ValueError(f"{op}: expected a 4-D (N, C, H, W) tensor, got a {x.dim()}-D tensor "
                         f"of shape {list(x.shape)}")
    if scale < 1:
        raise ValueError(f"{op}: scale must be >= 1, got {scale}")
    return int(scale)


def _out_shape(x: torch.Tensor, s: int, down: bool):
    n, c, h, w = x.shape
    op = "reshuffle_down" if down else "reshuffle_up"
    if down:
        if h % s or w % s:
            raise ValueError(f"{op}: height {h} and width {w} must both be divisible by scale {s} "
                             f"(input shape {list(x.shape)})")
        return (n, c * s * s, h // s, w // s)
    if c % (s * s):
        raise ValueError(f"{op}: channels {c} must be divisible by scale^2 = {s * s} "
                         f"(input shape {list(x.shape)})")
    return (n, c // (s * s), h * s, w * s)


def _check_out(x: torch.Tensor, out, s: int, down: bool):
    op = "reshuffle_down" if down else "reshuffle_up"
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{op}: out must be a torch.Tensor, got {type(out).__name__}")
    expect = _out_shape(x, s, down)
    if tuple(out.shape) != expect:
        raise ValueError(f"{op}: out has shape {list(out.shape)} but input {list(x.shape)} with "
                         f"scale {s} gives {list(expect)}")
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out has dtype {out.dtype} but input has dtype {x.dtype}")
    if out.device != x.device:
        raise ValueError(f"{op}: out is on {out.device} but input is on {x.device}")


# ------------------------------------------------------------------ public functions
def reshuffle_down(x: torch.Tensor, scale: int, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paper Eq. 3: ``Y[n, c*s*s + a*s + b, i, j] = X[n, c, i*s + a, j*s + b]``."""
    scale = _check(x, scale, "reshuffle_down")
    if out is None:
        _out_shape(x, scale, True)
        return _ops.reshuffle_down(x, scale)
    _check_out(x, out, scale, True)
    _ops.reshuffle_down_out(x, scale, out)
    return out


def reshuffle_up(x: torch.Tensor, scale: int, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paper Eq. 4: ``Y[n, c, i*s + a, j*s + b] = X[n, c*s*s + a*s + b, i, j]``."""
    scale = _check(x, scale, "reshuffle_up")
    if out is None:
        _out_shape(x, scale, False)
        return _ops.reshuffle_up(x, scale)
    _check_out(x, out, scale, False)
    _ops.reshuffle_up_out(x, scale, out)
    return out


# ------------------------------------------------------------- fake (meta) kernels
def _fake_result(x: torch.Tensor, s: int, down: bool) -> torch.Tensor:
    from torch._prims_common import suggest_memory_format

    shape = _out_shape(x, s, down)
    return torch.empty(shape, dtype=x.dtype, device=x.device,
                       memory_format=suggest_memory_format(x))


@torch.library.register_fake("fastreshuffle::reshuffle_down")
def _reshuffle_down_fake(x, scale):
    _check(x, scale, "reshuffle_down")
    return _fake_result(x, scale, True)


@torch.library.register_fake("fastreshuffle::reshuffle_up")
def _reshuffle_up_fake(x, scale):
    _check(x, scale, "reshuffle_up")
    return _fake_result(x, scale, False)


@torch.library.register_fake("fastreshuffle::reshuffle_down_out")
def _reshuffle_down_out_fake(x, scale, out):
    _check(x, scale, "reshuffle_down")
    _check_out(x, out, scale, True)


@torch.library.register_fake("fastreshuffle::reshuffle_up_out")
def _reshuffle_up_out_fake(x, scale, out):
    _check(x, scale, "reshuffle_up")
    _check_out(x, out, scale, False)


# ------------------------------------------------------------------------ autograd
def _setup_context(ctx, inputs, output):
    ctx.scale = inputs[1]


def _down_backward(ctx, grad):
    return _ops.reshuffle_up(grad, ctx.scale), None


def _up_backward(ctx, grad):
    return _ops.reshuffle_down(grad, ctx.scale), None


torch.library.register_autograd("fastreshuffle::reshuffle_down", _down_backward, setup_context=_setup_context)
torch.library.register_autograd("fastreshuffle::reshuffle_up", _up_backward, setup_context=_setup_context)
