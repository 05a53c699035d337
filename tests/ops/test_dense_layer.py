"""Tests of the dense-layer op (CPU path, autograd, opcheck), the fused Triton kernel through the
Triton interpreter (in a subprocess) and natively on CUDA.

Tolerances, relative to the largest magnitude of the float64 reference output:

==================  ============  ==========================================
path                dtype         max |out - ref| / max |ref|
==================  ============  ==========================================
CPU torch path      float32       1e-5
Triton (interp.)    float32       1e-5   (IEEE fp32 dots, fp32 accumulation)
Triton (interp.)    float16       5e-3   (fp16 inputs/intermediate, fp32 acc.)
Triton (CUDA)       float32       1e-4   (IEEE fp32 dots)
Triton (CUDA)       float16       5e-3
Triton (CUDA)       bfloat16      3e-2
==================  ============  ==========================================

The interpreter tests need ``TRITON_INTERPRET=1`` before ``triton`` is imported, so
``test_triton_interpreter`` re-runs this file's ``interp`` tests in a fresh Python process with
that variable set; they are skipped in the normal process (``FASTRESHUFFLE_TEST_INTERP`` unset).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fastreshuffle import backends
from fastreshuffle.ops import _dense_torch, dense as dense_op
from fastreshuffle.ops import dense_block, dense_layer, dense_layer_, dense_layer_reshuffle_

HAS_TRITON = importlib.util.find_spec("triton") is not None
IN_INTERP_PROCESS = os.environ.get("FASTRESHUFFLE_TEST_INTERP") == "1"
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float64: 1e-12}
CUDA_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}

interp = pytest.mark.skipif(not IN_INTERP_PROCESS, reason="runs in the TRITON_INTERPRET=1 subprocess")
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs CUDA + Triton")


def make_weights(m, k, n, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(k, m, 1, 1, generator=g) / m ** 0.5
    b1 = torch.randn(k, generator=g) * 0.5
    w3 = torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5
    b3 = torch.randn(n, generator=g) * 0.1
    return [t.to(dtype=dtype, device=device) for t in (w1, b1, w3, b3)]


def ref64(x, w1, b1, w3, b3):
    d = torch.float64
    return _dense_torch.reference_dense_layer(x.cpu().to(d), w1.cpu().to(d), b1.cpu().to(d),
                                          w3.cpu().to(d), b3.cpu().to(d))


def rel_err(out, ref):
    return ((out.cpu().double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def make_buf(b, c, h, w, dtype, device, channels_last, seed=1):
    g = torch.Generator().manual_seed(seed)
    buf = torch.randn(b, c, h, w, generator=g).to(dtype=dtype, device=device)
    if channels_last:
        buf = buf.contiguous(memory_format=torch.channels_last)
    return buf


def check_inplace(run, b, m, n, k, h, w, dtype, device="cpu", channels_last=False, extra=3, tol=None):
    """Run ``run(buf, m, weights)`` on a buffer whose target slice is NaN-poisoned; check the
    slice against float64 and that every other channel is bit-identical."""
    buf = make_buf(b, m + n + extra, h, w, dtype, device, channels_last)
    wts = make_weights(m, k, n, dtype, device)
    ref = ref64(buf[:, :m], *wts)
    buf[:, m:m + n] = float("nan")
    before = buf.clone()
    run(buf, m, wts)
    out = buf[:, m:m + n]
    assert not torch.isnan(out).any()
    assert rel_err(out, ref) <= (tol or TOL[dtype]), rel_err(out, ref)
    assert torch.equal(buf[:, :m], before[:, :m])
    assert torch.equal(buf[:, m + n:], before[:, m + n:])


# ----------------------------------------------------------------------------- CPU op
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("b,m,n,k,h,w", [(1, 12, 8, 16, 7, 13), (2, 5, 4, 12, 1, 1), (3, 7, 4, 6, 13, 7)])
def test_cpu_inplace(b, m, n, k, h, w, channels_last):
    check_inplace(lambda buf, m, wts: dense_layer_(buf, m, *wts), b, m, n, k, h, w, torch.float32,
                  channels_last=channels_last)


def test_cpu_inplace_float64_exactish():
    check_inplace(lambda buf, m, wts: dense_layer_(buf, m, *wts), 2, 6, 4, 8, 5, 6, torch.float64)


def test_cpu_reshuffle_variant():
    wts = make_weights(5, 8, 4)
    src = torch.randn(2, 20, 4, 7)
    buf = torch.full((2, 5 + 4 + 2, 8, 14), float("nan"))
    dense_layer_reshuffle_(buf, src, *wts)
    x = F.pixel_shuffle(src, 2)
    assert torch.equal(buf[:, :5], x)
    assert rel_err(buf[:, 5:9], ref64(x, *wts)) <= 1e-5
    assert torch.isnan(buf[:, 9:]).all()


def test_memory_the_kernels_cannot_write_is_refused():
    """An expanded buf (outputs landing on one another) and a src inside buf's memory (read while
    the prefix is written) gave wrong values with no error."""
    wts = make_weights(4, 8, 4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="internal overlap"):
            dense_layer_(torch.zeros(1, 8, 1, 4).expand(1, 8, 4, 4), 4, *wts)
        with pytest.raises(ValueError, match="internal overlap"):   # channels folded onto each other
            dense_layer_(torch.zeros(1000).as_strided((1, 8, 6, 6), (1000, 2, 6, 1)), 4, *wts)
        buf = torch.zeros(1, 8, 8, 8)
        src = buf.view(-1)[:16 * 4 * 4].view(1, 16, 4, 4)
        with pytest.raises(ValueError, match="src shares memory with buf"):
            dense_layer_reshuffle_(buf, src, *wts)
        other = torch.randn(1, 16, 4, 4)                 # a separate tensor is fine
        dense_layer_reshuffle_(buf, other, *wts)
        assert torch.equal(buf[:, :4], F.pixel_shuffle(other, 2))


def test_empty_sides_and_numpy_channel_counts():
    import numpy as np
    wts = make_weights(4, 8, 4)
    assert dense_layer(torch.zeros(1, 4, 0, 5), *wts).shape == (1, 4, 0, 5)
    buf = torch.randn(1, 8, 5, 6)
    ref = ref64(buf[:, :4], *wts)
    with torch.no_grad():
        dense_layer_(buf, np.int64(4), *wts)
    assert rel_err(buf[:, 4:], ref) <= 1e-5


def test_functional_matches_reference():
    x = torch.randn(2, 6, 7, 5)
    wts = make_weights(6, 8, 4)
    assert rel_err(dense_layer(x, *wts), ref64(x, *wts)) <= 1e-5


def test_validation_errors():
    buf = torch.zeros(1, 10, 4, 4)
    w1, b1, w3, b3 = make_weights(6, 8, 4)
    with pytest.raises(ValueError, match="exceeds"):
        dense_layer_(buf, 7, *make_weights(7, 8, 4))
    with pytest.raises(ValueError, match="w1 must have shape"):
        dense_layer_(buf, 5, w1, b1, w3, b3)
    with pytest.raises(TypeError, match="dtype"):
        dense_layer_(buf, 6, w1.double(), b1, w3, b3)
    with pytest.raises(ValueError, match="b3 must have shape"):
        dense_layer_(buf, 6, w1, b1, w3, b3[:3])
    with pytest.raises(ValueError, match="4-D"):
        dense_layer_(buf[0], 6, w1, b1, w3, b3)
    with pytest.raises(TypeError, match="c_in must be an int"):
        dense_layer_(buf, 6.0, w1, b1, w3, b3)
    with pytest.raises(TypeError, match="supported"):
        dense_layer_(buf.int(), 6, w1, b1, w3, b3)
    with pytest.raises(ValueError, match="twice src"):
        dense_layer_reshuffle_(torch.zeros(1, 10, 4, 5), torch.zeros(1, 24, 2, 2), w1, b1, w3, b3)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        dense_layer_(buf, 6, w1.requires_grad_(), b1, w3, b3)


def test_forward_mode_ad_is_refused_not_zero():
    """torch.func.jvp through dense_layer returned an all-zero tangent and forward_ad a None one,
    with no error: a torch custom op whose inputs do not require grad runs no autograd formula."""
    import torch.autograd.forward_ad as fwad
    x, t = torch.randn(1, 4, 5, 6, dtype=torch.float64), torch.randn(1, 4, 5, 6, dtype=torch.float64)
    wts = make_weights(4, 8, 2, torch.float64)
    with pytest.raises(NotImplementedError, match="dense_layer: forward-mode AD"):
        torch.func.jvp(lambda z: dense_layer(z, *wts), (x,), (t,))
    with pytest.raises(NotImplementedError, match="dense_layer: forward-mode AD"):   # a weight's tangent
        torch.func.jvp(lambda w: dense_layer(x, w, *wts[1:]), (wts[0],), (torch.ones_like(wts[0]),))
    with pytest.raises(NotImplementedError, match="dense_block: forward-mode AD"):
        torch.func.jvp(lambda z: dense_block(z, [wts]), (x,), (t,))
    buf = torch.randn(1, 6, 5, 6, dtype=torch.float64)
    with fwad.dual_level():
        with pytest.raises(NotImplementedError, match="dense_layer_: forward-mode AD"):
            dense_layer_(fwad.make_dual(buf, torch.ones_like(buf)), 4, *wts)
        with pytest.raises(NotImplementedError, match="dense_layer_reshuffle_: forward-mode AD"):
            src = torch.randn(1, 16, 2, 3, dtype=torch.float64)
            dense_layer_reshuffle_(torch.zeros(1, 6, 4, 6, dtype=torch.float64),
                                   fwad.make_dual(src, torch.ones_like(src)), *wts)
    assert torch.equal(dense_layer(x, *wts), dense_layer(x, *wts))   # no tangent: runs as before


def test_torch_func_grad_is_refused_clearly():
    """torch.func.grad / jacrev through dense_layer and dense_block failed inside torch (on
    autograd.Function's setup_context); now said plainly.  Plain autograd works (the tests above)."""
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    wts = make_weights(4, 6, 2, dtype=torch.float64)
    for f in (lambda z: dense_layer(z, *wts).sum(), lambda z: dense_block(z, [wts]).sum()):
        for transform in (torch.func.grad, torch.func.jacrev):
            with pytest.raises(NotImplementedError, match="torch.func's grad / jacrev / jvp"):
                transform(f)(x)


@pytest.mark.parametrize("channels_last", [False, True])
def test_negated_views(channels_last):
    """A lazily negated buf (torch._neg_view) as the in-place ops' buffer tripped an internal
    assert in torch's fallback and could corrupt the heap: refused.  As read-only arguments
    (weights, x, src) negated views are read as their values."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    wts = make_weights(4, 8, 4)
    buf = torch.randn(1, 8, 5, 5).contiguous(memory_format=fmt)
    with torch.no_grad():
        with pytest.raises(ValueError, match="lazily negated"):
            dense_layer_(torch._neg_view(buf), 4, *wts)
        with pytest.raises(ValueError, match="lazily negated"):
            dense_layer_reshuffle_(torch._neg_view(torch.zeros(1, 8, 4, 4)), torch.zeros(1, 16, 2, 2), *wts)
        ref = ref64(buf[:, :4], *wts)
        for i in range(4):
            negated = list(wts)
            negated[i] = torch._neg_view(-wts[i])
            b = buf.clone()
            dense_layer_(b, 4, *negated)
            assert rel_err(b[:, 4:], ref) <= 1e-5, i
        x = buf[:, :4].contiguous(memory_format=fmt)
        assert rel_err(dense_layer(torch._neg_view(-x), *wts), ref) <= 1e-5


def test_sparse_tensors_are_refused_with_a_clear_error():
    wts = make_weights(4, 8, 4)
    with pytest.raises(TypeError, match="x is a sparse_coo tensor"):
        dense_layer(torch.zeros(1, 4, 3, 3).to_sparse(), *wts)


def test_empty_images_have_zero_gradients():
    """A 0-high, 0-wide or empty batch went through the forward and failed in the backward
    (convolution_backward refuses an empty image): gradients are zeros, as torch's composition
    gives them."""
    for shape in [(1, 4, 0, 5), (1, 4, 5, 0), (0, 4, 5, 5)]:
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        wts = [t.requires_grad_() for t in make_weights(4, 8, 2, torch.float64)]
        dense_layer(x, *wts).sum().backward()
        dense_block(x, [wts]).sum().backward()
        assert x.grad.shape == x.shape and all(torch.equal(w.grad, torch.zeros_like(w)) for w in wts), shape


def test_gradcheck_functional():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    wts = [t.requires_grad_() for t in make_weights(3, 4, 2, torch.float64)]
    assert torch.autograd.gradcheck(dense_layer, (x, *wts))
    assert torch.autograd.gradgradcheck(dense_layer, (x, *wts), fast_mode=True)


def test_gradcheck_dense_block():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    p1 = [t.requires_grad_() for t in make_weights(3, 4, 2, torch.float64, seed=1)]
    p2 = [t.requires_grad_() for t in make_weights(5, 4, 2, torch.float64, seed=2)]
    assert torch.autograd.gradcheck(lambda x, *p: dense_block(x, [p[:4], p[4:]]), (x, *p1, *p2))


def test_dense_block_says_it_is_differentiable_once():
    """A gradient penalty through it gave torch's "appears to not have been used in the graph"
    (which suggests allow_unused=True, i.e. None for an answer): now an error naming the way out."""
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    wts = [t.requires_grad_() for t in make_weights(3, 4, 2, torch.float64)]
    with pytest.raises(RuntimeError, match="differentiable once.*ReshuffleNet"):
        torch.autograd.grad(dense_block(x, [wts]).sum(), x, create_graph=True)
    g, = torch.autograd.grad(dense_block(x, [wts]).sum(), x)       # once: fine
    assert g.shape == x.shape


def test_opcheck():
    wts = make_weights(5, 6, 4, torch.float64)
    buf = torch.randn(1, 11, 4, 6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastreshuffle.dense_layer_.default, (buf, 5, *wts))
    src = torch.randn(1, 20, 2, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastreshuffle.dense_layer_reshuffle_.default, (buf, src, *wts))
    x = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.fastreshuffle.dense_layer.default,
                          (x, *[w.requires_grad_() for w in wts]))


def test_the_registered_ops_check_their_arguments_as_the_functions_do():
    """torch.ops.fastreshuffle.dense_layer_ is public too: a c_in under 1 or past the buffer wrote
    nothing and said nothing; the other two ops failed with torch's messages from deep inside."""
    w1, b1, w3, b3 = make_weights(6, 8, 4)
    buf = torch.randn(1, 10, 4, 4)
    before = buf.clone()
    for c_in, said in ((-4, "c_in must be >= 1"), (0, "c_in must be >= 1"), (12, r"\[K, 12, 1, 1\]"),
                       (7, r"\[K, 7, 1, 1\]")):
        with pytest.raises(ValueError, match=said):
            torch.ops.fastreshuffle.dense_layer_(buf, c_in, w1, b1, w3, b3)
    with pytest.raises(ValueError, match="exceeds the 10 channels"):
        torch.ops.fastreshuffle.dense_layer_(buf, 6, w1, b1, torch.randn(5, 8, 3, 3), torch.randn(5))
    assert torch.equal(buf, before)
    x = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match="b3 must have shape"):
        torch.ops.fastreshuffle.dense_layer(x, w1, b1, w3, torch.randn(5))
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.fastreshuffle.dense_layer(x.double(), w1, b1, w3, b3)
    with pytest.raises(ValueError, match="C_src/4"):
        torch.ops.fastreshuffle.dense_layer_reshuffle_(buf, torch.randn(1, 24, 2, 2), w1, b1,
                                                       torch.randn(5, 8, 3, 3), torch.randn(5))
    assert torch.equal(buf, before)


