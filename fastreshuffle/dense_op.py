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

On CUDA (when Triton is installed) the in-place ops run the fused Triton kernel of
``fastreshuffle.kernels.dense_layer`` (registered with ``torch.library.triton_op`` +
``wrap_triton``); elsewhere they run a copy-free composition of PyTorch ops (1x1 conv on the
channel-prefix view, in-place ELU, 3x3 conv copied into the slice).

:func:`dense_block` runs a whole dense block on one preallocated buffer and is differentiable
(recomputing every intermediate in its backward) -- this is what ``FastReshuffleNet`` uses for
training.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["dense_layer_", "dense_layer_reshuffle_", "dense_layer", "dense_block",
           "reference_dense_layer", "triton_available"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CPU_DTYPES = _TRITON_DTYPES + (torch.float64,)


# ------------------------------------------------------------------------- kernel module
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def _kernels():
    """``fastreshuffle.kernels.dense_layer`` (the ``kernels/`` folder of the repository)."""
    try:
        from fastreshuffle.kernels import dense_layer as mod
        return mod
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("triton"):
            raise
    # Source checkout that was not pip-installed: ``kernels/`` sits next to the package.
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels",
                        "dense_layer.py")
    spec = importlib.util.spec_from_file_location("fastreshuffle.kernels.dense_layer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_override = threading.local()


@contextlib.contextmanager
def triton_kernels(enabled: bool):
    """Within this context (this thread), run dense layers on CUDA with the fused Triton kernel
    (``True``) or with cuBLAS/cuDNN on the same buffers (``False``).  Outside any context the
    environment decides: ``FASTRESHUFFLE_TRITON=0`` turns the Triton kernel off."""
    prev = getattr(_override, "enabled", None)
    _override.enabled = bool(enabled)
    try:
        yield
    finally:
        _override.enabled = prev


def triton_enabled() -> bool:
    """Whether CUDA dense layers use the fused Triton kernel (see :func:`triton_kernels`)."""
    o = getattr(_override, "enabled", None)
    if o is not None:
        return o
    return _HAS_TRITON and os.environ.get("FASTRESHUFFLE_TRITON", "1").strip().lower() not in ("0", "false", "no", "off")


def _use_triton(t: torch.Tensor) -> bool:
    return t.device.type == "cuda" and _HAS_TRITON and triton_enabled()


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
    if t.dim() != 4:
        raise ValueError(f"{op}: {name} must be a 4-D (B, C, H, W) tensor, got shape {list(t.shape)}")
    allowed = _TRITON_DTYPES if t.device.type == "cuda" else _CPU_DTYPES
    if t.dtype not in allowed:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported on {t.device.type}: "
                        f"{', '.join(str(d) for d in allowed)}")


def _check_inplace(buf, c_in, w1, b1, w3, b3, op="dense_layer_"):
    _check_feature(op, "buf", buf)
    if isinstance(c_in, bool) or not isinstance(c_in, int):
        raise TypeError(f"{op}: c_in must be an int, got {type(c_in).__name__}")
    if c_in < 1:
        raise ValueError(f"{op}: c_in must be >= 1, got {c_in}")
    _, n = _check_weights(op, buf, "buf", c_in, w1, b1, w3, b3)
    if c_in + n > buf.shape[1]:
        raise ValueError(f"{op}: c_in + N = {c_in} + {n} = {c_in + n} exceeds the {buf.shape[1]} channels "
                         f"of buf {list(buf.shape)}")
    return n


def _check_reshuffle(buf, src, w1, b1, w3, b3, op="dense_layer_reshuffle_"):
    _check_feature(op, "buf", buf)
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


# --------------------------------------------------------------------- torch (CPU) path
def reference_dense_layer(x, w1, b1, w3, b3):
    """Plain ``conv3x3(elu(conv1x1(x)))``, as in ``models.DenseLayer``."""
    return F.conv2d(F.elu(F.conv2d(x, w1, b1)), w3, b3, padding=1)


