"""Dense layer ops: ``conv3x3(elu(conv1x1(x) + b1)) + b3`` written into a channel slice.

Operators (namespace ``fastreshuffle``), all visible to ``torch.compile``:

``dense_layer_(Tensor(a!) buf, int c_in, Tensor w1, Tensor b1, Tensor w3, Tensor b3) -> ()``
    Reads ``buf[:, :c_in]`` and writes the ``N = w3.shape[0]`` new channels into
    ``buf[:, c_in:c_in+N]`` in place; every other element of ``buf`` is left untouched.
    Inference only (no autograd formula: it mutates its input).

``dense_layer_reshuffle_(Tensor(a!) buf, Tensor src, Tensor w1, Tensor b1, Tensor w3, Tensor b3) -> ()``
    First layer of a dense block: the block input is ``reshuffle_up(src, 2)`` (pixel_shuffle,
    paper Eq. 4).  Writes that input into ``buf[:, :C_src/4]`` and the layer output after it.

``dense_layer(Tensor x, Tensor w1, Tensor b1, Tensor w3, Tensor b3) -> Tensor``
    Functional form with a memory-efficient autograd formula: the backward recomputes the
    bottleneck intermediate with standard ops instead of saving it.

Where each runs (the one dispatch point is :func:`use_triton`): on CUDA, when Triton is
installed and enabled (:mod:`fastreshuffle.backends`), the fused Triton kernel of
``fastreshuffle.kernels.dense_layer`` (registered with ``torch.library.triton_op`` +
``wrap_triton``); everywhere else the copy-free composition of :mod:`._dense_torch` (on CPU
float32 channels-last buffers: the extension's AVX-512/AVX2 kernel).

This module also registers the fake kernels of the extension's dense-layer helper ops
(``bias_elu_``, ``dense_layer_cpu_``, ``amx_gemm_bias_elu``; schemas in ``csrc/dense_layer/dense_layer.cpp``).
"""
from __future__ import annotations

import functools
import operator
from typing import List, Optional, Tuple

import torch

from .. import backends
from ._checks import refuse_forward_ad
from ._dense_torch import cpu_pack, layer_backward, torch_into
from ._extension import ops as _ops

__all__ = ["dense_layer_", "dense_layer_reshuffle_", "dense_layer", "pack_dense_weights", "use_triton", "traced"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CPU_DTYPES = _TRITON_DTYPES + (torch.float64,)


# ------------------------------------------------------------------------------- dispatch
def use_triton(t: torch.Tensor) -> bool:
    """Whether the dense layers on ``t``'s device run the fused Triton kernel."""
    return t.device.type == "cuda" and backends.triton_enabled()


@functools.lru_cache(maxsize=None)
def _triton_kernels():
    """``fastreshuffle.kernels.dense_layer``, imported on first use (it imports Triton)."""
    from ..kernels import dense_layer as mod
    return mod


def _allow_tf32() -> bool:
    # same switch that governs cuDNN convolutions in eager PyTorch
    return bool(torch.backends.cudnn.allow_tf32)


# ------------------------------------------------------------------------------ checks
def _check_tensor(name: str, t, op: str):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _check_weights(op: str, ref: torch.Tensor, ref_name: str, c_in: int, w1, b1, w3, b3) -> Tuple[int, int]:
    for name, t in (("w1", w1), ("b1", b1), ("w3", w3), ("b3", b3)):
        _check_tensor(name, t, op)
        if t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if w1.dim() != 4 or tuple(w1.shape[1:]) != (c_in, 1, 1):
        raise ValueError(f"{op}: w1 must have shape [K, {c_in}, 1, 1] (1x1 conv over the {c_in} input "
                         f"channels), got {list(w1.shape)}")
    k = w1.shape[0]
    if b1.shape != (k,):
        raise ValueError(f"{op}: b1 must have shape [{k}] to match w1 {list(w1.shape)}, got {list(b1.shape)}")
    if w3.dim() != 4 or w3.shape[1] != k or tuple(w3.shape[2:]) != (3, 3):
        raise ValueError(f"{op}: w3 must have shape [N, {k}, 3, 3] (3x3 conv over the {k} bottleneck "
                         f"channels), got {list(w3.shape)}")
    n = w3.shape[0]
    if b3.shape != (n,):
        raise ValueError(f"{op}: b3 must have shape [{n}] to match w3 {list(w3.shape)}, got {list(b3.shape)}")
    if k == 0 or n == 0:
        raise ValueError(f"{op}: empty weights (K={k}, N={n})")
    return k, n


def _check_feature(op: str, name: str, t: torch.Tensor):
    _check_tensor(name, t, op)
    if t.layout != torch.strided:
        raise TypeError(f"{op}: {name} is a {str(t.layout).replace('torch.', '')} tensor; pass a dense (strided) "
                        f"tensor ({name}.to_dense())")
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be a 4-D (B, C, H, W) tensor, got shape {list(t.shape)}")
    allowed = _TRITON_DTYPES if t.device.type == "cuda" else _CPU_DTYPES
    if t.dtype not in allowed:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported on {t.device.type}: "
                        f"{', '.join(str(d) for d in allowed)}")