def test_torch_compile_sees_op():
    wts = make_weights(5, 6, 4)

    def f(buf):
        torch.ops.fastreshuffle.dense_layer_(buf, 5, *wts)
        return buf * 2

    buf = torch.randn(1, 9, 5, 6)
    expect = buf.clone()
    dense_layer_(expect, 5, *wts)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(buf)
    assert torch.allclose(out, expect * 2)


def test_torch_compile_fullgraph_of_the_public_functions():
    """dense_layer_ and dense_layer_reshuffle_ (the Python functions, not the raw ops) under
    torch.compile(fullgraph=True): their buffer check (is_neg) broke the graph, an error."""
    from fastreshuffle.ops import dense_layer_reshuffle_, reshuffle_up
    wts, wr = make_weights(5, 6, 4), make_weights(2, 6, 4)

    def f(buf, big, src):
        dense_layer_(buf, 5, *wts)
        dense_layer_reshuffle_(big, src, *wr)
        return buf * 2, big * 2

    buf, big, src = torch.randn(1, 9, 5, 6), torch.randn(1, 6, 10, 12), torch.randn(1, 8, 5, 6)
    expect, ebig = buf.clone(), big.clone()
    with torch.no_grad():
        dense_layer_(expect, 5, *wts)
        dense_layer_reshuffle_(ebig, src, *wr)
        out, obig = torch.compile(f, backend="aot_eager", fullgraph=True)(buf, big, src)
    assert torch.equal(out, expect * 2) and torch.equal(obig, ebig * 2)
    assert torch.equal(ebig[:, :2], reshuffle_up(src, 2))


