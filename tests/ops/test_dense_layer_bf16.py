"""The bfloat16 CPU dense-layer kernel (AVX512-BF16, ``vdpbf16ps``: pairs of bf16 products
accumulated in float32), against float64.

Reference: float64 on the bf16-rounded inputs and weights (bf16 values are exact in float64).
Tolerance, derived from bf16's unit roundoff u = 2^-8 (8 significant bits, round to nearest even;
first order; the float32 accumulations add ~2^-24 per term, covered by the slack term):

* the kernel rounds the intermediate E = elu(conv1x1(x) + b1) to bf16 (|dE| <= u |E|) and the
  output (u |y|).  Direct 3x3:        |y - ref| <= u (|ref| + T) + 2^-16 T,
  with T = |w3| * |E| + |b3| (the 3x3 convolution of absolute values, computed in float64);
* Winograd F(2x2, 3x3) also rounds its transformed input V = B^T E B and weights U = G g G^T to
  bf16 (u |V|, u |U|), which reach the output through A^T (.) A:
                                      |y - ref| <= u (|ref| + T + 2 T_w) + 2^-16 (T + T_w),
  with T_w = |A^T| (sum_k |V_k| |U_k|) |A| per output tile (computed here in float64).

The second check is tight: a float64 emulation rounding to bf16 at the same points as the kernel
(E, V, U, the output) must agree within one bf16 ulp of the output plus 2^-7 of the largest
single product |w3| |E| (the kernel's float32 1x1 sum may round an E element the other way than
float64 does) -- a wrong index, weight or pairing is far outside that.

Skipped where the CPU lacks AVX512-BF16 (read from /proc/cpuinfo, independently of the kernel's
own detection: on such a CPU a kernel that does not detect it fails instead of skipping).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastreshuffle import backends
from fastreshuffle.ops import _dense_torch, dense_layer_
from fastreshuffle.ops import _extension  # noqa: F401  (torch.ops.fastreshuffle.*)
from helpers import cpu_flags

U = 2.0 ** -8       # bf16 unit roundoff
SLACK = 2.0 ** -16  # float32 accumulation, relative to the sums of absolute values


CPU_BF16 = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= cpu_flags()
CPU_AMX = {"amx_tile", "amx_bf16"} <= cpu_flags()
needs_bf16 = pytest.mark.skipif(not CPU_BF16, reason="CPU lacks AVX512-BF16")
ALGOS = [pytest.param(1, id="direct"), pytest.param(2, id="wino-ring"), pytest.param(3, id="wino-whole")]

# Winograd F(2x2, 3x3) matrices (as in csrc/dense_layer/cpu/dense_tile.inc)
BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


def bf16(t):
    """Round to bfloat16 (nearest even) and back to float64."""
    return t.to(torch.bfloat16).to(torch.float64)


def make_case(b, m, n, k, h, w, seed=0, extra=3):
    """A channels-last bf16 buffer [b, m + n + extra, h, w] poisoned with NaN after the prefix,
    and bf16 weights."""
    g = torch.Generator().manual_seed(seed)
    buf = torch.full((b, m + n + extra, h, w), float("nan")).contiguous(memory_format=torch.channels_last)
    buf[:, :m] = torch.randn(b, m, h, w, generator=g)
    buf = buf.to(torch.bfloat16)
    w1 = (torch.randn(k, m, 1, 1, generator=g) / m ** 0.5).to(torch.bfloat16)
    b1 = (torch.randn(k, generator=g) * 0.5).to(torch.bfloat16)
    w3 = (torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5).to(torch.bfloat16)
    b3 = (torch.randn(n, generator=g) * 0.1).to(torch.bfloat16)
    return buf, (w1, b1, w3, b3)


def intermediate64(x, w1, b1, round_bf16: bool):
    e = F.elu(F.conv2d(x.double(), w1.double(), b1.double()))
    return bf16(e) if round_bf16 else e


def winograd64(e, w3, round_bf16: bool):
    """(sum over channels of V U per tile, transformed back, without bias: [B, N, H, W]; and T_w:
    the same with absolute values of V, U, A^T) in float64, V / U rounded to bf16 if asked."""
    bsz, k, h, w = e.shape
    ty, tx = (h + 1) // 2, (w + 1) // 2
    ep = F.pad(e, (1, 2 * tx + 1 - w, 1, 2 * ty + 1 - h))            # [B, K, 2ty + 2, 2tx + 2]
    d = ep.unfold(2, 4, 2).unfold(3, 4, 2)                           # [B, K, ty, tx, 4, 4]
    v = BT @ d @ BT.T
    u = G @ w3.double() @ G.T                                        # [N, K, 4, 4]
    if round_bf16:
        v, u = bf16(v), bf16(u)

    def back(vv, uu, at):
        m = torch.einsum("bkyxij,nkij->bnyxij", vv, uu)
        y = at @ m @ at.T                                            # [B, N, ty, tx, 2, 2]
        return y.permute(0, 1, 2, 4, 3, 5).reshape(bsz, -1, 2 * ty, 2 * tx)[:, :, :h, :w]

    return back(v, u, AT), back(v.abs(), u.abs(), AT.abs())


def run_kernel(buf, m, wts, algo):
    n = wts[2].shape[0]
    torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :m], buf[:, m:m + n], *wts, 0, algo)
    return buf[:, m:m + n]


SHAPES = [  # b, m, n, k, h, w
    (1, 12, 8, 16, 7, 13),       # odd W, W not a multiple of a tile height
    (2, 5, 4, 12, 1, 1),         # odd M (the unpaired channel), 1x1 image
    (3, 7, 4, 6, 13, 7),         # odd M, small K
    (1, 33, 17, 47, 5, 29),      # odd M, K, N: partial panels and an unpaired bottleneck channel
    (1, 70, 70, 300, 3, 15),     # several panels in both convolutions
    (2, 200, 16, 64, 9, 31),     # block-2 ratios
    (1, 40, 64, 256, 4, 6),      # block-0 ratios
    (2, 9, 20, 24, 11, 2),       # odd H
    (1, 704, 64, 256, 3, 100),   # paper block 0 at 800 px: two Winograd chunks
]


@needs_bf16
def test_kernel_detects_avx512_bf16():
    assert torch.ops.fastreshuffle.dense_cpu_bf16()
    assert backends.cpu_bf16_kernel()
    with backends.override(cpu_kernel="avx2"):
        assert not backends.cpu_bf16_kernel()


@needs_bf16
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("b,m,n,k,h,w", SHAPES, ids=str)
def test_bf16_kernel_within_derived_bound_of_float64(algo, b, m, n, k, h, w):
    buf, (w1, b1, w3, b3) = make_case(b, m, n, k, h, w)
    x = buf[:, :m]
    e = intermediate64(x, w1, b1, round_bf16=False)
    ref = F.conv2d(e, w3.double(), b3.double(), padding=1)
    t = F.conv2d(e.abs(), w3.double().abs(), b3.double().abs(), padding=1)
    y = run_kernel(buf, m, (w1, b1, w3, b3), algo).double()
    bound = U * (ref.abs() + t) + SLACK * t
    if algo != 1:
        _, t_w = winograd64(bf16(e), w3, round_bf16=True)
        bound = bound + 2 * U * t_w + SLACK * t_w
    excess = ((y - ref).abs() - bound).max().item()
    assert excess <= 0, f"error exceeds the bf16 bound by {excess:.3g} (max |ref| {ref.abs().max():.3g})"
    assert torch.isnan(buf[:, m + n:].float()).all(), "wrote past its slice"


@needs_bf16
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("b,m,n,k,h,w", SHAPES[:8], ids=str)
def test_bf16_kernel_matches_bf16_emulation(algo, b, m, n, k, h, w):
    buf, (w1, b1, w3, b3) = make_case(b, m, n, k, h, w, seed=1)
    x = buf[:, :m]
    e = intermediate64(x, w1, b1, round_bf16=True)
    if algo == 1:
        pre = F.conv2d(e, w3.double(), None, padding=1)
    else:
        pre, _ = winograd64(e, w3, round_bf16=True)
    emu = bf16(pre + b3.double().view(1, -1, 1, 1))
    # one flipped E rounding: 2^-7 of the largest single product |w3| |E| reaching an output
    cols = F.unfold(e.abs(), 3, padding=1)                                   # [B, K*9, HW]
    biggest = (w3.double().abs().reshape(n, -1, 1) * cols[:, None]).amax(dim=2).view(b, n, h, w)
    ulp = torch.where(emu == 0, torch.zeros_like(emu), 2.0 ** (torch.floor(torch.log2(emu.abs())) - 7))
    y = run_kernel(buf, m, (w1, b1, w3, b3), algo).double()
    excess = ((y - emu).abs() - ulp - 2.0 ** -7 * biggest).max().item()
    assert excess <= 0, f"differs from the bf16 emulation by {excess:.3g} more than allowed"


@needs_bf16
@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_kernel_strided_views_and_poison(algo):
    """Input: a spatial crop of a channel prefix at a channel offset; output: a slice of another
    buffer full of NaN, which must stay NaN outside the slice."""
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 40, 11, 17, generator=g).contiguous(memory_format=torch.channels_last).to(torch.bfloat16)
    x = src[:, 3:24, 1:10, 2:15]
    _, wts = make_case(1, 21, 6, 20, 1, 1, seed=4)
    dst = torch.full((2, 9, 13, 16), float("nan"), dtype=torch.bfloat16).permute(0, 3, 1, 2)
    y = dst[:, 5:11]
    torch.ops.fastreshuffle.dense_layer_cpu_(x, y, *wts, 0, algo)
    w1, b1, w3, b3 = wts
    e = intermediate64(x, w1, b1, round_bf16=False)
    ref = F.conv2d(e, w3.double(), b3.double(), padding=1)
    t = F.conv2d(e.abs(), w3.double().abs(), b3.double().abs(), padding=1)
    bound = U * (ref.abs() + t) + SLACK * t
    if algo != 1:
        bound = bound + (2 * U + SLACK) * winograd64(bf16(e), w3, round_bf16=True)[1]
    assert ((y.double() - ref).abs() <= bound).all()
    assert torch.isnan(dst[:, :5].float()).all() and torch.isnan(dst[:, 11:].float()).all()


@needs_bf16
def test_bf16_kernel_bad_input():
    buf, wts = make_case(1, 8, 4, 8, 5, 5)
    with pytest.raises(RuntimeError, match="isa must be 0"):
        torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :8], buf[:, 8:12], *wts, 1, 0)
    with pytest.raises(RuntimeError, match="weights must be BFloat16"):
        torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :8], buf[:, 8:12], *[t.float() for t in wts], 0, 0)
    with pytest.raises(RuntimeError, match="y has dtype"):
        torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :8], buf[:, 8:12].float(), *wts, 0, 0)


def test_bf16_without_the_instructions_is_refused_clearly():
    if CPU_BF16:
        pytest.skip("this CPU has AVX512-BF16")
    buf, wts = make_case(1, 8, 4, 8, 5, 5)
    with pytest.raises(RuntimeError, match="AVX512-BF16"):
        torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :8], buf[:, 8:12], *wts, 0, 0)


def test_bf16_dense_layer_runs_the_kernel_or_falls_back(monkeypatch):
    """dense_layer_ on a channels-last bf16 buffer calls the kernel exactly where the CPU has the
    instructions, the kernel is not capped and the CPU has no AMX tiles (there oneDNN runs bf16
    faster) unless the kernel is asked for by name; otherwise torch's bf16 GEMM and convolution
    with the extension's bias + ELU pass -- both within the derived bound of float64."""
    calls = []
    real = torch.ops.fastreshuffle.dense_layer_cpu_

    class Spy:
        def __call__(self, *args):
            calls.append(args[0].dtype)
            return real(*args)

    monkeypatch.setattr(_dense_torch.torch.ops.fastreshuffle, "dense_layer_cpu_", Spy(), raising=False)
    m, n, k = 10, 6, 12
    for cap, expect in ((None, CPU_BF16 and not CPU_AMX), ("avx512", CPU_BF16), ("avx2", False)):
        buf, wts = make_case(1, m, n, k, 6, 9, seed=5)
        calls.clear()
        with backends.override(cpu_kernel=cap):
            dense_layer_(buf, m, *wts)
        assert calls == ([torch.bfloat16] if expect else []), (cap, calls)
        assert_within_layer_bound(buf, m, wts, kernel=expect)


