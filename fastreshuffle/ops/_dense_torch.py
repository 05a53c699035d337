"""The dense layer on torch ops (every device and dtype the fused kernels do not take), and the
recomputing backward shared by the functional op and :func:`~fastreshuffle.ops.dense_block`.

:func:`torch_into` writes ``dense(x)`` into ``y`` without copying ``x`` (a channel-prefix view
of a block buffer): on CPU float32 channels-last buffers through the extension's kernel
(``dense_layer_cpu_``; the instruction set from :mod:`fastreshuffle.backends`), otherwise as a
GEMM straight from the prefix with a fused bias + ELU pass, then a 3x3 convolution copied into
the slice.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from .. import backends
from . import _extension  # noqa: F401  (torch.ops.fastreshuffle.bias_elu_ / dense_layer_cpu_)

__all__ = ["reference_dense_layer", "torch_into", "cpu_pack", "layer_backward"]


def reference_dense_layer(x, w1, b1, w3, b3):
    """Plain ``conv3x3(elu(conv1x1(x)))``, as in ``nn.reference.DenseLayer``."""
    return F.conv2d(F.elu(F.conv2d(x, w1, b1)), w3, b3, padding=1)


# bf16 GEMMs on CPU take the prefix in row chunks of about this many bytes (see _gemm_bias_elu)
_BF16_CHUNK_BYTES = 4 << 20


def _gemm_bias_elu(rows: torch.Tensor, w1t: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """``elu(rows @ w1t + b1)``: a bias-free GEMM, then one fused bias + ELU pass in the
    extension (faster than addmm's bias pass plus ``elu_``: ~20% of the GEMM and 3x the ELU in
    float32; in bfloat16 torch's ``elu_`` took as long as the GEMM).  bfloat16 on a CPU with AMX:
    all three in the extension's AMX kernel, the rows read in place (``backends.cpu_amx_gemm``)."""
    cpu_bf16 = rows.device.type == "cpu" and rows.dtype == torch.bfloat16
    if cpu_bf16 and _unit_channel_stride(rows) and backends.cpu_amx_gemm():
        return torch.ops.fastreshuffle.amx_gemm_bias_elu(rows, w1t.t(), b1)
    if cpu_bf16 and not rows.is_contiguous():
        # torch's bf16 GEMM on CPU (2.13, oneDNN; seen on a Xeon with AMX) reads each row of a
        # strided ``rows`` past its last column, up to a multiple of 32, and multiplies that by
        # zero: a NaN there -- a block buffer's channels not written yet -- made whole rows NaN
        # (half to all of them for 16384 x 144 rows with stride 192 and 64 columns out).  Contiguous
        # rows are safe (checked with NaN after their end), so the GEMM takes contiguous copies,
        # a chunk of rows at a time: the copy stays in cache, and the small allocations are
        # reused where one copy of the whole prefix was page-faulted in on every layer (`small`
        # at 1920x1080: 0.84 -> 0.65 s; tests/ops/test_dense_layer_bf16.py has the NaN case).
        t = torch.empty((rows.shape[0], w1t.shape[1]), dtype=rows.dtype)
        step = max(64, _BF16_CHUNK_BYTES // (rows.element_size() * max(1, rows.shape[1])))
        for r0 in range(0, rows.shape[0], step):
            part = t[r0:r0 + step]
            torch.mm(rows[r0:r0 + step].contiguous(), w1t, out=part)
            torch.ops.fastreshuffle.bias_elu_(part, b1)
        return t
    if rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64, torch.bfloat16):
        t = torch.mm(rows, w1t)
        torch.ops.fastreshuffle.bias_elu_(t, b1)
        return t
    return F.elu_(torch.addmm(b1, rows, w1t))


def _unit_channel_stride(t: torch.Tensor) -> bool:
    return t.shape[1] <= 1 or t.stride(1) == 1


def _kernel_isa(dtype: torch.dtype) -> int:
    """The instruction set the extension's kernel runs ``dtype`` with here (0: it does not)."""
    if dtype == torch.float32:
        return backends.cpu_kernel_isa()
    if dtype == torch.bfloat16 and backends.cpu_bf16_uses_kernel():
        return 2    # AVX-512 with AVX512-BF16 (not on a CPU with AMX: the composition below)
    return 0


def cpu_pack(w1, b1, w3, b3) -> Optional[List[torch.Tensor]]:
    """The layer's weights in the CPU kernel's layout (``dense_cpu_pack``), for
    :func:`torch_into`'s ``packed``, or None where that kernel does not run them (another device
    or dtype, a CPU without the instructions).  The result stands for these weight *values*: the
    caller packs again after changing them (FastReshuffleNet keys its cache on the parameters'
    versions)."""
    isa = _kernel_isa(w1.dtype) if w1.device.type == "cpu" else 0
    return list(torch.ops.fastreshuffle.dense_cpu_pack(w1, b1, w3, b3, isa, 0)) if isa else None


def torch_into(x: torch.Tensor, y: torch.Tensor, w1, b1, w3, b3,
               packed: Optional[List[torch.Tensor]] = None) -> None:
    """``y.copy_(dense(x))`` without copying ``x`` (a channel-prefix view of a buffer).
    ``packed``: :func:`cpu_pack` of the same weights, made for the instruction set chosen now
    (used where the CPU kernel runs, which refuses panels made for another; ignored elsewhere)."""
    b, m, h, w = x.shape
    k = w1.shape[0]
    if y.numel() == 0:   # batch 0 or an empty side: nothing to write (conv2d refuses an empty side)
        return
    if x.device.type == "cpu" and _unit_channel_stride(x) and _unit_channel_stride(y):
        # channels-last prefix -> channels-last slice: the extension's kernel (1x1 GEMM with
        # bias + ELU epilogue, Winograd 3x3 stored into the slice; no copies)
        isa = _kernel_isa(x.dtype)
        if isa:
            torch.ops.fastreshuffle.dense_layer_cpu_(x, y, w1, b1, w3, b3, isa, 0, packed)
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


def layer_backward(x, w1, b1, w3, gy, need_x: bool = True):
    """Gradients of ``y = conv3x3(elu(conv1x1(x)+b1))+b3`` recomputing the intermediate."""
    k = w1.shape[0]
    n = w3.shape[0]
    if x.numel() == 0:   # no pixels (convolution_backward refuses an empty image): zero gradients
        gx = torch.zeros_like(x) if need_x else None
        return gx, torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w3), gy.new_zeros((n,))
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