# ------------------------------------------------ the extension's CPU kernel (float32)
def cpuinfo_isa():
    """The instruction set the CPU offers, read from /proc/cpuinfo, independently of the kernel's
    own detection: 2 (avx512f), 1 (avx2 + fma), 0; None where /proc/cpuinfo has no x86 flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return 2 if "avx512f" in flags else 1 if {"avx2", "fma"} <= flags else 0


KERNEL_ISA = int(torch.ops.fastreshuffle.dense_cpu_isa())   # what the kernel detects (best_isa)
# The skip conditions below follow the CPU, not the kernel: on a CPU with AVX-512 a kernel
# that detects or accepts less fails these tests instead of skipping them.
CPU_ISA = cpuinfo_isa() if cpuinfo_isa() is not None else KERNEL_ISA
ISAS = [pytest.param(1, id="avx2", marks=pytest.mark.skipif(CPU_ISA < 1, reason="CPU lacks AVX2 + FMA")),
        pytest.param(2, id="avx512", marks=pytest.mark.skipif(CPU_ISA < 2, reason="CPU lacks AVX-512"))]


@pytest.mark.skipif(cpuinfo_isa() is None, reason="no x86 flags in /proc/cpuinfo")
def test_kernel_detects_the_cpus_instruction_set():
    """The kernel's best instruction set, and the one the CPU path runs by default, is the best
    the CPU has (a kernel that picks AVX2 on an AVX-512 CPU fails here)."""
    assert KERNEL_ISA == cpuinfo_isa()
    code = "from fastreshuffle import backends; print(backends.cpu_kernel_isa())"
    env = {k: v for k, v in os.environ.items() if k != backends.CPU_KERNEL_ENV}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == cpuinfo_isa()


def test_cpu_path_passes_the_detected_isa(monkeypatch):
    """dense_layer_ on a channels-last float32 buffer calls the kernel with the best instruction
    set (or the cap of an override), not a lower one."""
    if CPU_ISA == 0:
        pytest.skip("no CPU kernel here")
    seen = []
    real = torch.ops.fastreshuffle.dense_layer_cpu_

    class Spy:
        def __call__(self, *args):
            seen.append(args[6] if len(args) > 6 else 0)   # (x, y, w1, b1, w3, b3, isa)
            return real(*args)

    monkeypatch.setattr(_dense_torch.torch.ops.fastreshuffle, "dense_layer_cpu_", Spy(), raising=False)
    wts = make_weights(6, 8, 4)
    buf = make_buf(1, 10, 5, 7, torch.float32, "cpu", True)
    with backends.override(cpu_kernel="avx512"):
        dense_layer_(buf, 6, *wts)
    with backends.override(cpu_kernel="avx2"):
        dense_layer_(buf, 6, *wts)
    assert seen == [CPU_ISA, 1], seen


# 3x3 algorithms: 1 direct, 2 Winograd F(2x2, 3x3) with the intermediate in a row ring,
# 3 Winograd on the whole intermediate
ALGOS = [pytest.param(1, id="direct"), pytest.param(2, id="wino-ring"), pytest.param(3, id="wino-whole")]


def _cpu_kernel(isa, algo=0):
    def run(buf, m, wts):
        n = wts[2].shape[0]
        torch.ops.fastreshuffle.dense_layer_cpu_(buf[:, :m], buf[:, m:m + n], *wts, isa, algo)
    return run


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("b,m,n,k,h,w", [
    (1, 12, 8, 16, 7, 13),      # W not a multiple of any tile height
    (2, 5, 4, 12, 1, 1),        # 1x1 image: every 3x3 tap but the centre is padding
    (3, 7, 4, 6, 13, 7),
    (1, 33, 17, 47, 5, 29),     # K, N not multiples of 8/16 (partial panels)
    (1, 70, 70, 300, 3, 15),    # several panels in both convolutions
    (2, 200, 16, 64, 9, 31),    # the network's block-2 shape ratios
    (1, 40, 64, 256, 4, 6),     # block-0 ratios: N = 64, K = 256
    (2, 9, 20, 24, 11, 2),      # odd H (last Winograd tile row half outside), several strips per task
    (1, 6, 8, 16, 2, 1),        # odd W = 1
])
def test_cpu_kernel_matches_float64(isa, algo, b, m, n, k, h, w):
    check_inplace(_cpu_kernel(isa, algo), b, m, n, k, h, w, torch.float32, channels_last=True)


def winograd_chunks(w, k):
    """Chunks of Winograd tiles per strip (csrc/dense_layer/cpu/dense_layer_kernel.cpp,
    winograd_tcap): tiles of 2 columns, at most max(8, 12288 / K) per chunk."""
    tx_all, tmax = (w + 1) // 2, max(8, 12288 // k)
    return -(-tx_all // tmax)


# The paper preset's layers at the widths where a strip no longer fits one chunk of Winograd
# tiles (the multi-chunk loop: --tile 0 on a photo >= ~800 px wide, or wider tiles): block 0
# (N = 64, K = 256) from 97 px at 1/8 resolution, block 1 (N = 32, K = 128) from 193 px at 1/4,
# block 2 (N = 16, K = 64) from 385 px at 1/2; and block 0's input widths M = 704-1280.
WIDE_SHAPES = [  # b, m, n, k, h, w
    (1, 704, 64, 256, 3, 100),      # paper block 0, layer 9, an 800-px-wide input: 2 chunks of 25 tiles
    (1, 1216, 64, 256, 4, 101),     # block 0's last layer, odd W: chunks of 26 + 25 tiles, half a tile at the edge
    (1, 1280, 64, 256, 2, 97),      # M = 1280 (the block's output width), the first multi-chunk width
    (2, 960, 64, 256, 2, 200),      # a 1600-px input: 3 chunks (34 + 34 + 32), batch 2
    (1, 464, 32, 128, 3, 200),      # block 1 at 800 px: 2 chunks
    (1, 232, 16, 64, 2, 401),       # block 2 at 802 px: 2 chunks, odd W
    (1, 40, 24, 1536, 9, 35),       # K = 1536: the 8-tile floor, 3 chunks; 9 rows: several ring tasks
]


def test_wide_shapes_take_several_chunks():
    assert all(winograd_chunks(w, k) >= 2 for _, _, _, k, _, w in WIDE_SHAPES)
    assert winograd_chunks(800 // 8, 256) == 2 and winograd_chunks(96, 256) == 1


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("b,m,n,k,h,w", WIDE_SHAPES, ids=str)
def test_cpu_kernel_wide_and_first_block_shapes(isa, algo, b, m, n, k, h, w):
    check_inplace(_cpu_kernel(isa, algo), b, m, n, k, h, w, torch.float32, channels_last=True)


@pytest.mark.slow
def test_fast_network_paper_preset_wide_untiled():
    """FastReshuffleNet (paper preset) on a 808 x 16 input in one piece (what --tile 0 does):
    block 0 at 101 px wide runs the multi-chunk Winograd loop; against ReshuffleNet."""
    from helpers import model_pair

    ref, fast = (m.eval() for m in model_pair("paper"))
    x = torch.rand(1, 3, 16, 808)
    with torch.inference_mode():
        err = (fast(x) - ref(x)).abs().max().item()
    assert err <= 1e-4, err


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("isa", ISAS)
def test_cpu_kernel_strided_views(isa, algo):
    """Input: a spatial crop of a channel prefix; output: a slice of another buffer."""
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 40, 11, 17, generator=g).contiguous(memory_format=torch.channels_last)
    x = src[:, 3:24, 1:10, 2:15]                    # pixel strides of the big buffer, channel offset 3
    wts = make_weights(21, 20, 6)
    dst = torch.full((2, 9, 13, 16), float("nan")).permute(0, 3, 1, 2)  # [2, 16, 9, 13], channels last
    y = dst[:, 5:11]
    torch.ops.fastreshuffle.dense_layer_cpu_(x, y, *wts, isa, algo)
    assert rel_err(y, ref64(x, *wts)) <= TOL[torch.float32]
    assert torch.isnan(dst[:, :5]).all() and torch.isnan(dst[:, 11:]).all()


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("isa", ISAS)
def test_cpu_kernel_repeated_calls_and_extremes(isa, algo):
    """Later calls reuse heap memory (the workspace is not fresh zeros); large negative
    pre-activations saturate the ELU at -1."""
    wts = make_weights(9, 12, 5)
    wts[1] = wts[1] - 200.0 * (torch.arange(12) % 2)                  # half the ELUs at ~ -1
    for seed in range(3):
        buf = make_buf(1, 9 + 5, 6, 19, torch.float32, "cpu", True, seed=seed)
        ref = ref64(buf[:, :9], *wts)
        _cpu_kernel(isa, algo)(buf, 9, wts)
        assert rel_err(buf[:, 9:], ref) <= TOL[torch.float32]


def test_cpu_kernel_bad_input():
    if CPU_ISA == 0:
        pytest.skip("no CPU kernel here")
    op = torch.ops.fastreshuffle.dense_layer_cpu_
    w1, b1, w3, b3 = make_weights(6, 8, 4)
    x = torch.zeros(1, 6, 4, 4).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(1, 4, 4, 4).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="unit stride along its channels"):
        op(torch.zeros(1, 6, 4, 4), y, w1, b1, w3, b3)
    with pytest.raises(RuntimeError, match="float32"):
        op(x.double(), y, w1, b1, w3, b3)
    with pytest.raises(RuntimeError, match="y must have shape"):
        op(x, y[:, :3], w1, b1, w3, b3)
    with pytest.raises(RuntimeError, match="w1 must have shape"):
        op(x, y, w1[:, :5], b1, w3, b3)
    with pytest.raises(RuntimeError, match="b3 must have shape"):
        op(x, y, w1, b1, w3, b3[:2])
    with pytest.raises(RuntimeError, match="isa must be"):
        op(x, y, w1, b1, w3, b3, 7)
    with pytest.raises(RuntimeError, match="algo must be"):
        op(x, y, w1, b1, w3, b3, 0, 4)
    with pytest.raises(RuntimeError, match="4-D"):
        op(x[0], y, w1, b1, w3, b3)


def test_cpu_kernel_opcheck():
    if CPU_ISA == 0:
        pytest.skip("no CPU kernel here")
    wts = make_weights(5, 6, 4)
    buf = torch.randn(1, 11, 4, 6).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.fastreshuffle.dense_layer_cpu_.default, (buf[:, :5], buf[:, 5:9], *wts))


def test_cpu_path_uses_the_kernel_for_channels_last_float32():
    """dense_layer_ on a channels-last float32 buffer gives the kernel's result bit for bit."""
    if CPU_ISA == 0:
        pytest.skip("no CPU kernel here")
    wts = make_weights(10, 16, 8)
    buf = make_buf(1, 20, 9, 11, torch.float32, "cpu", True)
    expect = buf.clone()
    torch.ops.fastreshuffle.dense_layer_cpu_(expect[:, :10], expect[:, 10:18], *wts)
    dense_layer_(buf, 10, *wts)
    assert torch.equal(buf, expect)