def assert_within_layer_bound(buf, m, wts, kernel: bool):
    """The slice after the prefix of ``buf`` is the dense layer of ``wts`` within the derived bound of
    float64: the kernel's (Winograd by default), or the torch path's (``kernel=False``)."""
    w1, b1, w3, b3 = wts
    n = w3.shape[0]
    z = F.conv2d(buf[:, :m].double(), w1.double(), b1.double())
    e = F.elu(z)
    ref = F.conv2d(e, w3.double(), b3.double(), padding=1)
    t = F.conv2d(e.abs(), w3.double().abs(), b3.double().abs(), padding=1)
    if kernel:
        t_w = winograd64(bf16(e), w3, round_bf16=True)[1]
        bound = U * (ref.abs() + t + 2 * t_w) + SLACK * (t + t_w)
    else:        # torch: the GEMM's output g = z - b1 rounded to bf16 before the bias + ELU too
        g = (z - b1.double().view(1, -1, 1, 1)).abs()     # (|dE| <= u (|g| + |E|))
        t_z = F.conv2d(g, w3.double().abs(), None, padding=1)
        bound = U * (ref.abs() + t + t_z) + SLACK * (t + t_z)
    y = buf[:, m:m + n].double()
    assert torch.isfinite(y).all()
    assert ((y - ref).abs() <= bound).all()


@pytest.mark.parametrize("cap", ["avx2", "off"])
@pytest.mark.parametrize("b,m,n,k,h,w,extra", [
    (1, 144, 16, 64, 128, 128, 32),   # the shape of a `small` block-1 layer that came back all NaN
    (2, 37, 8, 32, 40, 33, 27),       # odd prefix, batch 2
])
def test_bf16_torch_path_never_reads_past_the_prefix(cap, b, m, n, k, h, w, extra):
    """The torch path of a bf16 layer with torch's GEMM (the kernels capped) on a buffer whose
    channels after the prefix are NaN: torch's bf16 GEMM (2.13, oneDNN) reads a strided prefix's
    rows past its last channel, so the prefix goes to it as a contiguous copy
    (``_dense_torch._gemm_bias_elu``; on a CPU with AMX the default is the AMX kernel, tested in
    test_amx_gemm.py)."""
    buf, wts = make_case(b, m, n, k, h, w, seed=7, extra=extra)
    with backends.override(cpu_kernel=cap):
        dense_layer_(buf, m, *wts)
    assert_within_layer_bound(buf, m, wts, kernel=False)
    assert torch.isnan(buf[:, m + n:].float()).all()
