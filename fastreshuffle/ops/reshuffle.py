"""Reshuffle ops (paper Eq. 3 / Eq. 4) as torch custom ops backed by ``fastreshuffle._C``.

``reshuffle_down(x, s)`` equals ``torch.nn.functional.pixel_unshuffle(x, s)`` and
``reshuffle_up(x, s)`` equals ``pixel_shuffle(x, s)``, bit for bit, for every dtype and memory
format, on ``(*, C, H, W)`` input as torch defines them: any number of leading batch dims,
including none (an unbatched 3-D image).  The registered ops are 4-D; the wrappers here flatten
the leading dims into one with a view (no copy) when the strides allow, else the input is copied
by ``reshape`` and an ``out=`` that cannot be viewed as 4-D is written through a temporary.  A 4-D
result keeps the input's memory format.  Both take ``out=`` to write into an
existing tensor or view (e.g. ``buf[:, :C]``), which the fast network uses for zero-copy
concatenation.  The ops are reachable as ``torch.ops.fastreshuffle.reshuffle_down`` etc.,
differentiable (the gradient of one is the other applied to the gradient), and traceable by
``torch.compile`` (fake kernels registered below).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._checks import refuse_forward_ad
from ._extension import built_with_cuda, ops as _ops

__all__ = ["reshuffle_down", "reshuffle_up", "built_with_cuda"]


# --------------------------------------------------------------------------- checks
MAX_SCALE = 1 << 20   # the kernels' limit (csrc/reshuffle/reshuffle.h): s*s channels must fit


def _check(x, scale, op: str, four_d: bool = True):
    """Type/scale/rank checks.  ``four_d``: the registered ops (4-D only); otherwise the public
    wrappers, which take ``(*, C, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: expected a torch.Tensor, got {type(x).__name__}")
    if isinstance(scale, bool):   # operator.index(True) is 1: refused as torch refuses it
        raise TypeError(f"{op}: scale must be an int, not bool")
    if not isinstance(scale, int):
        try:
            import operator
            scale = operator.index(scale)
        except TypeError:
            raise TypeError(f"{op}: scale must be an int, got {type(scale).__name__}") from None
    if x.is_quantized:
        raise TypeError(f"{op}: quantized tensors are not supported (torch deprecates them); "
                        "dequantize first (x.dequantize())")
    if x.layout != torch.strided:
        raise TypeError(f"{op}: {str(x.layout).replace('torch.', '')} tensors are not supported; pass a dense "
                        "(strided) tensor (x.to_dense())")
    if four_d and x.dim() != 4:
        raise ValueError(f"{op}: expected a 4-D (N, C, H, W) tensor, got a {x.dim()}-D tensor "
                         f"of shape {list(x.shape)}")
    if not four_d and x.dim() < 3:
        raise ValueError(f"{op}: expected a (*, C, H, W) tensor with at least 3 dimensions, got a "
                         f"{x.dim()}-D tensor of shape {list(x.shape)}")
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"{op}: scale must be 1..{MAX_SCALE}, got {scale}")
    if not four_d:
        refuse_forward_ad(op, (x,), f"use torch.nn.functional.pixel_{'un' if op.endswith('down') else ''}shuffle there")
    return int(scale)