# ------------------------------------------------------------- Triton interpreter
@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.skipif(IN_INTERP_PROCESS, reason="already inside the interpreter subprocess")
def test_triton_interpreter(triton_interpreter):
    """Run the ``interp`` tests of this file in a subprocess with TRITON_INTERPRET=1."""
    triton_interpreter(__file__, "interp_")


def _launch(cfg, **kw):
    from fastreshuffle.ops.dense import _triton_kernels as _kernels
    launch = _kernels().launch_dense_layer

    def run(buf, m, wts):
        n = wts[2].shape[0]
        launch(buf[:, :m], buf[:, m:m + n], *wts, config=cfg, **kw)
    return run


# config A: tiles/blocks smaller than the shapes, none of M, N, K, H, W divides the blocks
CFG_A = dict(TILE_H=4, TILE_W=8, BLOCK_HP=32, BLOCK_M=16, BLOCK_K=16, BLOCK_N=16)
# config B: one tile covers everything, BLOCK_N smaller than N (several N blocks)
CFG_B = dict(TILE_H=8, TILE_W=16, BLOCK_HP=64, BLOCK_M=16, BLOCK_K=32, BLOCK_N=16)

INTERP_SHAPES = [  # b, m, n, k, h, w
    (2, 12, 8, 20, 7, 13),
    (1, 5, 4, 12, 1, 1),
    (3, 3, 4, 8, 13, 7),
]


