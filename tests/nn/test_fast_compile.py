"""FastReshuffleNet under torch.compile(fullgraph=True), torch.export and CUDA graph capture."""
from __future__ import annotations

import pytest
import torch
from helpers import model_pair

from fastreshuffle.nn import fast as fast_mod

TOL = 1e-5


def pair(preset, device="cpu", seed=0):
    ref, fast = model_pair(preset, seed=seed, device=device)
    return ref.eval(), fast.eval()


def _maxerr(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("preset, shape", [("tiny", (1, 3, 20, 28)), ("tiny", (2, 3, 13, 21)),
                                           ("small", (1, 3, 24, 16))])
def test_compile_fullgraph_cpu(preset, shape):
    torch._dynamo.reset()
    ref, fast = pair(preset)
    x = torch.rand(shape)
    compiled = torch.compile(fast, fullgraph=True)
    with torch.no_grad():
        eager = fast(x)
        want = ref(x)
        got = compiled(x)
        again = compiled(x)
    assert got.shape == x.shape
    assert _maxerr(got, eager) <= TOL and _maxerr(again, eager) <= TOL
    assert _maxerr(got, want) <= TOL


def test_compile_fullgraph_with_grad_enabled():
    """Grad enabled (parameters require grad): the training path (dense_block) traces too."""
    torch._dynamo.reset()
    ref, fast = pair("tiny")
    x = torch.rand(1, 3, 16, 16)
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    got.sum().backward()
    g_comp = [p.grad.clone() for p in fast.parameters()]
    fast.zero_grad()
    eager = fast(x)
    eager.sum().backward()
    assert _maxerr(got.detach(), eager.detach()) <= TOL
    for a, p in zip(g_comp, fast.parameters()):
        assert _maxerr(a, p.grad) <= 1e-4


def test_traced_forward_uses_no_cache_and_eager_keeps_it(monkeypatch):
    torch._dynamo.reset()
    _, fast = pair("tiny")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.compile(fast, fullgraph=True, backend="aot_eager")(x)
        assert fast._buf_cache is None                 # tracing did not fill the eager cache
        fast(x)
        cache = fast._buf_cache
        assert cache is not None
        fast(x)
        assert fast._buf_cache is cache                # eager: buffers reused


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_export_cpu(preset):
    ref, fast = pair(preset)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        eager = fast(x)
        want = ref(x)
    cache = fast._buf_cache
    with torch.no_grad():                              # the inference forward
        ep = torch.export.export(fast, (x,))
    # tracing left the eager cache alone (export restores module attributes: same tensors)
    assert all(a is b for a, b in zip(fast._buf_cache, cache))
    with torch.no_grad():
        got = ep.module()(x)
    assert _maxerr(got, eager) <= TOL and _maxerr(got, want) <= TOL
    # the exported program holds the package's ops, not an opaque call
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert {"fastreshuffle.dense_layer_.default", "fastreshuffle.reshuffle_down.default"} <= targets
    # grad enabled: the training forward (dense_block) exports as well
    ep_train = torch.export.export(fast, (x,))
    with torch.no_grad():
        assert _maxerr(ep_train.module()(x), eager) <= TOL


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("mode", ["compile", "export"])
def test_compile_and_export_cuda(preset, mode, cuda_dense_path):
    ref, fast = pair(preset, "cuda")
    x = torch.rand(1, 3, 32, 48, device="cuda")
    with torch.no_grad():
        eager = fast(x)
        want = ref(x)
        if mode == "compile":
            torch._dynamo.reset()
            got = torch.compile(fast, fullgraph=True)(x)
        else:
            got = torch.export.export(fast, (x,)).module()(x)
    tol = TOL if not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32 else 1e-3
    assert _maxerr(got, eager) <= tol
    assert _maxerr(got, want) <= max(tol, 1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("batch", [1, 2])
def test_cuda_graph_capture(batch, cuda_dense_path):
    """The eager inference forward (cached buffers) can be captured in a CUDA graph and replayed
    on new input with the same result as eager."""
    _, fast = pair("tiny", "cuda")
    static_x = torch.rand(batch, 3, 40, 24, device="cuda")
    with torch.inference_mode():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):          # warm-up: Triton compiles, buffers are cached
                fast(static_x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_y = fast(static_x)
        for seed in range(3):
            torch.manual_seed(seed)
            new = torch.rand_like(static_x)
            static_x.copy_(new)
            g.replay()
            torch.cuda.synchronize()
            want = fast(new.clone())
            assert _maxerr(static_y, want) <= TOL


def test_tracing_detects_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not fast_mod._tracing(torch.zeros(1))
    with FakeTensorMode():
        assert fast_mod._tracing(torch.zeros(1))