def _check_buffer(op: str, buf) -> None:
    _check_feature(op, "buf", buf)
    # (not while compiling: dynamo cannot trace is_neg, and a traced tensor has no lazy view)
    if not torch.compiler.is_compiling() and (buf.is_neg() or buf.is_conj()):   # torch's fallback cannot write through one into an op's buffer
        raise ValueError(f"{op}: buf must not be a lazily negated or conjugated view; pass a tensor with its "
                         "values in memory (buf.resolve_neg() / resolve_conj() make one)")


def _check_inplace(buf, c_in, w1, b1, w3, b3, op="dense_layer_"):
    _check_buffer(op, buf)
    try:
        if isinstance(c_in, bool):
            raise TypeError
        c_in = operator.index(c_in)     # an int, a numpy integer, ...
    except TypeError:
        raise TypeError(f"{op}: c_in must be an int, got {type(c_in).__name__}") from None
    if c_in < 1:
        raise ValueError(f"{op}: c_in must be >= 1, got {c_in}")
    _, n = _check_weights(op, buf, "buf", c_in, w1, b1, w3, b3)
    if c_in + n > buf.shape[1]:
        raise ValueError(f"{op}: c_in + N = {c_in} + {n} = {c_in + n} exceeds the {buf.shape[1]} channels "
                         f"of buf {list(buf.shape)}")
    return c_in, n


def _check_reshuffle(buf, src, w1, b1, w3, b3, op="dense_layer_reshuffle_"):
    _check_buffer(op, buf)
    _check_feature(op, "src", src)
    if src.dtype != buf.dtype:
        raise TypeError(f"{op}: src has dtype {src.dtype} but buf has dtype {buf.dtype}")
    if src.device != buf.device:
        raise ValueError(f"{op}: src is on {src.device} but buf is on {buf.device}")
    b, cs, hs, ws = src.shape
    if cs % 4 or cs == 0:
        raise ValueError(f"{op}: src channels {cs} must be a positive multiple of 4 to reshuffle up by 2 "
                         f"(src shape {list(src.shape)})")
    if (buf.shape[0], buf.shape[2], buf.shape[3]) != (b, 2 * hs, 2 * ws):
        raise ValueError(f"{op}: buf {list(buf.shape)} must have batch {b} and spatial size "
                         f"{2 * hs}x{2 * ws} (twice src {list(src.shape)})")
    c_in = cs // 4
    _, n = _check_weights(op, buf, "buf", c_in, w1, b1, w3, b3)
    if c_in + n > buf.shape[1]:
        raise ValueError(f"{op}: C_src/4 + N = {c_in} + {n} = {c_in + n} exceeds the {buf.shape[1]} "
                         f"channels of buf {list(buf.shape)}")
    return c_in, n


def _check_functional(x, w1, b1, w3, b3, op="dense_layer"):
    _check_feature(op, "x", x)
    _check_weights(op, x, "x", x.shape[1], w1, b1, w3, b3)


def _span(t: torch.Tensor) -> Tuple[int, int]:
    """The first and one-past-last element ``t`` reaches in its storage."""
    start = t.storage_offset()
    return start, start + 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))


def _may_self_overlap(t: torch.Tensor) -> bool:
    """Whether two elements of ``t`` may share memory: false when, its dims sorted by stride
    (size-1 dims aside), each stride is at least the span of the dims below it -- true for an
    expanded (stride-0) tensor and for ``as_strided`` views that fold onto themselves."""
    dims = sorted((abs(st), n) for n, st in zip(t.shape, t.stride()) if n > 1)
    span = 1
    for st, n in dims:
        if st < span:
            return True
        span = st * n
    return False