@interp
@pytest.mark.parametrize("cfg", [CFG_A, CFG_B], ids=["A", "B"])
@pytest.mark.parametrize("shape", INTERP_SHAPES, ids=str)
def test_interp_fp32(shape, cfg):
    check_inplace(_launch(cfg), *shape, torch.float32)


@interp
def test_interp_fp32_channels_last():
    check_inplace(_launch(CFG_A), 2, 12, 8, 20, 7, 13, torch.float32, channels_last=True)


@interp
@pytest.mark.parametrize("kind", ["strided", "expanded"])
def test_interp_strided_biases(kind):
    """Biases as views with a stride (every other element) or expanded (stride 0): the kernel
    reads them with unit stride, so the launcher makes them contiguous (it once read the wrong
    elements, and past the end of an expanded one's storage)."""
    m, n, k = 12, 8, 20
    w1, b1, w3, b3 = make_weights(m, k, n)
    if kind == "strided":
        b1, b3 = torch.stack([b1, -b1], 1)[:, 0], torch.stack([b3, -b3], 1)[:, 0]
    else:
        b1, b3 = b1[:1].expand(k), b3[1:2].expand(n)
    assert b1.stride(0) != 1 and b3.stride(0) != 1
    buf = make_buf(2, m + n + 3, 7, 13, torch.float32, "cpu", False)
    ref = ref64(buf[:, :m], w1, b1, w3, b3)
    buf[:, m:m + n] = float("nan")
    before = buf.clone()
    _launch(CFG_A)(buf, m, [w1, b1, w3, b3])
    assert rel_err(buf[:, m:m + n], ref) <= TOL[torch.float32]
    assert torch.equal(buf[:, :m], before[:, :m]) and torch.equal(buf[:, m + n:], before[:, m + n:])


@interp
def test_interp_several_n_blocks():
    check_inplace(_launch(CFG_B), 1, 6, 24, 16, 5, 9, torch.float32)


@interp
@pytest.mark.parametrize("channels_last", [False, True])
def test_interp_fp16(channels_last):
    check_inplace(_launch(CFG_A), 2, 12, 8, 20, 7, 13, torch.float16, channels_last=channels_last)


@interp
def test_interp_few_slots_persistent_loop():
    # 2 programs loop over all tiles, reusing their scratch slots
    check_inplace(_launch(CFG_A, num_slots=2), 2, 7, 4, 12, 9, 11, torch.float32)


