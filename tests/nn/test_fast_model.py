"""FastReshuffleNet vs the reference ReshuffleNet: same weights, same outputs and gradients."""
from __future__ import annotations

import pytest
import torch
from helpers import model_pair

from fastreshuffle import FastReshuffleNet, ReshuffleNet
from fastreshuffle.nn.fast import subpixel_tail, subpixel_tail_weight


def pair(preset, seed=0, dtype=torch.float32, device="cpu"):
    return model_pair(preset, seed=seed, dtype=dtype, device=device)


def test_state_dict_compatible():
    ref, fast = pair("tiny")
    assert list(ref.state_dict()) == list(fast.state_dict())
    ReshuffleNet(ref.config).load_state_dict(fast.state_dict())
    assert isinstance(fast, ReshuffleNet)


@pytest.mark.parametrize("grad", [False, True])
def test_meta_device_shapes_as_the_reference(grad):
    """On the meta device (shapes only) FastReshuffleNet works as ReshuffleNet does; with grad
    enabled it asked autocast about "meta" and failed ("unknown device type for autocast")."""
    ref, fast = (m.to("meta") for m in pair("tiny"))
    x = torch.empty(2, 3, 13, 21, device="meta")
    with torch.set_grad_enabled(grad):
        assert fast(x).shape == ref(x).shape == x.shape and fast(x).device.type == "meta"


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("shape", [(2, 3, 13, 21), (1, 3, 13, 21), (1, 3, 16, 24), (1, 3, 5, 3)], ids=str)
def test_inference_matches_reference(preset, shape):
    ref, fast = pair(preset)
    x = torch.rand(shape)
    with torch.inference_mode():
        expect = ref(x)
        out = fast(x)
        again = fast(x)       # cached buffers reused
    assert out.shape == expect.shape == x.shape
    assert (out - expect).abs().max().item() <= 1e-4
    assert torch.equal(out, again)


def test_paper_preset_small_input():
    ref, fast = pair("paper")
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        assert (fast(x) - ref(x)).abs().max().item() <= 1e-4


def test_buffer_cache_reuse_and_invalidation():
    _, fast = pair("tiny")
    with torch.no_grad():
        fast(torch.rand(1, 3, 16, 16))
        bufs = fast._buf_cache
        fast(torch.rand(1, 3, 16, 16))
        assert fast._buf_cache is bufs
        fast(torch.rand(2, 3, 8, 24))
        assert fast._buf_cache is not bufs
        fast.double()
        assert fast._buf_cache is None
        fast(torch.rand(1, 3, 8, 8, dtype=torch.float64))