def _out_shape(x: torch.Tensor, s: int, down: bool):
    """Result shape for ``(*, C, H, W)`` input ``x``: ``(*, C*s*s, H/s, W/s)`` or ``(*, C/(s*s), H*s, W*s)``."""
    lead = tuple(x.shape[:-3])
    c, h, w = x.shape[-3:]
    op = "reshuffle_down" if down else "reshuffle_up"
    if down:
        if h % s or w % s:
            raise ValueError(f"{op}: height {h} and width {w} must both be divisible by scale {s} "
                             f"(input shape {list(x.shape)})")
        return (*lead, c * s * s, h // s, w // s)
    if c % (s * s):
        raise ValueError(f"{op}: channels {c} must be divisible by scale^2 = {s * s} "
                         f"(input shape {list(x.shape)})")
    return (*lead, c // (s * s), h * s, w * s)


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
    if not torch.compiler.is_compiling() and (out.is_conj() or out.is_neg()):   # torch's conj/neg
        # fallback would run before our kernel's own check, and fail inside (dynamo traces no is_conj)
        raise ValueError(f"{op}: out must not be a lazily conjugated or negated view; pass a plain tensor")
    if torch.is_grad_enabled() and (x.requires_grad or out.requires_grad):
        raise RuntimeError(f"{op}(): functions with out=... arguments don't support automatic "
                           "differentiation, but one of the arguments requires grad")


# ------------------------------------------------------------ (*, C, H, W) <-> 4-D
def _leading_mergeable(t: torch.Tensor) -> bool:
    """Whether ``t``'s leading dims (all but the last three) merge into one by a view.

    They do when, ignoring size-1 dims, each leading dim's stride is the next one's stride times
    its size (the condition of ``Tensor.view``); an empty tensor always views."""
    if t.dim() <= 4 or t.numel() == 0:
        return True
    dims = [(n, st) for n, st in zip(t.shape[:-3], t.stride()[:-3]) if n != 1]
    return all(dims[i][1] == dims[i + 1][1] * dims[i + 1][0] for i in range(len(dims) - 1))


def _as_4d(t: torch.Tensor, copy_ok: bool) -> Optional[torch.Tensor]:
    """``t`` (``(*, C, H, W)``) as ``(prod(*), C, H, W)``: a view when the leading dims merge,
    else a copy (``copy_ok``) or ``None``."""
    if t.dim() == 4:
        return t
    c, h, w = t.shape[-3:]
    n = 1
    for d in t.shape[:-3]:
        n = n * d
    if t.dim() == 3 or _leading_mergeable(t):
        return t.view(n, c, h, w)
    return t.reshape(n, c, h, w) if copy_ok else None


def _may_overlap_undetected(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether ``out`` may share memory with ``x`` where the kernel's own check cannot tell: it
    rejects overlap between dense tensors exactly, but passes non-dense ones ("too hard" for
    torch), and writing then reads what it has already written.  Conservative (a disjoint
    strided slice of the same buffer also counts): those go through a temporary, correctly.
    Under torch.compile, where memory cannot be inspected, every ``out=`` may."""
    if torch.compiler.is_compiling():
        return True
    if x.device != out.device or out.numel() == 0 or x.numel() == 0:
        return False
    if x.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():
        return False
    return not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)) or \
        not (out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last))


def _apply(x: torch.Tensor, scale: int, out: Optional[torch.Tensor], down: bool,
           guard_overlap: bool = True) -> torch.Tensor:
    shape = _out_shape(x, scale, down)
    x4 = _as_4d(x, copy_ok=True)
    if out is None:
        y4 = (_ops.reshuffle_down if down else _ops.reshuffle_up)(x4, scale)
        return y4 if x.dim() == 4 else y4.view(shape)
    _check_out(x, out, scale, down)
    out_op = _ops.reshuffle_down_out if down else _ops.reshuffle_up_out
    o4 = _as_4d(out, copy_ok=False)
    if o4 is not None and not (guard_overlap and _may_overlap_undetected(x4, o4)):
        out_op(x4, scale, o4)
    else:   # out's leading dims do not merge (e.g. a strided batch slice), or out may share memory
            # with the input in a way the kernel's check cannot rule out: via a temporary
        out.copy_((_ops.reshuffle_down if down else _ops.reshuffle_up)(x4, scale).view(shape))
    return out


# ------------------------------------------------------------------ public functions
def reshuffle_down(x: torch.Tensor, scale: int, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paper Eq. 3: ``Y[..., c*s*s + a*s + b, i, j] = X[..., c, i*s + a, j*s + b]``.

    ``x``: ``(*, C, H, W)`` as for ``F.pixel_unshuffle``; ``out``: optional ``(*, C*s*s, H/s, W/s)``
    tensor or view to write into (returned)."""
    scale = _check(x, scale, "reshuffle_down", four_d=False)
    return _apply(x, scale, out, True)


def reshuffle_up(x: torch.Tensor, scale: int, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paper Eq. 4: ``Y[..., c, i*s + a, j*s + b] = X[..., c*s*s + a*s + b, i, j]``.

    ``x``: ``(*, C, H, W)`` as for ``F.pixel_shuffle``; ``out``: optional ``(*, C/(s*s), H*s, W*s)``
    tensor or view to write into (returned)."""
    scale = _check(x, scale, "reshuffle_up", four_d=False)
    return _apply(x, scale, out, False)


def reshuffle_into(x: torch.Tensor, scale: int, out: torch.Tensor, down: bool) -> torch.Tensor:
    """``reshuffle_down/up(x, scale, out=out)`` without the guard against ``out`` sharing memory
    with ``x`` in ways the kernel's check cannot see: for callers whose buffers overlap by design
    and order the writes so that nothing is read after it is overwritten (FastReshuffleNet's
    shared row buffers, :mod:`fastreshuffle.nn.buffers`).  Not public."""
    scale = _check(x, scale, "reshuffle_down" if down else "reshuffle_up", four_d=False)
    return _apply(x, scale, out, down, guard_overlap=False)


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


# ------------------------------------------------------- CUDA without the CUDA kernels
# A CUDA torch whose extension was built without nvcc (setup.py then builds the CPU kernels only)
# would fail in the dispatcher on CUDA tensors: there, CUDA tensors take torch's own
# pixel_(un)shuffle, which these ops equal bit for bit (slower; said once per call site).
def _torch_reshuffle(x: torch.Tensor, scale: int, down: bool) -> torch.Tensor:
    import warnings
    warnings.warn("fastreshuffle was built without its CUDA kernels (nvcc was not found at install time): "
                  "CUDA tensors are reshuffled by torch's pixel_(un)shuffle; rebuild with nvcc for the "
                  "fast ones", stacklevel=3)
    from torch._prims_common import suggest_memory_format
    _check(x, scale, "reshuffle_down" if down else "reshuffle_up")
    fn = torch.nn.functional.pixel_unshuffle if down else torch.nn.functional.pixel_shuffle
    # the ops keep the input's memory format (as their fake kernels say); torch's CUDA
    # pixel_(un)shuffle returns contiguous tensors
    return fn(x, scale).contiguous(memory_format=suggest_memory_format(x))


def _torch_down(x, scale):
    return _torch_reshuffle(x, scale, True)


def _torch_up(x, scale):
    return _torch_reshuffle(x, scale, False)


def _torch_down_out(x, scale, out):
    _check_out(x, out, scale, True)
    out.copy_(_torch_reshuffle(x, scale, True))


def _torch_up_out(x, scale, out):
    _check_out(x, out, scale, False)
    out.copy_(_torch_reshuffle(x, scale, False))


TORCH_CUDA_FALLBACK = {"reshuffle_down": _torch_down, "reshuffle_up": _torch_up,
                       "reshuffle_down_out": _torch_down_out, "reshuffle_up_out": _torch_up_out}
if not built_with_cuda():
    for _name, _fn in TORCH_CUDA_FALLBACK.items():
        torch.library.impl(f"fastreshuffle::{_name}", "CUDA", _fn)