@interp
@pytest.mark.parametrize("channels_last", [False, True])
def test_interp_reshuffle(channels_last):
    from fastreshuffle.ops.dense import _triton_kernels as _kernels
    m, n, k = 6, 4, 12
    wts = make_weights(m, k, n)
    src = torch.randn(2, 4 * m, 4, 7)
    buf = torch.full((2, m + n + 2, 8, 14), float("nan"))
    if channels_last:
        buf = buf.contiguous(memory_format=torch.channels_last)
        src = src.contiguous(memory_format=torch.channels_last)
    _kernels().launch_dense_layer(src, buf[:, m:m + n], *wts, prefix_out=buf[:, :m], config=CFG_A)
    x = F.pixel_shuffle(src, 2)
    assert torch.equal(buf[:, :m], x)
    assert rel_err(buf[:, m:m + n], ref64(x, *wts)) <= 1e-5
    assert torch.isnan(buf[:, m + n:]).all()


@interp
@pytest.mark.parametrize("shape", [(1, 3, 16, 24), (2, 3, 13, 7)], ids=str)
def test_interp_network_triton_path(monkeypatch, shape):
    # FastReshuffleNet's GPU code path (block buffers sized for the fused kernel, the reshuffle
    # variant for each block's first layer, scratch and launch per layer) run through the
    # interpreter on CPU tensors, against the plain-PyTorch reference.
    from fastreshuffle.nn import fast as fast_model
    kern = dense_op._triton_kernels()
    launch = kern.launch_dense_layer
    calls = []

    def launch_cfg(*a, **kw):
        calls.append(kw.get("prefix_out") is not None)
        return launch(*a, **{**kw, "config": CFG_A})

    monkeypatch.setattr(dense_op, "use_triton", lambda t: True)
    monkeypatch.setattr(fast_model, "use_triton", lambda t: True)
    monkeypatch.setattr(kern, "launch_dense_layer", launch_cfg)
    from helpers import model_pair

    ref, fast = (m.eval() for m in model_pair("tiny"))
    x = torch.rand(shape)
    with torch.inference_mode():
        expect = ref(x)
        out = fast(x)
    layers = sum(ref.config.layers)
    assert len(calls) == layers and sum(calls) == 2   # blocks 2 and 3 start with the reshuffle variant
    assert (out - expect).abs().max().item() <= 1e-4


# The autotuned branch of launch_dense_layer (config=None: what FastReshuffleNet's CUDA path
# runs): early prune, benchmarking of each remaining config, the grid from the chosen meta-
# parameters, scratch slots of MAX_SLOT.  Under the interpreter Triton has no driver to
# benchmark with, so the tuner gets a wall-clock one.  Shapes by the configs the prune keeps:
# N = 16 -> configs 3, 4; N = 64 -> 0, 1; N = 4 -> 3, 4; N = 32 -> config 2 alone (no benchmark).
AUTOTUNE_CASES = [((1, 6, 16, 12, 5, 9), 2), ((1, 8, 64, 16, 3, 5), 2), ((2, 7, 4, 8, 9, 11), 2),
                  ((1, 5, 32, 8, 4, 6), 1)]


def _autotuner_on_cpu(monkeypatch):
    import time

    from fastreshuffle.ops.dense import _triton_kernels as _kernels
    kern = _kernels()
    tuner = kern._dense_layer_kernel_tuned
    benched = []

    def bench(kernel_call, quantiles):
        t0 = time.perf_counter()
        kernel_call()
        t = time.perf_counter() - t0
        benched.append(t)
        return [t] * len(quantiles)

    # do_bench is a cached property that asks the (absent) driver: set it in the instance dict
    monkeypatch.setitem(tuner.__dict__, "do_bench", bench)
    monkeypatch.setattr(tuner, "cache", {})
    return kern, tuner, benched


def _pruned(kern, n):
    return kern._prune(kern.AUTOTUNE_CONFIGS, {"N": n})


@interp
@pytest.mark.parametrize("case", range(len(AUTOTUNE_CASES)), ids=[str(c[0]) for c in AUTOTUNE_CASES])
@pytest.mark.parametrize("channels_last", [False, True])
def test_interp_autotuned_launch(case, channels_last, monkeypatch):
    (b, m, n, k, h, w), n_configs = AUTOTUNE_CASES[case]
    kern, tuner, benched = _autotuner_on_cpu(monkeypatch)
    assert len(_pruned(kern, n)) == n_configs
    check_inplace(lambda buf, m_, wts: kern.launch_dense_layer(buf[:, :m_], buf[:, m_:m_ + n], *wts),
                  b, m, n, k, h, w, torch.float32, channels_last=channels_last)
    assert len(benched) == (n_configs if n_configs > 1 else 0)      # every kept config was timed
    assert tuner.best_config in _pruned(kern, n)


@interp
@pytest.mark.parametrize("n", [16, 64])
def test_interp_autotuned_reshuffle_launch(n, monkeypatch):
    kern, tuner, benched = _autotuner_on_cpu(monkeypatch)
    m, k = 6, 12
    wts = make_weights(m, k, n)
    src = torch.randn(1, 4 * m, 3, 5)
    buf = torch.full((1, m + n + 2, 6, 10), float("nan"))
    kern.launch_dense_layer(src, buf[:, m:m + n], *wts, prefix_out=buf[:, :m])
    x = F.pixel_shuffle(src, 2)
    assert torch.equal(buf[:, :m], x)
    assert rel_err(buf[:, m:m + n], ref64(x, *wts)) <= 1e-5
    assert torch.isnan(buf[:, m + n:]).all()
    assert len(benched) == 2 and tuner.best_config in _pruned(kern, n)