def test_weights_changed_in_place_under_inference_mode_are_used():
    """Parameters made under torch.inference_mode keep no version counter: an in-place update
    (an EMA swap, p.copy_) left the cached weights in use, the output off by up to 1.0."""
    with torch.inference_mode():
        ref, fast = pair("tiny")
        _, other = pair("tiny", seed=1)
        x = torch.rand(1, 3, 16, 16)
        fast(x)
        for p, q in zip(fast.parameters(), other.parameters()):
            p.copy_(q)
        assert (fast(x) - other(x)).abs().max().item() <= 1e-5
        ref.load_state_dict(other.state_dict())
        assert (fast(x) - ref(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("requires_grad", [False, True])
def test_jit_trace_follows_the_parameters(requires_grad):
    """torch.jit.trace of a model that had run held its cached (packed) weights as constants:
    after load_state_dict the traced module still ran the old ones.  A fresh model failed the
    trace's default check (the first call filled the cache, the check run used it).  Parameters
    that do not require grad: the trace records the fused ops; that do: the reference forward."""
    ref, fast = pair("tiny")
    _, other = pair("tiny", seed=1)
    fresh = pair("tiny")[1]
    for m in (fast, fresh):
        m.requires_grad_(requires_grad)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.jit.trace(fresh, x)                      # the default check_trace passes
        fast(x)
        traced = torch.jit.trace(fast, x)
        graph = str(traced.inlined_graph)
        assert "prim::Constant[value=<Tensor>]" not in graph
        assert ("fastreshuffle::dense_layer_" in graph) == (not requires_grad)
        traced.load_state_dict(other.state_dict())
        assert (traced(x) - other(x)).abs().max().item() <= 1e-5


def test_jit_trace_with_grad_mode_on():
    """torch.jit.trace with grad mode on (the default; shipped models' parameters require grad)
    failed inside the tracer ("unordered_map::at", the training forward's autograd.Function): it
    now records the reference forward, which gives the same outputs and gradients."""
    ref, fast = pair("tiny")
    x = torch.rand(1, 3, 16, 16)
    traced = torch.jit.trace(fast, x)
    xt, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = traced(xt)
    assert (out - ref(x)).abs().max().item() <= 1e-5
    out.sum().backward()
    ref(xr).sum().backward()
    assert torch.allclose(xt.grad, xr.grad, rtol=1e-4, atol=1e-6)


def _pack_then(monkeypatch, action):
    """pack_snapshot as FastReshuffleNet calls it, with ``action()`` run after the first
    pack: what another thread may do while a call fills the weight cache.  Returns the list of
    what was packed."""
    import fastreshuffle.nn.fast as fast_mod
    real, made = fast_mod.pack_snapshot, []

    def pack(*w):
        made.append(real(*w))
        if len(made) == 1:
            action()
        return made[-1]
    monkeypatch.setattr(fast_mod, "pack_snapshot", pack)
    return made


def test_weights_loaded_while_the_cache_fills_are_not_kept_stale(monkeypatch):
    """Parameters made under inference_mode, load_state_dict run (as from another thread) while a
    call packed the weights: the entry held the old packed weights beside a copy of the new
    parameters, so every later call ran the old weights (a service swapping its weights: 106 of
    150 tries).  The entry is now made from a snapshot taken before packing."""
    with torch.inference_mode():
        _, fast = pair("tiny")
        _, other = pair("tiny", seed=1)
        x = torch.rand(1, 3, 16, 16)
        expect = other(x)
        _pack_then(monkeypatch, lambda: fast.load_state_dict(other.state_dict()))
        fast(x)
        monkeypatch.undo()
        assert (fast(x) - expect).abs().max().item() <= 1e-5
        assert (fast(x) - expect).abs().max().item() <= 1e-5


def test_weights_changed_during_a_call_raise_nothing(monkeypatch):
    """An optimizer step or load_state_dict (same values) in another thread during a call made
    dense_layer_ raise "packed was made from other weights" (48 of 51 calls): it compared each
    layer's packed weights with the live parameters' versions.  A call runs one snapshot."""
    _, fast = pair("small")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expect = fast(x)
        fast.clear_cache()

        def bump():
            for q in fast.parameters():
                q.add_(0)                      # versions move, values stay
        made = _pack_then(monkeypatch, bump)
        out = fast(x)
    if not any(m is not None for m in made):
        pytest.skip("the CPU kernel packs no weights on this machine")
    assert torch.equal(out, expect)


def test_hooks_on_submodules_run():
    """The fused forward calls no submodule, so their hooks never ran: torch.nn.utils.prune (a
    pre-hook making weight from weight_orig * mask) silently ran the unpruned weights."""
    import torch.nn.utils.prune as prune
    ref, fast = pair("tiny")
    x = torch.rand(1, 3, 16, 16)
    for m in (ref, fast):
        prune.l1_unstructured(m.blocks[0].layers[0].conv1, "weight", amount=0.5)
        with torch.no_grad():
            m.blocks[0].layers[0].conv1.weight_orig.mul_(2)
    seen = []
    fast.tail.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert (fast(x) - ref(x)).abs().max().item() <= 1e-5
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(xr).sum().backward()
    fast(xf).sum().backward()
    assert torch.allclose(xr.grad, xf.grad, rtol=1e-4, atol=1e-6) and len(seen) == 2
    _, plain = pair("tiny")
    assert not plain._hooked() and fast._hooked()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, i, o: None)
    try:
        assert plain._hooked()                         # hooks on every module count too
    finally:
        handle.remove()


@pytest.mark.parametrize("how", ["weight_norm", "spectral_norm", "parametrize"])
def test_parametrized_weights_run(how):
    """A parametrized weight (torch.nn.utils.parametrize; today's weight_norm / spectral_norm) is
    computed on each access, no parameter the fused forward could take: under no_grad it failed
    with a KeyError.  It runs the reference forward, as ReshuffleNet does."""
    from torch.nn.utils import parametrizations, parametrize

    class Half(torch.nn.Module):
        def forward(self, w):
            return w * 0.5
    ref, fast = pair("tiny")
    x = torch.rand(2, 3, 16, 24)
    for m in (ref, fast):
        conv = m.blocks[1].layers[0].conv2
        if how == "parametrize":
            parametrize.register_parametrization(conv, "weight", Half())
        else:
            getattr(parametrizations, how)(conv)
    fast.load_state_dict(ref.state_dict())      # (spectral_norm's vectors start random)
    ref.eval(), fast.eval()
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            assert (fast(x) - ref(x)).abs().max().item() <= 1e-6, ctx
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref(xr).sum().backward()
    fast(xf).sum().backward()
    assert torch.allclose(xr.grad, xf.grad, rtol=1e-4, atol=1e-6) and fast._hooked()


def test_output_does_not_alias_cache():
    ref, fast = pair("tiny")
    x1, x2 = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y1 = fast(x1).clone()
        y1_view = fast(x1)
        fast(x2)
        assert torch.equal(y1, y1_view)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_training_gradients_match_reference(preset):
    ref, fast = pair(preset)
    x = torch.rand(2, 3, 13, 21)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    target = torch.rand(2, 3, 13, 21)
    (ref(xr) - target).abs().mean().backward()
    (fast(xf) - target).abs().mean().backward()
    assert torch.allclose(xr.grad, xf.grad, rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        scale = p.grad.abs().max().clamp_min(1e-12)
        assert ((p.grad - q.grad).abs().max() / scale).item() <= 1e-4, name


def test_training_step_decreases_loss():
    _, fast = pair("tiny")
    opt = torch.optim.Adam(fast.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 16, 16)
    target = x.clamp(0.2, 0.8)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (fast(x) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_subpixel_tail_equivalence():
    torch.manual_seed(0)
    w = torch.randn(3, 5, 3, 3, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    z = torch.randn(2, 20, 4, 7, dtype=torch.float64)
    kt, bt = subpixel_tail_weight(w, b)
    assert kt.shape == (12, 20, 2, 2)
    expect = torch.nn.functional.conv2d(torch.nn.functional.pixel_shuffle(z, 2), w, b, padding=1)
    t = torch.nn.functional.conv2d(z, kt, bt, padding=1)
    assert torch.allclose(subpixel_tail(t), expect, atol=1e-12)
    r = torch.randn_like(expect)
    assert torch.allclose(subpixel_tail(t, residual=r), expect + r, atol=1e-12)
    # the strip-wise convolution (any kernel height) equals the whole one
    zz = torch.randn(1, 20, 37, 5, dtype=torch.float64)
    for k in (kt, torch.randn(12, 20, 3, 3, dtype=torch.float64)):
        whole = torch.nn.functional.conv2d(zz, k, bt, padding=1)
        assert torch.allclose(FastReshuffleNet._strip_conv(zz, k, bt, strip_bytes=20 * 5 * 8 * 3), whole, atol=1e-12)


def test_input_errors():
    _, fast = pair("tiny")
    with pytest.raises(ValueError):
        fast(torch.rand(1, 4, 8, 8))
    with torch.no_grad(), pytest.raises(TypeError, match="dtype"):
        fast(torch.rand(1, 3, 8, 8, dtype=torch.float64))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.float16, 3e-2)], ids=str)
@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_cuda_matches_reference(preset, dtype, tol, monkeypatch, cuda_dense_path):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)   # fused kernel follows it
    ref, fast = pair(preset, device="cuda", dtype=dtype)
    x = torch.rand(2, 3, 37, 53, device="cuda", dtype=dtype)
    with torch.inference_mode():
        ref64 = pair(preset, device="cuda", dtype=torch.float64)[0]
        expect = ref64(x.double())
        out = fast(x)
    assert (out.double() - expect).abs().max().item() <= tol


