"""The AMX kernel of the bf16 torch composition (``fastreshuffle::amx_gemm_bias_elu``:
``elu(rows @ w1^T + b1)`` on AMX tiles, the rows read in place), against float64.

Bound: products of bf16 values are exact in float32, the tiles sum them in float32 (2^-16 of
the sum of absolute values covers that, as in test_dense_layer_bf16.py), and the result is rounded
once to bf16 (2^-8 relative).  Rows are views with NaN after their last column and in the padding
rows, which must never reach a result.  Skipped where the CPU has no AMX-BF16 (read from
/proc/cpuinfo independently of the kernel's own detection: on such a CPU a kernel that does not
detect it fails instead of skipping).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastreshuffle import backends
from fastreshuffle.ops import _dense_torch, dense_layer_
from fastreshuffle.ops import _extension  # noqa: F401  (torch.ops.fastreshuffle.*)
from helpers import cpu_flags

OPS = torch.ops.fastreshuffle


CPU_AMX = {"amx_tile", "amx_bf16"} <= cpu_flags()
needs_amx = pytest.mark.skipif(not CPU_AMX, reason="CPU without AMX-BF16")


def _case(r, m, n, extra, seed=0, row_pad=0):
    """rows: [r, m] view of a bf16 [r + row_pad, m + extra] block, NaN outside the view."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full((r + row_pad, m + extra), float("nan"), dtype=torch.bfloat16)
    base[:r, :m] = torch.randn(r, m, generator=g).to(torch.bfloat16)
    w1 = (torch.randn(n, m, generator=g) / max(1, m) ** 0.5).to(torch.bfloat16)
    b1 = (torch.randn(n, generator=g) * 0.5).to(torch.bfloat16)
    return base[:r, :m], w1, b1


def _assert_within_bound(t, rows, w1, b1):
    a, w, b = rows.double(), w1.reshape(w1.shape[0], -1).double(), b1.double()
    ref = F.elu(a @ w.t() + b)
    bound = 2.0 ** -8 * ref.abs() + 2.0 ** -16 * (a.abs() @ w.abs().t() + b.abs())
    assert t.dtype == torch.bfloat16 and tuple(t.shape) == tuple(ref.shape)
    assert torch.isfinite(t.float()).all()
    err = (t.double() - ref).abs()
    assert (err <= bound).all(), (err - bound).max()


@needs_amx
def test_kernel_detects_amx():
    assert OPS.dense_cpu_amx()
    assert backends.cpu_amx_gemm()
    for cap in ("avx2", "off"):
        with backends.override(cpu_kernel=cap):
            assert not backends.cpu_amx_gemm()


@needs_amx
@pytest.mark.parametrize("r,m,n,extra", [
    (1, 1, 1, 0),          # one of everything
    (5, 3, 7, 2),          # fewer rows than a tile, odd M and N
    (16, 32, 16, 0),       # exactly one tile of each
    (17, 33, 17, 5),       # one past each tile size
    (31, 64, 48, 0),       # a short row block, M a multiple of 32, N not of 32
    (33, 63, 100, 1),      # M % 32 == 31, N % 32 == 4
    (64, 144, 64, 48),     # the shape that came back NaN through torch's GEMM (rows 16384 there)
    (100, 704, 256, 576),  # paper block 0: 22 K blocks
    (2049, 240, 64, 80),   # many row blocks over both threads, a tail of one row
])
def test_amx_within_bound_of_float64(r, m, n, extra):
    rows, w1, b1 = _case(r, m, n, extra, row_pad=3)
    _assert_within_bound(OPS.amx_gemm_bias_elu(rows, w1, b1), rows, w1, b1)
    # w1 as a 1x1 convolution's weight gives the same
    assert torch.equal(OPS.amx_gemm_bias_elu(rows, w1.view(n, m, 1, 1), b1), OPS.amx_gemm_bias_elu(rows, w1, b1))