# ------------------------------------------------------------------------- CUDA
CFG_C8 = dict(TILE_H=8, TILE_W=16, BLOCK_HP=64, BLOCK_M=32, BLOCK_K=32, BLOCK_N=64, num_warps=8)
CFG_D8 = dict(TILE_H=16, TILE_W=16, BLOCK_HP=64, BLOCK_M=32, BLOCK_K=32, BLOCK_N=64, num_warps=8)
BIG_SHAPES = [(2, 200, 64, 256, 33, 47), (1, 640, 32, 128, 64, 96), (2, 160, 16, 64, 31, 17)]
# (shape, config) cases; config None = autotuned.  Kept to ~15 cases x 3 dtypes so that the
# native run (one Triton compile per config/dtype/layout) stays within a couple of minutes.
GPU_CASES = ([(s, c, f"{i}{n}") for i, s in enumerate(INTERP_SHAPES) for c, n in ((CFG_A, "A"), (CFG_B, "B"))]
             + [(s, c, f"big{i}{n}") for i, s in enumerate(BIG_SHAPES)
                for c, n in ((CFG_C8, "C8w"), (CFG_D8, "D8w"), (None, "tuned"))])


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", range(len(GPU_CASES)), ids=[c[2] for c in GPU_CASES])
def test_cuda_kernel(case, dtype):
    shape, cfg, _ = GPU_CASES[case]
    channels_last = case % 2 == 1
    check_inplace(_launch(cfg), *shape, dtype, device="cuda", channels_last=channels_last,
                  tol=CUDA_TOL[dtype])


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_op_and_reshuffle(dtype, cuda_dense_path):
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        check_inplace(lambda buf, m, wts: dense_layer_(buf, m, *wts), 2, 160, 32, 128, 31, 45, dtype,
                      device="cuda", tol=CUDA_TOL[dtype])
        m, n, k = 80, 16, 64
        wts = make_weights(m, k, n, dtype, "cuda")
        src = torch.randn(2, 4 * m, 17, 23, device="cuda", dtype=dtype)
        buf = torch.full((2, m + n + 3, 34, 46), float("nan"), device="cuda", dtype=dtype)
        dense_layer_reshuffle_(buf, src, *wts)
        x = F.pixel_shuffle(src, 2)
        assert torch.equal(buf[:, :m], x)
        assert rel_err(buf[:, m:m + n], ref64(x, *wts)) <= CUDA_TOL[dtype]
        assert torch.isnan(buf[:, m + n:]).all()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def check_functional_grads(device, tol):
    """``dense_layer``'s forward and every gradient (input, weights, biases) in float32 against
    a float64 autograd reference of the plain composition.

    TF32 is switched off for the duration: with it on (PyTorch's default for cuDNN
    convolutions, which the Triton path follows), the fused forward and cuDNN round their
    inputs differently and the input gradients differ by ~1.5e-2 at |g| ~10, well past any
    float32 tolerance (an emulation of the two roundings on the CPU fails 20 seeds out of 20)."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 24, 9, 11, generator=g).to(device).requires_grad_()
        wts = [t.requires_grad_() for t in make_weights(24, 32, 16, device=device)]
        y = dense_layer(x, *wts)
        y.square().sum().backward()
        x64 = x.detach().cpu().double().requires_grad_()
        w64 = [w.detach().cpu().double().requires_grad_() for w in wts]
        y64 = _dense_torch.reference_dense_layer(x64, *w64)
        y64.square().sum().backward()
        assert rel_err(y.detach(), y64.detach()) <= tol
        for name, got, want in zip(("x", "w1", "b1", "w3", "b3"), [x] + wts, [x64] + w64):
            err = rel_err(got.grad, want.grad)
            assert err <= tol, f"grad of {name}: relative error {err:.2e}"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_cpu_functional_grads_float32():
    check_functional_grads("cpu", 1e-5)  # measured: 1e-7 to 3.3e-7


@cuda
@needs_cuda
def test_cuda_functional_grad_and_compile(cuda_dense_path):
    check_functional_grads("cuda", CUDA_TOL[torch.float32])
    wts = [w.detach() for w in make_weights(24, 32, 16, device="cuda")]
    buf = torch.randn(1, 24 + 16, 9, 11, device="cuda")
    expect = buf.clone()
    with torch.no_grad():
        dense_layer_(expect, 24, *wts)

        def f(b):
            torch.ops.fastreshuffle.dense_layer_(b, 24, *wts)
            return b + 0
        out = torch.compile(f, fullgraph=True)(buf)
    assert torch.allclose(out, expect)


# --- the CPU path's fused bias + ELU pass (fastreshuffle::bias_elu_) ------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rows, k, ld", [(1, 1, 1), (7, 13, 13), (300, 64, 64), (33, 40, 57), (5, 3, 8)])
def test_bias_elu_matches_float64_elu(dtype, rows, k, ld):
    gen = torch.Generator().manual_seed(rows * 1000 + k)
    big = torch.randn(rows, ld, generator=gen, dtype=torch.float64) * 4
    flat = big.view(-1)
    flat[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, -200.0, 1e-9])[:flat.numel()]
    big = big.to(dtype)
    x = big[:, :k]  # rows with a stride (ld >= k): the layout the GEMM output may have
    bias = (torch.randn(k, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    expect = F.elu(x.double() + bias.double())
    untouched = big[:, k:].clone()
    torch.ops.fastreshuffle.bias_elu_(x, bias)
    assert torch.equal(big[:, k:], untouched)            # columns past k not written
    got = x.double()
    assert torch.equal(torch.isnan(got), torch.isnan(expect))
    finite = torch.isfinite(expect)
    assert torch.equal(got[~finite & ~torch.isnan(expect)], expect[~finite & ~torch.isnan(expect)])
    # float32: a few ulp of the float64 value (expm1 relative error < 2e-7, plus the rounding
    # of x + bias); float64: std::expm1; bfloat16: computed in float32 as float32's, then one
    # rounding to nearest (half a bf16 ulp: at most 2^-8 relative)
    err = (got - expect)[finite].abs()
    mag = expect[finite].abs()
    if dtype == torch.bfloat16:
        assert (err <= 2.0 ** -8 * mag + 4e-7 * mag.clamp_min(1.0)).all(), err.max()
    else:
        tol = 4e-7 if dtype == torch.float32 else 1e-15
        assert (err <= tol * mag.clamp_min(1.0)).all(), err.max()


def test_bias_elu_covers_the_exponent_range():
    # every binade the float32 expm1 reduction sees, against float64
    v = -torch.logspace(-8, 2, 20001, dtype=torch.float64)
    x = v.to(torch.float32).reshape(1, -1).clone()
    torch.ops.fastreshuffle.bias_elu_(x, torch.zeros(x.shape[1]))
    expect = torch.expm1(v.to(torch.float32).double())
    rel = ((x.double().view(-1) - expect).abs() / expect.abs())
    assert rel.max() < 3e-7, rel.max()


def test_bias_elu_bad_input():
    with pytest.raises(RuntimeError, match="2-D"):
        torch.ops.fastreshuffle.bias_elu_(torch.zeros(2, 3, 4), torch.zeros(4))
    with pytest.raises(RuntimeError, match="bias has shape"):
        torch.ops.fastreshuffle.bias_elu_(torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.fastreshuffle.bias_elu_(torch.zeros(2, 3), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="float32, float64 or bfloat16"):
        torch.ops.fastreshuffle.bias_elu_(torch.zeros(2, 3, dtype=torch.float16), torch.zeros(3, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="unit stride"):
        torch.ops.fastreshuffle.bias_elu_(torch.zeros(3, 2).t(), torch.zeros(3))


def test_bias_elu_opcheck():
    x = torch.randn(9, 5)
    torch.library.opcheck(torch.ops.fastreshuffle.bias_elu_.default, (x, torch.randn(5)))
    xb = torch.randn(9, 5).bfloat16()
    torch.library.opcheck(torch.ops.fastreshuffle.bias_elu_.default, (xb, torch.randn(5).bfloat16()))


def test_bias_elu_bfloat16_is_float32_elu_rounded_once():
    """bf16: widened, the float32 ELU, rounded once to nearest even -- equal to torch's float32
    ELU rounded to bf16 except where the two float32 results straddle a rounding boundary
    (expm1 differs by < 2e-7 relative), and never more than one bf16 ulp apart; every bf16 bit
    pattern of one sign and exponent range checked, NaN stays NaN."""
    bits = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    x = bits.reshape(256, 256).clone()
    bias = torch.zeros(256, dtype=torch.bfloat16)
    want = F.elu(x.float()).bfloat16()
    torch.ops.fastreshuffle.bias_elu_(x, bias)
    nan = torch.isnan(want.float())
    assert torch.equal(torch.isnan(x.float()), nan)
    a, b = x.float()[~nan], want.float()[~nan]
    differ = a != b
    assert differ.float().mean() < 1e-3, differ.sum()
    ulp = 2.0 ** (torch.floor(torch.log2(b[differ].abs())) - 7)
    assert ((a[differ] - b[differ]).abs() <= ulp).all()


def test_cpu_tensors_never_take_triton():
    with backends.override(triton=True):
        assert not dense_op.use_triton(torch.zeros(1))


def test_fake_kernels_never_launch_triton(monkeypatch):
    """The ops' fake kernels (plain custom ops: Triton was off as the package was imported) run the
    body on the torch path even where Triton is switched on later: a fake tensor has no memory to
    launch a kernel on.  On CPU, with the dispatch made to take Triton wherever it is switched on."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def launched():
        raise AssertionError("a fake kernel launched the Triton kernel")
    monkeypatch.setattr(backends, "triton_available", lambda: True)
    monkeypatch.setattr(dense_op, "use_triton", lambda t: backends.triton_enabled())
    monkeypatch.setattr(dense_op, "_triton_kernels", launched)
    with FakeTensorMode(), backends.override(triton=True):
        buf = torch.empty(1, 40, 9, 11)
        w1, b1, w3, b3 = torch.empty(32, 24, 1, 1), torch.empty(32), torch.empty(16, 32, 3, 3), torch.empty(16)
        torch.ops.fastreshuffle.dense_layer_(buf, 24, w1, b1, w3, b3)
        torch.ops.fastreshuffle.dense_layer_reshuffle_(torch.empty(1, 40, 10, 12), torch.empty(1, 96, 5, 6),
                                                       w1, b1, w3, b3)
        y = torch.ops.fastreshuffle.dense_layer(torch.empty(2, 24, 9, 11), w1, b1, w3, b3)
    assert y.shape == (2, 16, 9, 11)