def _check_memory(op: str, buf: torch.Tensor, src: Optional[torch.Tensor] = None) -> None:
    """What the kernels cannot write correctly, refused where memory can be inspected (eagerly,
    also inside a compiled CPU graph; not while tracing): a ``buf`` whose elements share memory
    (expanded: its outputs would land on one another), a ``src`` in ``buf``'s memory (read while
    the prefix is written)."""
    if traced(buf) or buf.numel() == 0:
        return
    if _may_self_overlap(buf):
        raise ValueError(f"{op}: buf has internal overlap (e.g. an expanded tensor): its outputs would "
                         "land on one another; pass a tensor with memory of its own (e.g. .contiguous())")
    if src is None or not src.numel() or src.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr():
        return
    (a0, a1), (b0, b1) = _span(src), _span(buf)
    if max(a0, b0) < min(a1, b1):
        raise ValueError(f"{op}: src shares memory with buf, which is written while src is read; "
                         "pass a separate tensor (e.g. src.clone())")


# -------------------------------------------------------------------------- op bodies
def _inplace_body(buf: torch.Tensor, c_in: int, w1: torch.Tensor, b1: torch.Tensor,
                  w3: torch.Tensor, b3: torch.Tensor) -> None:
    # the registered op is public too (torch.ops.fastreshuffle.dense_layer_): checked as the
    # wrapper is (a c_in under 1 or past the buffer had written nothing, without a word)
    _check_inplace(buf, c_in, w1, b1, w3, b3)
    _inplace(buf, c_in, w1, b1, w3, b3, None)


def _inplace(buf, c_in, w1, b1, w3, b3, packed: Optional[List[torch.Tensor]]) -> None:
    # the op's body, plus the CPU kernel's packed weights on the eager path (custom ops take
    # no optional tensor list)
    _check_memory("dense_layer_", buf)
    n = w3.shape[0]
    x = buf[:, :c_in]
    y = buf[:, c_in:c_in + n]
    if use_triton(buf):
        _triton_kernels().launch_dense_layer(x, y, w1, b1, w3, b3, allow_tf32=_allow_tf32(),
                                      wrap=torch.library.wrap_triton)
    else:
        torch_into(x, y, w1, b1, w3, b3, packed)


def _reshuffle_body(buf: torch.Tensor, src: torch.Tensor, w1: torch.Tensor,
                    b1: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor) -> None:
    _check_reshuffle(buf, src, w1, b1, w3, b3)       # (public too, as dense_layer_'s)
    _reshuffle(buf, src, w1, b1, w3, b3)


def _reshuffle(buf, src, w1, b1, w3, b3) -> None:
    # the op's body once its arguments are checked (the eager path calls it directly)
    _check_memory("dense_layer_reshuffle_", buf, src)
    c_in = src.shape[1] // 4
    n = w3.shape[0]
    prefix = buf[:, :c_in]
    y = buf[:, c_in:c_in + n]
    if use_triton(buf):
        _triton_kernels().launch_dense_layer(src, y, w1, b1, w3, b3, prefix_out=prefix,
                                      allow_tf32=_allow_tf32(), wrap=torch.library.wrap_triton)
    else:
        _ops.reshuffle_up_out(src, 2, prefix)
        torch_into(prefix, y, w1, b1, w3, b3)


def _functional_body(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                      b3: torch.Tensor) -> torch.Tensor:
    _check_functional(x, w1, b1, w3, b3)
    b, _, h, w = x.shape
    n = w3.shape[0]
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = torch.empty((b, n, h, w), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last if cl else torch.contiguous_format)
    if use_triton(x):
        _triton_kernels().launch_dense_layer(x, y, w1, b1, w3, b3, allow_tf32=_allow_tf32(),
                                      wrap=torch.library.wrap_triton)
    else:
        torch_into(x, y, w1, b1, w3, b3)
    return y


def _make_op(name, body, mutates):
    # ``triton_op`` imports torch's compiler stack at registration (about 2 s of start-up): only
    # where the Triton kernel can run, i.e. with a CUDA device, and is switched on
    # (FASTRESHUFFLE_TRITON=1 as the package is imported).  Only the op's kind is chosen here:
    # which kernel runs is decided per call (use_triton), so a switch flipped later still holds --
    # the body of a plain op launches the Triton kernel too, opaque to torch.compile.
    if backends.triton_enabled() and torch.cuda.is_available():
        return torch.library.triton_op(name, body, mutates_args=mutates)
    op = torch.library.custom_op(name, body, mutates_args=mutates)

    @functools.wraps(body)
    def fake(*args):   # the body on the torch path: shape-polymorphic torch ops only, no kernel launch
        with backends.override(triton=False):
            return body(*args)
    op.register_fake(fake)
    return op