@pytest.mark.parametrize("c1, c2", [(16, 8), (16, 4), (12, 3), (12, 7), (4, 9), (64, 40)])
@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (4, 2), (37, 11), (70, 3)])
@pytest.mark.parametrize("clone_rows", [1, 5, 32])
def test_inplace_row_reshuffle_into_the_shared_allocation(c1, c2, h, w, clone_rows):
    # block 1 (c1 channels, h x w) at the end of the allocation of block 2 (c2 channels, 2h x 2w),
    # both channels_last: the row-wise reshuffle must equal pixel_shuffle of the original block 1
    import torch.nn.functional as F
    from fastreshuffle.nn.buffers import reshuffle_up_rows, starts_inside

    n1, n2 = c1 * h * w, c2 * 4 * h * w
    arena = torch.full((n2,), float("nan"))
    src = arena[n2 - n1:].view(1, h, w, c1).permute(0, 3, 1, 2)
    dst = arena.view(1, 2 * h, 2 * w, c2).permute(0, 3, 1, 2)
    src.copy_(torch.randn(1, c1, h, w, generator=torch.Generator().manual_seed(c1 * 100 + c2 + h)))
    expect = F.pixel_shuffle(src.clone(), 2)
    assert starts_inside(src, dst)
    reshuffle_up_rows(src, dst[:, :c1 // 4], clone_rows=clone_rows)
    assert torch.equal(dst[:, :c1 // 4], expect)


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_cpu_batch1_buffers_share_one_allocation(preset):
    from fastreshuffle import ReshuffleNetConfig
    torch.manual_seed(0)
    cfg = ReshuffleNetConfig.preset(preset)
    fast = FastReshuffleNet(cfg).eval()
    ref = ReshuffleNet(cfg).eval()
    ref.load_state_dict(fast.state_dict())
    for size in [(40, 56), (23, 17)]:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            assert (fast(x) - ref(x)).abs().max().item() <= 1e-4
        bufs = fast._buf_cache
        assert all(b.is_contiguous(memory_format=torch.channels_last) for b in bufs)
        ptrs = {b.untyped_storage().data_ptr() for b in bufs}
        if bufs[0].numel() + bufs[1].numel() <= bufs[2].numel():   # small, paper
            assert len(ptrs) == 1  # blocks 0, 1, 2 in one allocation of block 2's size
            assert bufs[2].untyped_storage().nbytes() == bufs[2].numel() * bufs[2].element_size()
        else:                                                      # tiny: blocks 0 and 2 share
            assert len(ptrs) == 2 and bufs[0].untyped_storage().data_ptr() == bufs[2].untyped_storage().data_ptr()


def test_threads_sharing_one_model_get_their_own_buffers():
    """Calls from several threads on one model (as ``restore()``'s cached model gets them) must
    not share the kept block buffers: each output equals the same call made alone, bit for bit."""
    import threading
    _, fast = pair("tiny")
    xs = [torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        alone = [fast(x) for x in xs]
    got, errors = {}, []
    start = threading.Barrier(len(xs))

    def work(i):
        try:
            start.wait()
            with torch.no_grad():
                for r in range(20):
                    got[i, r] = fast(xs[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(got) == 20 * len(xs)
    bad = [(i, r) for (i, r), y in got.items() if not torch.equal(y, alone[i])]
    assert not bad, f"{len(bad)} of {len(got)} outputs differ from the same call made alone"
    assert fast._buf_cache is not None                   # a set is still kept for the next call
