"""Weights packed once for the CPU dense-layer kernel (``dense_cpu_pack`` ->
``dense_layer_cpu_(..., packed=)``), and FastReshuffleNet's cache of them.

The packed call must give the same bits as the call that packs per call (the kernel is the same;
only where the packed panels come from differs); packed weights made for another dtype,
instruction set, algorithm or shape are refused with an error naming the mismatch; the model
packs again when its weights change (in place, by load_state_dict, by .to()).
"""
from __future__ import annotations

import pytest
import torch

from fastreshuffle import backends
from fastreshuffle.ops import _extension  # noqa: F401  (torch.ops.fastreshuffle.*)

OPS = torch.ops.fastreshuffle
ISA = backends.cpu_kernel_isa()
needs_kernel = pytest.mark.skipif(not ISA, reason="no AVX2/AVX-512 CPU kernel here")


def _isas():
    out = []
    if ISA:
        out.append(pytest.param(torch.float32, 1, id="f32-avx2"))
        if ISA >= 2:
            out.append(pytest.param(torch.float32, 2, id="f32-avx512"))
    if backends.cpu_bf16_kernel():
        out.append(pytest.param(torch.bfloat16, 0, id="bf16"))
    return out or [pytest.param(torch.float32, 1, marks=pytest.mark.skip(reason="no CPU kernel here"))]


def _layer(dtype, b=2, m=37, n=16, h=11, w=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = 4 * n
    buf = torch.randn(b, m + n, h, w, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    wts = [torch.randn(k, m, 1, 1, generator=g) / m ** 0.5, torch.randn(k, generator=g) * 0.1,
           torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5, torch.randn(n, generator=g) * 0.1]
    return buf, [t.to(dtype) for t in wts]


def _fresh_out(buf, m, n):
    return torch.full_like(buf[:, m:m + n], float("nan"))


@pytest.mark.parametrize("dtype,isa", _isas())
@pytest.mark.parametrize("algo", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [4, 16, 40])
def test_packed_equals_per_call(dtype, isa, algo, n):
    buf, wts = _layer(dtype, n=n)
    m = buf.shape[1] - n
    x = buf[:, :m]
    a, b = _fresh_out(buf, m, n), _fresh_out(buf, m, n)
    OPS.dense_layer_cpu_(x, a, *wts, isa, algo)
    packed = OPS.dense_cpu_pack(*wts, isa, algo)
    assert len(packed) == 5
    OPS.dense_layer_cpu_(x, b, *wts, isa, algo, packed)
    assert not a.isnan().any()
    assert torch.equal(a, b)
    # the packed weights are what is used: packed from other weights of the same shape -> other output
    other = OPS.dense_cpu_pack(*_layer(dtype, n=n, seed=1)[1], isa, algo)
    OPS.dense_layer_cpu_(x, b, *wts, isa, algo, other)
    assert not torch.equal(a, b)


@needs_kernel
def test_packed_mismatch_is_refused():
    buf, wts = _layer(torch.float32)
    m = 37
    x, y = buf[:, :m], buf[:, m:]
    call = OPS.dense_layer_cpu_
    with pytest.raises(RuntimeError, match="another algorithm"):
        call(x, y, *wts, ISA, 0, OPS.dense_cpu_pack(*wts, ISA, 1))     # direct-3x3 panels, Winograd call
    if ISA >= 2:
        with pytest.raises(RuntimeError, match="another isa"):
            call(x, y, *wts, 2, 0, OPS.dense_cpu_pack(*wts, 1, 0))
    other_m = _layer(torch.float32, m=36)[1]
    with pytest.raises(RuntimeError, match="another M"):
        call(x, y, *wts, ISA, 0, OPS.dense_cpu_pack(*other_m, ISA, 0))
    if backends.cpu_bf16_kernel():
        with pytest.raises(RuntimeError, match="another dtype"):
            call(x, y, *wts, ISA, 0, OPS.dense_cpu_pack(*[t.bfloat16() for t in wts], 0, 0))
    p = OPS.dense_cpu_pack(*wts, ISA, 0)
    with pytest.raises(RuntimeError, match="the 5 tensors"):
        call(x, y, *wts, ISA, 0, p[:4])
    with pytest.raises(RuntimeError, match="not the metadata"):
        call(x, y, *wts, ISA, 0, [*p[:4], torch.zeros(10, dtype=torch.long)])
    for field, what in ((7, "1x1 panel width"), (8, "3x3 panel width"), (9, "dot step")):
        meta = p[4].clone()
        meta[field] = 0 if field != 8 else 8     # forged: a division by zero / narrower panels
        with pytest.raises(RuntimeError, match=f"another {what}"):
            call(x, y, *wts, ISA, 0, [*p[:4], meta])
    with pytest.raises(RuntimeError, match="do not have the sizes"):
        call(x, y, *wts, ISA, 0, [p[0][:-1].contiguous(), *p[1:]])
    with pytest.raises(RuntimeError, match="w3 must have shape"):
        OPS.dense_cpu_pack(wts[0], wts[1], wts[2][:, :5], wts[3], ISA, 0)


@needs_kernel
def test_public_packed_weights_only_with_the_weights_they_came_from():
    """dense_layer_(..., packed=pack_dense_weights(<other weights of the same shapes>)) ran the
    other weights without a word (off by 235 in a trial); so did packed weights of weights
    changed in place since.  Both are refused; the right ones give the unpacked call's bits."""
    from fastreshuffle.ops import dense_layer_, pack_dense_weights
    buf, wts = _layer(torch.float32)
    other = _layer(torch.float32, seed=1)[1]
    m = 37
    with torch.no_grad():
        a, b = buf.clone(), buf.clone()
        dense_layer_(a, m, *wts)
        dense_layer_(b, m, *wts, packed=pack_dense_weights(*wts))
        assert torch.equal(a, b)
        with pytest.raises(ValueError, match="packed was made from other weights"):
            dense_layer_(buf.clone(), m, *wts, packed=pack_dense_weights(*other))
        packed = pack_dense_weights(*wts)
        wts[2].mul_(2)
        with pytest.raises(ValueError, match="pack them again"):
            dense_layer_(buf.clone(), m, *wts, packed=packed)
        # a list of tensors cannot say what it was packed from (another layer's ran, silently)
        with pytest.raises(TypeError, match="what pack_dense_weights returned"):
            dense_layer_(buf.clone(), m, *wts, packed=list(pack_dense_weights(*other)))
    # inference tensors keep no version counter: changed in place, their packed weights ran on
    # (off by 119 in a helper's probe); a copy kept of them tells
    with torch.inference_mode():
        iw = [w.clone() for w in wts]
        a, b = buf.clone(), buf.clone()
        packed = pack_dense_weights(*iw)
        dense_layer_(a, m, *iw)
        dense_layer_(b, m, *iw, packed=packed)
        assert torch.equal(a, b)
        iw[0].mul_(-1)
        with pytest.raises(ValueError, match="pack them again"):
            dense_layer_(buf.clone(), m, *iw, packed=packed)
        iw[1][0] = float("nan")                 # NaN weights are equal to themselves (a review)
        dense_layer_(buf.clone(), m, *iw, packed=pack_dense_weights(*iw))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not backends.cpu_bf16_kernel(), reason="CPU lacks AVX512-BF16"))])