def _direct(t: torch.Tensor) -> bool:
    """Whether an in-place dense layer on ``t`` calls the op's body directly: eagerly, off the
    Triton path.  The body is exactly what the op runs; the custom-op wrapper would import
    ``torch._dynamo`` on its first call (1.5-2 s, most of a one-photo restore's start-up).
    Under torch.compile / torch.export / fake tensors, and on the Triton path, the registered
    op is called, so that the compiler sees it with its mutation and fake kernel."""
    return not (use_triton(t) or traced(t))


def traced(t: torch.Tensor) -> bool:
    """Whether ``t`` is being traced (torch.compile / torch.export / fake tensors), not run eagerly."""
    if torch.compiler.is_compiling():
        return True
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(t)


_inplace_op = _make_op("fastreshuffle::dense_layer_", _inplace_body, {"buf"})
_reshuffle_op = _make_op("fastreshuffle::dense_layer_reshuffle_", _reshuffle_body, {"buf"})
_functional_op = _make_op("fastreshuffle::dense_layer", _functional_body, ())


# ------------------------------------------------- fake kernels of the extension's helpers
@torch.library.register_fake("fastreshuffle::bias_elu_")
def _bias_elu_fake(x, bias):
    # in place, nothing to allocate; the shape rules are those of the CPU kernel
    if x.dim() != 2 or bias.dim() != 1 or bias.shape[0] != x.shape[1]:
        raise RuntimeError(f"bias_elu_: bias has shape {tuple(bias.shape)} but x has shape {tuple(x.shape)}")


@torch.library.register_fake("fastreshuffle::amx_gemm_bias_elu")
def _amx_gemm_bias_elu_fake(rows, w1, b1):
    # a new [R, N] tensor; shape rules as in the CPU kernel
    if rows.dim() != 2 or w1.dim() not in (2, 4) or w1.shape[1] != rows.shape[1] or tuple(b1.shape) != (w1.shape[0],):
        raise RuntimeError(f"amx_gemm_bias_elu: shapes do not fit: rows {tuple(rows.shape)}, w1 {tuple(w1.shape)}, "
                           f"b1 {tuple(b1.shape)}")
    return rows.new_empty((rows.shape[0], w1.shape[0]))


@torch.library.register_fake("fastreshuffle::dense_layer_cpu_")
def _dense_layer_cpu_fake(x, y, w1, b1, w3, b3, isa=0, algo=0, packed=None):
    # writes into y, allocates nothing visible; shape rules as in the CPU kernel
    if x.dim() != 4 or y.dim() != 4 or w1.dim() != 4 or w3.dim() != 4:
        raise RuntimeError("dense_layer_cpu_: x, y, w1 and w3 must be 4-D")
    if (w1.shape[1] != x.shape[1] or w3.shape[1] != w1.shape[0]
            or tuple(y.shape) != (x.shape[0], w3.shape[0], x.shape[2], x.shape[3])):
        raise RuntimeError(f"dense_layer_cpu_: shapes do not fit: x {tuple(x.shape)}, y {tuple(y.shape)}, "
                           f"w1 {tuple(w1.shape)}, w3 {tuple(w3.shape)}")


# ------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    x, w1, b1, w3, b3 = inputs
    ctx.save_for_backward(x, w1, b1, w3)


def _backward(ctx, gy):
    x, w1, b1, w3 = ctx.saved_tensors
    return layer_backward(x, w1, b1, w3, gy, ctx.needs_input_grad[0])


_functional_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------- public functions
_NO_JVP = "use a composition of torch ops (conv2d, elu, conv2d) there, as ReshuffleNet does"


def _no_grad_guard(op: str, *tensors):
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(f"{op} writes into its buffer in place and has no autograd formula; "
                           "use fastreshuffle.ops.dense_layer (functional) or dense_block "
                           "for training, or call it under torch.no_grad()/inference_mode()")