def _gemm_bias_elu(rows: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """``elu(rows @ w1t + b1)``: a bias-free GEMM, then one fused bias + ELU pass in the
    extension (faster than addmm's bias pass plus ``elu_``: ~20% of the GEMM and 3x the ELU)."""
    if rows.dtype in (torch.float32, torch.float64) and _has_op("bias_elu_"):
        t = torch.mm(rows, w1t)
        torch.ops.fastreshuffle.bias_elu_(t, b1)
        return t
    return F.elu_(torch.addmm(b1, rows, w1t))


_CPU_ISA_NAMES = {"off": 0, "avx2": 1, "avx512": 2}


@functools.lru_cache(maxsize=None)
def cpu_kernel_isa() -> int:
    """Instruction set of the extension's CPU dense-layer kernel: 2 AVX-512, 1 AVX2 + FMA, 0 none
    (no such CPU, no extension, or turned off): then the torch composition runs.  The best the
    CPU has, capped by ``FASTRESHUFFLE_CPU_KERNEL=off|avx2|avx512`` (read on first use)."""
    if not _has_op("dense_cpu_isa"):
        return 0
    best = int(torch.ops.fastreshuffle.dense_cpu_isa())
    want = os.environ.get("FASTRESHUFFLE_CPU_KERNEL", "").strip().lower()
    if not want:
        return best
    if want not in _CPU_ISA_NAMES:
        raise ValueError(f"FASTRESHUFFLE_CPU_KERNEL={want!r}: expected one of {', '.join(_CPU_ISA_NAMES)}")
    return min(best, _CPU_ISA_NAMES[want])


def _unit_channel_stride(t: torch.Tensor) -> bool:
    return t.shape[1] <= 1 or t.stride(1) == 1


def _torch_into(x: torch.Tensor, y: torch.Tensor, w1, b1, w3, b3) -> None:
    """``y.copy_(dense(x))`` without copying ``x`` (a channel-prefix view of a buffer)."""
    b, m, h, w = x.shape
    k = w1.shape[0]
    if (x.dtype == torch.float32 and x.device.type == "cpu" and _unit_channel_stride(x)
            and _unit_channel_stride(y) and cpu_kernel_isa()):
        # channels-last prefix -> channels-last slice: the extension's kernel (1x1 GEMM with
        # bias + ELU epilogue, Winograd 3x3 stored into the slice; no copies)
        torch.ops.fastreshuffle.dense_layer_cpu_(x, y, w1, b1, w3, b3, cpu_kernel_isa())
        return
    if m > 1 and h * w > 1 and x.stride(1) == 1 and x.stride(3) >= m and x.stride(2) == w * x.stride(3):
        # channels_last buffer: every pixel row of the prefix is [m] contiguous with row stride
        # C, i.e. a strided [HW, m] matrix -> one GEMM per image, no copy.
        w1t = w1.reshape(k, m).t()
        for i in range(b):
            rows = x[i].permute(1, 2, 0).reshape(h * w, m)           # view
            t = _gemm_bias_elu(rows, w1t, b1)                          # [HW, K]
            e = t.view(1, h, w, k).permute(0, 3, 1, 2)                  # channels_last [1, K, H, W]
            y[i:i + 1].copy_(F.conv2d(e, w3, b3, padding=1))
        return
    # NCHW buffer: the prefix of one image is a [m, H*W] matrix (row stride H*W) -> one GEMM per
    # image straight from the buffer.  (A 1x1 F.conv2d would go through oneDNN, which reorders
    # the whole prefix into a blocked layout first: ~4x the peak memory, no faster.)
    # The GEMM is computed transposed ([HW, K] = X^T W1^T, BLAS reads X^T without a copy) so
    # that the intermediate comes out channels_last, the layout oneDNN's 3x3 conv runs on
    # without reordering (measured ~10-20% faster per layer than an NCHW intermediate).
    w1t = w1.reshape(k, m).t()
    for i in range(b):
        t = _gemm_bias_elu(x[i].reshape(m, h * w).t(), w1t, b1)        # [HW, K]
        e = t.view(1, h, w, k).permute(0, 3, 1, 2)                      # channels_last [1, K, H, W]
        y[i:i + 1].copy_(F.conv2d(e, w3, b3, padding=1))


def _reshuffle_up_into(src: torch.Tensor, out: torch.Tensor) -> None:
    if _has_op("reshuffle_up_out"):
        torch.ops.fastreshuffle.reshuffle_up_out(src, 2, out)
    else:
        out.copy_(F.pixel_shuffle(src, 2))


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.fastreshuffle, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _allow_tf32() -> bool:
    # same switch that governs cuDNN convolutions in eager PyTorch
    return bool(torch.backends.cudnn.allow_tf32)


# -------------------------------------------------------------------------- op bodies
def _dense_layer__body(buf: torch.Tensor, c_in: int, w1: torch.Tensor, b1: torch.Tensor,
                       w3: torch.Tensor, b3: torch.Tensor) -> None:
    n = w3.shape[0]
    x = buf[:, :c_in]
    y = buf[:, c_in:c_in + n]
    if _use_triton(buf):
        _kernels().launch_dense_layer(x, y, w1, b1, w3, b3, allow_tf32=_allow_tf32(),
                                      wrap=torch.library.wrap_triton)
    else:
        _torch_into(x, y, w1, b1, w3, b3)


def _dense_layer_reshuffle__body(buf: torch.Tensor, src: torch.Tensor, w1: torch.Tensor,
                                 b1: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor) -> None:
    c_in = src.shape[1] // 4
    n = w3.shape[0]
    prefix = buf[:, :c_in]
    y = buf[:, c_in:c_in + n]
    if _use_triton(buf):
        _kernels().launch_dense_layer(src, y, w1, b1, w3, b3, prefix_out=prefix,
                                      allow_tf32=_allow_tf32(), wrap=torch.library.wrap_triton)
    else:
        _reshuffle_up_into(src, prefix)
        _torch_into(prefix, y, w1, b1, w3, b3)


def _dense_layer_body(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                      b3: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    n = w3.shape[0]
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = torch.empty((b, n, h, w), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last if cl else torch.contiguous_format)
    if _use_triton(x):
        _kernels().launch_dense_layer(x, y, w1, b1, w3, b3, allow_tf32=_allow_tf32(),
                                      wrap=torch.library.wrap_triton)
    else:
        _torch_into(x, y, w1, b1, w3, b3)
    return y


_HAS_TRITON = triton_available()


def _make_op(name, body, mutates):
    if _HAS_TRITON:
        return torch.library.triton_op(name, body, mutates_args=mutates)
    op = torch.library.custom_op(name, body, mutates_args=mutates)
    op.register_fake(body)   # the body only uses shape-polymorphic torch ops on CPU
    return op


_dense_layer__op = _make_op("fastreshuffle::dense_layer_", _dense_layer__body, {"buf"})
_dense_layer_reshuffle__op = _make_op("fastreshuffle::dense_layer_reshuffle_", _dense_layer_reshuffle__body, {"buf"})
_dense_layer_op = _make_op("fastreshuffle::dense_layer", _dense_layer_body, ())


# ------------------------------------------------------------------------- autograd
def _layer_backward(x, w1, b1, w3, gy, need_x: bool = True):
    """Gradients of ``y = conv3x3(elu(conv1x1(x)+b1))+b3`` recomputing the intermediate."""
    k = w1.shape[0]
    n = w3.shape[0]
    t = F.conv2d(x, w1, b1)
    e = F.elu(t)
    ge, gw3, gb3 = torch.ops.aten.convolution_backward(
        gy, e, w3, [n], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
    del e
    gt = torch.ops.aten.elu_backward(ge, 1.0, 1, 1.0, False, t)
    del ge, t
    gx, gw1, gb1 = torch.ops.aten.convolution_backward(
        gt, x, w1, [k], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, True, True])
    return gx, gw1, gb1, gw3, gb3


def _setup_context(ctx, inputs, output):
    x, w1, b1, w3, b3 = inputs
    ctx.save_for_backward(x, w1, b1, w3)


def _backward(ctx, gy):
    x, w1, b1, w3 = ctx.saved_tensors
    gx, gw1, gb1, gw3, gb3 = _layer_backward(x, w1, b1, w3, gy, ctx.needs_input_grad[0])
    return gx, gw1, gb1, gw3, gb3


_dense_layer_op.register_autograd(_backward, setup_context=_setup_context)


def _no_grad_guard(op: str, *tensors):
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(f"{op} writes into its buffer in place and has no autograd formula; "
                           "use fastreshuffle.dense_op.dense_layer (functional) or dense_block "
                           "for training, or call it under torch.no_grad()/inference_mode()")


# ------------------------------------------------------------------- public functions
def dense_layer_(buf: torch.Tensor, c_in: int, w1: torch.Tensor, b1: torch.Tensor,
                 w3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """Compute the dense layer on ``buf[:, :c_in]`` and write it into ``buf[:, c_in:c_in+N]``.

    Returns ``buf``.  ``w1``: ``[K, c_in, 1, 1]``, ``b1``: ``[K]``, ``w3``: ``[N, K, 3, 3]``,
    ``b3``: ``[N]`` with the dtype and device of ``buf``.  ``buf`` may have any strides
    (NCHW, channels_last, a view).
    """
    _check_inplace(buf, c_in, w1, b1, w3, b3)
    _no_grad_guard("dense_layer_", buf, w1, b1, w3, b3)
    _dense_layer__op(buf, int(c_in), w1, b1, w3, b3)
    return buf


def dense_layer_reshuffle_(buf: torch.Tensor, src: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                           w3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """First layer of a block: ``buf[:, :c] = reshuffle_up(src, 2)`` (c = C_src/4) and the layer
    output into ``buf[:, c:c+N]`` -- on CUDA in one fused kernel.  Returns ``buf``."""
    _check_reshuffle(buf, src, w1, b1, w3, b3)
    _no_grad_guard("dense_layer_reshuffle_", buf, src, w1, b1, w3, b3)
    _dense_layer_reshuffle__op(buf, src, w1, b1, w3, b3)
    return buf


def dense_layer(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                b3: torch.Tensor) -> torch.Tensor:
    """Functional, differentiable dense layer returning the ``N`` new channels."""
    _check_functional(x, w1, b1, w3, b3)
    return _dense_layer_op(x, w1, b1, w3, b3)


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
            _dense_layer__op(buf, c, w1, b1, w3, b3)
            c += w3.shape[0]
        ctx.c0 = c0
        ctx.save_for_backward(buf, *params)
        return buf

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out):
        buf, *params = ctx.saved_tensors
        g = g_out.contiguous().clone()
        grads: List[Optional[torch.Tensor]] = [None] * len(params)
        c = buf.shape[1]
        for j in reversed(range(0, len(params), 4)):
            w1, b1, w3, b3 = params[j:j + 4]
            n = w3.shape[0]
            c -= n
            gx, gw1, gb1, gw3, gb3 = _layer_backward(buf[:, :c], w1, b1, w3, g[:, c:c + n])
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
    return _DenseBlockFn.apply(x0, c, *flat)