def test_model_repacks_when_weights_change(dtype, monkeypatch):
    """FastReshuffleNet packs each layer once and hands the packed weights to the kernel; it packs
    again after an in-place change (an optimizer step, ``copy_``), a ``load_state_dict`` (also
    through a parent module, and of a model made under inference_mode, whose tensors keep no
    version), ``load_state_checked`` or ``.to()``: its output is then that of a fresh model with
    the new weights, bit for bit.  The kernel is asked for by name: on a CPU with AMX, bf16
    layers run on oneDNN otherwise (``backends.cpu_bf16_uses_kernel``)."""
    with backends.override(cpu_kernel="avx512"):
        _model_repacks_when_weights_change(dtype, monkeypatch)


def _model_repacks_when_weights_change(dtype, monkeypatch):
    from fastreshuffle.io.weights import load_state_checked
    from fastreshuffle.nn.config import PRESETS
    from fastreshuffle.nn.fast import FastReshuffleNet
    from fastreshuffle.ops import _dense_torch

    packs, calls = [], []
    real_pack, real_layer = OPS.dense_cpu_pack, OPS.dense_layer_cpu_

    class Spy:
        def __getattr__(self, name):
            return getattr(OPS, name)

        def dense_cpu_pack(self, *a):
            packs.append(1)
            return real_pack(*a)

        def dense_layer_cpu_(self, *a):
            calls.append(a[8] if len(a) > 8 else None)
            return real_layer(*a)

    monkeypatch.setattr(_dense_torch.torch.ops, "fastreshuffle", Spy())
    cfg = PRESETS["tiny"]
    n_layers = sum(cfg.layers)

    def fresh(sd):
        net = FastReshuffleNet(cfg).eval().to(dtype)
        net.load_state_dict(sd)
        return net

    torch.manual_seed(0)
    net = FastReshuffleNet(cfg).eval().to(dtype)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        y0 = net(x)
        assert len(packs) == n_layers and len(calls) == n_layers and all(c is not None for c in calls)
        assert torch.equal(net(x), y0) and len(packs) == n_layers and len(calls) == 2 * n_layers
        next(net.blocks[1].layers[0].parameters()).mul_(1.5)     # in place: version bump
        y1 = net(x)
        assert len(packs) == 2 * n_layers
        assert not torch.equal(y0, y1)
        assert torch.equal(y1, fresh(net.state_dict())(x))
        net.to(torch.float64).to(dtype)                           # .to(): cache dropped, same values
        assert torch.equal(net(x), y1)
    with torch.inference_mode():
        inf = FastReshuffleNet(cfg).eval().to(dtype)
        inf.load_state_dict(net.state_dict())
        assert torch.equal(inf(x), y1)
        sd = {k: v * 0.5 for k, v in net.state_dict().items()}
        inf.load_state_dict(sd)
        y2 = fresh(sd)(x)
        assert torch.equal(inf(x), y2)
        load_state_checked(inf, net.state_dict())
        assert torch.equal(inf(x), y1)
        torch.nn.Sequential(inf).load_state_dict({"0." + k: v for k, v in sd.items()})
        assert torch.equal(inf(x), y2)


@pytest.mark.parametrize("dtype,isa", _isas())
@pytest.mark.parametrize("n", [8, 16, 40])
def test_ring_and_whole_intermediate_agree_bitwise(dtype, isa, n):
    """The Winograd layer with E in a row ring (algo 2) or whole (algo 3) computes every value the
    same way, so the automatic choice between them (a size threshold per dtype) cannot change a
    result: same bits, odd sizes, batch 2."""
    buf, wts = _layer(dtype, n=n, h=23, w=31)
    m = buf.shape[1] - n
    a, b = _fresh_out(buf, m, n), _fresh_out(buf, m, n)
    OPS.dense_layer_cpu_(buf[:, :m], a, *wts, isa, 2)
    OPS.dense_layer_cpu_(buf[:, :m], b, *wts, isa, 3)
    assert not a.isnan().any() and torch.equal(a, b)