def dense_layer_(buf: torch.Tensor, c_in: int, w1: torch.Tensor, b1: torch.Tensor,
                 w3: torch.Tensor, b3: torch.Tensor, packed: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
    """Compute the dense layer on ``buf[:, :c_in]`` and write it into ``buf[:, c_in:c_in+N]``.

    Returns ``buf``.  ``w1``: ``[K, c_in, 1, 1]``, ``b1``: ``[K]``, ``w3``: ``[N, K, 3, 3]``,
    ``b3``: ``[N]`` with the dtype and device of ``buf``.  ``buf`` may have any strides
    (NCHW, channels_last, a view).  ``packed``: :func:`pack_dense_weights` of these weights,
    so that the CPU kernel does not pack them on every call (used when called eagerly).
    """
    c_in, _ = _check_inplace(buf, c_in, w1, b1, w3, b3)
    if packed is not None:
        if not isinstance(packed, PackedDenseWeights):   # (a list of tensors cannot say what it was made from)
            raise TypeError(f"dense_layer_: packed must be what pack_dense_weights returned, got "
                            f"{type(packed).__name__}")
        if not packed.made_for((w1, b1, w3, b3)):
            raise ValueError("dense_layer_: packed was made from other weights, or from these before they were "
                             "changed: pack them again (pack_dense_weights(w1, b1, w3, b3))")
    _no_grad_guard("dense_layer_", buf, w1, b1, w3, b3)
    refuse_forward_ad("dense_layer_", (buf, w1, b1, w3, b3), _NO_JVP)
    if _direct(buf):
        _inplace(buf, int(c_in), w1, b1, w3, b3, packed)
    else:
        _inplace_op(buf, int(c_in), w1, b1, w3, b3)
    return buf


class PackedDenseWeights(list):
    """:func:`pack_dense_weights`' result: the packed tensors, and which weights (memory and
    version) they were packed from, so that :func:`dense_layer_` refuses them with others.
    Inference tensors keep no version: for them ``copies`` holds the weights as packed, compared
    on each call (a pass over the weights)."""
    made_from: tuple
    copies: Optional[tuple] = None

    def made_for(self, weights) -> bool:
        """Whether these are packed from ``weights`` as they are now."""
        return self.made_from == weights_stamp(weights) and (     # (NaN weights: equal to themselves)
            self.copies is None or all(torch.allclose(c, w, rtol=0, atol=0, equal_nan=True)
                                       for c, w in zip(self.copies, weights)))


def weights_stamp(tensors) -> tuple:
    """Which tensors, in which version: their memory and version counters (inference tensors keep
    no version: their memory only).  Equal stamps, unchanged tensors -- but for changes through
    ``.data``, which leave no version behind."""
    return tuple((t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)


def pack_dense_weights(w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                       b3: torch.Tensor) -> Optional[List[torch.Tensor]]:
    """The weights in the CPU kernel's layout for :func:`dense_layer_`'s ``packed``, or None
    where that kernel does not run them.  Pack again after changing the weights: packed weights
    given with other weights, or with these changed in place since, are refused -- but for
    changes made through ``.data``, which leave no trace (inference tensors are compared with a
    copy kept of them)."""
    return _pack((w1, b1, w3, b3), copies=True)


def pack_snapshot(w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                  b3: torch.Tensor) -> Optional[List[torch.Tensor]]:
    """:func:`pack_dense_weights` of weights that their owner never changes (FastReshuffleNet's
    snapshot of its parameters): no copy kept, as nothing is to be compared."""
    return _pack((w1, b1, w3, b3), copies=False)


def _pack(weights, copies: bool) -> Optional[List[torch.Tensor]]:
    packed = cpu_pack(*weights)
    if packed is None:
        return None
    out = PackedDenseWeights(packed)
    out.made_from = weights_stamp(weights)
    if copies and any(t.is_inference() for t in weights):
        out.copies = tuple(t.detach().clone() for t in weights)
    return out


def dense_layer_reshuffle_(buf: torch.Tensor, src: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                           w3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """First layer of a block: ``buf[:, :c] = reshuffle_up(src, 2)`` (c = C_src/4) and the layer
    output into ``buf[:, c:c+N]`` -- on CUDA in one fused kernel.  Returns ``buf``."""
    _check_reshuffle(buf, src, w1, b1, w3, b3)
    _no_grad_guard("dense_layer_reshuffle_", buf, src, w1, b1, w3, b3)
    refuse_forward_ad("dense_layer_reshuffle_", (buf, src, w1, b1, w3, b3), _NO_JVP)
    (_reshuffle if _direct(buf) else _reshuffle_op)(buf, src, w1, b1, w3, b3)
    return buf


def dense_layer(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                b3: torch.Tensor) -> torch.Tensor:
    """Functional, differentiable dense layer returning the ``N`` new channels (its arguments
    checked by the op, which is public too)."""
    refuse_forward_ad("dense_layer", (x, w1, b1, w3, b3), _NO_JVP)
    return _functional_op(x, w1, b1, w3, b3)