@needs_amx
def test_amx_channels_last_prefix_and_edge_values():
    """The channel prefix of a channels-last buffer (the way the dense layer calls it), NaN in the
    channels after it; inputs with zeros, large and tiny values; an input with no channels."""
    buf = torch.full((1, 80, 9, 13), float("nan")).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 45, 9, 13, generator=g) * torch.tensor([0.0, 1e-3, 1.0, 300.0]).repeat(12)[:45].view(1, 45, 1, 1)
    buf[:, :45] = x.to(torch.bfloat16)
    rows = buf[0, :45].permute(1, 2, 0).reshape(9 * 13, 45)
    assert rows.stride() == (80, 1)
    _, w1, b1 = _case(1, 45, 24, 0, seed=4)
    _assert_within_bound(OPS.amx_gemm_bias_elu(rows, w1, b1), rows, w1, b1)
    empty = torch.zeros(7, 0, dtype=torch.bfloat16)
    b = torch.randn(5).to(torch.bfloat16)
    got = OPS.amx_gemm_bias_elu(empty, torch.zeros(5, 0, dtype=torch.bfloat16), b)
    assert torch.equal(got, F.elu(b.float()).to(torch.bfloat16).expand(7, 5))


@needs_amx
def test_amx_rows_with_any_row_stride():
    """Rows are only read, each within its own columns: an expanded view (row stride 0), rows that
    overlap (stride 1 < M) and a single row with stride 1 are all fine (the views the dense layer's
    NCHW path and an expanded input hand over)."""
    _, w1, b1 = _case(1, 8, 12, 0, seed=5)
    one = torch.randn(8).to(torch.bfloat16)
    for rows in (one.expand(37, 8), torch.randn(44).to(torch.bfloat16).as_strided((37, 8), (1, 1)),
                 one.as_strided((1, 8), (1, 1))):
        _assert_within_bound(OPS.amx_gemm_bias_elu(rows, w1, b1), rows, w1, b1)


@needs_amx
@pytest.mark.parametrize("shape,expand", [((1, 8, 1, 1), False), ((1, 12, 1, 1), False), ((1, 8, 1, 1), True)])
def test_bf16_functional_layer_on_nchw_and_expanded_inputs(shape, expand):
    """fastreshuffle.ops.dense_layer on bf16 NCHW 1x1 images and an expanded input, as with the kernel capped."""
    from fastreshuffle.ops import dense_layer

    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g).to(torch.bfloat16)
    if expand:
        x = x.expand(1, shape[1], 4, 4)
    m = x.shape[1]
    wts = [(torch.randn(16, m, 1, 1, generator=g) / m ** 0.5), torch.randn(16, generator=g) * 0.1,
           torch.randn(4, 16, 3, 3, generator=g) / 12, torch.randn(4, generator=g) * 0.1]
    wts = [t.to(torch.bfloat16) for t in wts]
    got = dense_layer(x, *wts)
    with backends.override(cpu_kernel="avx2"):
        want = dense_layer(x, *wts)
    assert torch.isfinite(got.float()).all()
    assert (got.float() - want.float()).abs().max() <= 2.0 ** -6 * want.float().abs().max().clamp_min(1)


GUARD_PAGE = r"""
import ctypes, mmap, sys, torch
from fastreshuffle.ops import _extension
r, m, n, lda = (int(v) for v in sys.argv[1:5])
page = mmap.PAGESIZE
size = -(-((r - 1) * lda + m) * 2 // page) * page          # the rows' bytes, whole pages
mm = mmap.mmap(-1, size + page)
base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(base + size, page, 0) == 0               # PROT_NONE after the rows
flat = torch.frombuffer(mm, dtype=torch.bfloat16, count=size // 2)
flat.copy_(torch.randn(size // 2).to(torch.bfloat16))
start = size // 2 - ((r - 1) * lda + m)                        # the last row ends at the guard page
rows = flat[start:].as_strided((r, m), (lda, 1))
w1, b1 = torch.randn(n, m).to(torch.bfloat16), torch.randn(n).to(torch.bfloat16)
t = torch.ops.fastreshuffle.amx_gemm_bias_elu(rows, w1, b1)
ref = torch.nn.functional.elu(rows.float() @ w1.float().t() + b1.float())
print("ok", bool(torch.isfinite(t.float()).all()), float((t.float() - ref).abs().max()))
"""