@cuda
@needs_cuda
def test_cuda_torch_path_matches_reference(monkeypatch):
    # the cuBLAS/cuDNN fallback on CUDA (Triton off) writes the same slice as the fused kernel
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)   # IEEE fp32 like the reference
    with backends.override(triton=False):
        check_inplace(lambda buf, m, wts: dense_layer_(buf, m, *wts), 2, 40, 16, 64, 13, 17,
                      torch.float32, device="cuda", tol=CUDA_TOL[torch.float32])


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.skipif(IN_INTERP_PROCESS, reason="compiles natively, outside the interpreter")
def test_triton_kernel_compiles_for_sm90():
    """The real Triton compiler (front end to ptxas) accepts every autotune config for an H100;
    the interpreter tests above cannot catch compile-only errors (seen on the first GPU run)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "tools.check_triton_compile"], env=env, capture_output=True,
                       text=True, timeout=900, cwd=root)
    if r.returncode != 0 and "No module named" in r.stderr and "backends" in r.stderr:
        pytest.skip("this Triton build has no CUDA backend")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from fastreshuffle.kernels import dense_layer as dl
    n = len(dl.AUTOTUNE_CONFIGS)
    assert f"{3 * n}/{3 * n} compiled for sm_90" in r.stdout, r.stdout[-3000:]
    # every config in each buffer dtype the launcher accepts (fp32 with IEEE dots), both modes per dtype
    lines = r.stdout.splitlines()
    for i in range(n):
        for dtype, prec in (("fp32", "ieee"), ("fp16", "tf32"), ("bf16", "tf32")):
            assert any(line.startswith(f"config {i} ") and f" {dtype} PREC={prec} " in line and ": ok" in line
                       for line in lines), (i, dtype, prec)
    for dtype in ("fp32", "fp16", "bf16"):
        for mode in ("False", "True"):
            assert any(f" {dtype} PREC=" in line and f"RESHUFFLE={mode}: ok" in line for line in lines), (dtype, mode)
    # the signature a launch has: sizes and strides as Python ints, which Triton types i32
    assert all(" ints=i32 " in line for line in lines if line.startswith("config "))


@pytest.mark.parametrize("value,expect", [("off", 0), ("avx2", 1), ("avx512", 2), ("bogus", None)])
def test_cpu_kernel_env_switch(value, expect):
    """FASTRESHUFFLE_CPU_KERNEL caps the instruction set (off: torch composition)."""
    code = "from fastreshuffle import backends; print(backends.cpu_kernel_isa())"
    env = dict(os.environ, FASTRESHUFFLE_CPU_KERNEL=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if expect is None:
        assert r.returncode != 0 and "FASTRESHUFFLE_CPU_KERNEL" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        assert int(r.stdout.strip()) == min(expect, CPU_ISA)


@cuda
@needs_cuda
@pytest.mark.skipif(IN_INTERP_PROCESS, reason="runs natively")
def test_triton_op_path_when_switched_on_at_import():
    """With FASTRESHUFFLE_TRITON=1 as the package is imported, the dense ops are registered as
    triton_op (torch.compile traces into the Triton kernel) -- not what the in-process tests get,
    whose ops were registered with Triton off and switch it on per call: the CUDA grad/compile,
    FastReshuffleNet and compile/export tests again, in a child process with the switch set."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, FASTRESHUFFLE_TRITON="1")
    check = ("from fastreshuffle import backends; import fastreshuffle.ops.dense; "
             "assert backends.triton_enabled(), 'Triton not on at import'")
    r = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton",
                        "tests/ops/test_dense_layer.py::test_cuda_functional_grad_and_compile",
                        "tests/nn/test_fast_model.py::test_cuda_matches_reference",
                        "tests/nn/test_fast_compile.py::test_compile_and_export_cuda"],
                       env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