@needs_amx
@pytest.mark.parametrize("r,m,n,lda", [(64, 64, 32, 64), (64, 70, 32, 96), (45, 33, 16, 40), (7, 100, 16, 100)])
def test_amx_reads_nothing_past_the_last_row(r, m, n, lda):
    """The last row ends where an inaccessible page begins: a load past it would crash the process
    (in a child process here), which NaN in padding rows could not show (rows past the end are
    never stored)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", GUARD_PAGE, str(r), str(m), str(n), str(lda)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("ok True"), (p.returncode, p.stdout, p.stderr[-800:])


@needs_amx
def test_amx_bad_input():
    rows, w1, b1 = _case(8, 10, 4, 0)
    with pytest.raises(RuntimeError, match="must be bfloat16"):
        OPS.amx_gemm_bias_elu(rows.float(), w1, b1)
    with pytest.raises(RuntimeError, match="2-D"):
        OPS.amx_gemm_bias_elu(rows.view(2, 4, 10), w1, b1)
    with pytest.raises(RuntimeError, match="unit stride"):
        OPS.amx_gemm_bias_elu(rows.t().contiguous().t(), w1, b1)
    with pytest.raises(RuntimeError, match="input channels"):
        OPS.amx_gemm_bias_elu(rows, w1[:, :9], b1)
    with pytest.raises(RuntimeError, match="b1 has shape"):
        OPS.amx_gemm_bias_elu(rows, w1, b1[:3])


def test_amx_refused_clearly_without_it():
    if CPU_AMX:
        pytest.skip("this CPU has AMX")
    assert not OPS.dense_cpu_amx() and not backends.cpu_amx_gemm()
    rows, w1, b1 = _case(8, 10, 4, 0)
    with pytest.raises(RuntimeError, match="no AMX-BF16"):
        OPS.amx_gemm_bias_elu(rows, w1, b1)


@needs_amx
def test_amx_opcheck():
    rows, w1, b1 = _case(40, 37, 20, 0)
    torch.library.opcheck(OPS.amx_gemm_bias_elu.default, (rows.contiguous(), w1, b1))


@needs_amx
def test_bf16_dense_layer_takes_the_amx_kernel(monkeypatch):
    """A bf16 dense layer on a CPU with AMX: the 1x1 part on the AMX kernel by default, on torch's
    GEMM with the kernel capped; both within the torch path's bound, NaN after the prefix kept."""
    from test_dense_layer_bf16 import assert_within_layer_bound, make_case   # (tests/ops is on the path)

    calls = []
    real = OPS.amx_gemm_bias_elu

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(_dense_torch.torch.ops.fastreshuffle, "amx_gemm_bias_elu", spy, raising=False)
    for cap, expect in ((None, True), ("avx2", False)):
        buf, wts = make_case(1, 70, 16, 64, 33, 41, seed=9, extra=10)
        calls.clear()
        with backends.override(cpu_kernel=cap):
            dense_layer_(buf, 70, *wts)
        assert bool(calls) == expect, cap
        assert_within_layer_bound(buf, 70, wts, kernel=False)
        assert torch.isnan(buf[:, 86:].float()).all()


@needs_amx
@pytest.mark.parametrize("n", [1, 16, 17, 33])
def test_amx_epilogue_is_bias_elu_bit_for_bit(n):
    """The epilogue (bias + ELU + one bf16 rounding, 16 lanes a row, the last outputs under a
    mask) gives what ``bias_elu_`` gives, bit for bit, on every finite bf16 value, +-inf and NaN:
    with one input channel and weights 1 the tiles' sums are the inputs themselves.  (Subnormal
    inputs left out: the tiles flush them to zero.)"""
    x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    xf = x.float()
    x = x[(xf.abs() >= torch.finfo(torch.bfloat16).tiny) | (xf == 0) | xf.isinf() | xf.isnan()]
    g = torch.Generator().manual_seed(n)
    b1 = (torch.randn(n, generator=g) * 2).to(torch.bfloat16)
    got = OPS.amx_gemm_bias_elu(x.view(-1, 1), torch.ones(n, 1, dtype=torch.bfloat16), b1)
    want = x.view(-1, 1).expand(-1, n).clone()
    OPS.bias_elu_(want, b1)
    same = (got.view(torch.int16) == want.view(torch.int16)) | (got.isnan() & want.isnan())
    assert same.all(), (x.view(-1, 1).expand(-1, n)[~same][:5], got[~same][:5], want[~same][:5])
