"""Reshuffle ops on ``(*, C, H, W)``: any number of leading batch dims, as F.pixel_(un)shuffle
take them, bit-exact, with ``out=``, autograd, opcheck and torch.compile."""
import pytest
import torch
import torch.nn.functional as F

from fastreshuffle import reshuffle_down, reshuffle_up
from fastreshuffle.ops import reshuffle as reshuffle_mod

from test_reshuffle import DEVICES, DTYPES, _cuda_param, bitwise_equal, random_tensor

SHAPES = [(), (3,), (2, 3), (2, 1, 3), (1, 2, 1, 2)]   # leading dims: 3-D, 4-D, 5-D, 6-D, 7-D


def _leading_layout(x, layout):
    """x (*, C, H, W) with the given layout of its leading / trailing dims."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "hwc":                     # channels last in the last three dims
        return x.movedim(-3, -1).contiguous().movedim(-1, -3)
    if layout == "lead_transposed":         # leading dims swapped in memory: not viewable as 4-D
        return x.transpose(0, 1).contiguous().transpose(0, 1) if x.dim() >= 5 else x
    if layout == "lead_stepped":            # every other batch entry of a larger tensor
        if x.dim() < 4:
            return x
        big = torch.zeros((2 * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        big[::2] = x
        return big[::2]
    if layout == "lead_expanded":           # a broadcast (stride 0) leading dim
        return x[:1].expand(x.shape) if x.dim() >= 4 else x
    raise ValueError(layout)


LEAD_LAYOUTS = ["contiguous", "hwc", "lead_transposed", "lead_stepped", "lead_expanded"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", SHAPES, ids=lambda s: f"{len(s) + 3}D")
@pytest.mark.parametrize("layout", LEAD_LAYOUTS)
def test_leading_dims_match_torch(device, dtype, lead, layout):
    _cuda_param(device)
    gen = torch.Generator().manual_seed(hash((str(dtype), lead, layout)) % 2**31)
    for s in (2, 3):
        x = _leading_layout(random_tensor((*lead, 2, 2 * s, 3 * s), dtype, "cpu", gen).to(device), layout)
        y = reshuffle_down(x, s)
        assert bitwise_equal(y, F.pixel_unshuffle(x, s))
        z = _leading_layout(random_tensor((*lead, 2 * s * s, 3, 2), dtype, "cpu", gen).to(device), layout)
        u = reshuffle_up(z, s)
        assert bitwise_equal(u, F.pixel_shuffle(z, s))
        assert bitwise_equal(reshuffle_down(u, s), z.contiguous())


@pytest.mark.parametrize("device", DEVICES)
def test_mergeable_leading_dims_are_not_copied(device):
    """Leading dims that merge by a view go to the kernel as a view: the 4-D op sees the very
    memory of the input (and of out=), no copy."""
    _cuda_param(device)
    seen = []
    real = reshuffle_mod._ops

    class Spy:
        def __getattr__(self, name):
            op = getattr(real, name)

            def call(*args):
                seen.append([a.data_ptr() for a in args if isinstance(a, torch.Tensor)])
                return op(*args)
            return call

    x = torch.randn(2, 3, 4, 6, 8, device=device)
    hwc = torch.randn(2, 3, 6, 8, 4, device=device).movedim(-1, -3)     # (2, 3, 4, 6, 8), channels last
    out = torch.zeros(2, 3, 20, 3, 4, device=device)[:, :, 2:18]          # channel slice of a bigger buffer
    reshuffle_mod._ops = Spy()
    try:
        reshuffle_down(x, 2)
        reshuffle_down(hwc, 2)
        reshuffle_down(x, 2, out=out)
        reshuffle_up(torch.randn(4, 2, 3, device=device), 2)
    finally:
        reshuffle_mod._ops = real
    assert seen[0] == [x.data_ptr()]
    assert seen[1] == [hwc.data_ptr()]
    assert seen[2] == [x.data_ptr(), out.data_ptr()]
    assert bitwise_equal(out, F.pixel_unshuffle(x, 2))
    assert len(seen) == 4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bool, torch.complex128], ids=str)
def test_out_into_slices_with_leading_dims(device, dtype):
    _cuda_param(device)
    gen = torch.Generator().manual_seed(3)
    poison = True if dtype == torch.bool else 77
    x = random_tensor((2, 3, 8, 4, 6), dtype, "cpu", gen).to(device)
    # channel slice (viewable as 4-D), a batch-stepped slice and a transposed batch (not viewable)
    big = torch.full((2, 3, 13, 8, 12), poison, dtype=dtype, device=device)
    stepped = torch.full((4, 3, 2, 8, 12), poison, dtype=dtype, device=device)
    trans = torch.full((3, 2, 2, 8, 12), poison, dtype=dtype, device=device)
    for buf, out in [(big, big[:, :, 5:7]), (stepped, stepped[::2]), (trans, trans.transpose(0, 1))]:
        before = buf.clone()
        ret = reshuffle_up(x, 2, out=out)
        assert ret is out
        assert bitwise_equal(out, F.pixel_shuffle(x, 2))
        changed = (buf != before) if dtype != torch.bool else (buf ^ before)
        # nothing outside out was written
        mask = torch.zeros_like(buf, dtype=torch.bool)
        mask_view = mask[:, :, 5:7] if buf is big else (mask[::2] if buf is stepped else mask.transpose(0, 1))
        mask_view.fill_(True)
        assert not changed[~mask].any()
    # down, 3-D into a slice of a 3-D buffer
    img = random_tensor((2, 6, 4), dtype, "cpu", gen).to(device)
    buf3 = torch.full((11, 3, 2), poison, dtype=dtype, device=device)
    reshuffle_down(img, 2, out=buf3[1:9])
    assert bitwise_equal(buf3[1:9], F.pixel_unshuffle(img, 2))
    assert bitwise_equal(buf3[:1], torch.full_like(buf3[:1], poison))
    assert bitwise_equal(buf3[9:], torch.full_like(buf3[9:], poison))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_leading_dims(device):
    _cuda_param(device)
    for shape, s in [((0, 3, 2, 4, 4), 2), ((2, 0, 2, 4, 4), 2), ((2, 3, 0, 4, 4), 2), ((0, 4, 4), 2)]:
        x = torch.randn(shape, device=device)
        y = reshuffle_down(x, s)
        assert y.shape == (*shape[:-3], shape[-3] * s * s, shape[-2] // s, shape[-1] // s)
        if x.numel():
            assert bitwise_equal(y, F.pixel_unshuffle(x, s))
    assert reshuffle_up(torch.randn(0, 2, 8, 3, 3, device=device), 2).shape == (0, 2, 2, 6, 6)


def test_gradcheck_3d_and_5d_float64():
    x3 = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reshuffle_down(t, 2), (x3,))
    x5 = torch.randn(2, 2, 2, 4, 6, dtype=torch.float64).transpose(0, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: reshuffle_down(t, 2), (x5,))
    y5 = torch.randn(2, 3, 8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reshuffle_up(t, 2), (y5,))
    assert torch.autograd.gradgradcheck(lambda t: reshuffle_up(t, 2), (y5,))
    y3 = torch.randn(8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reshuffle_up(t, 2), (y3,))


def test_gradient_matches_torch_5d():
    x = torch.randn(2, 3, 2, 8, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(2, 3, 8, 4, 4)
    reshuffle_down(x, 2).backward(g)
    F.pixel_unshuffle(x_ref, 2).backward(g)
    assert bitwise_equal(x.grad, x_ref.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_on_flattened_views(device):
    """The registered 4-D ops on what the wrappers hand them for 3-D/5-D input: views of
    channels-last and merged-leading-dim tensors, and out= channel slices."""
    _cuda_param(device)
    ops = torch.ops.fastreshuffle
    hwc5 = torch.randn(2, 3, 4, 6, 4, device=device).movedim(-1, -3)       # (2, 3, 4, 4, 6)
    samples = [
        (ops.reshuffle_down, (reshuffle_mod._as_4d(hwc5, copy_ok=False), 2)),
        (ops.reshuffle_up, (reshuffle_mod._as_4d(torch.randn(8, 3, 5, device=device,
                                                             requires_grad=True), copy_ok=False), 2)),
        (ops.reshuffle_up_out, (torch.randn(6, 8, 2, 2, device=device), 2,
                                reshuffle_mod._as_4d(torch.empty(2, 3, 5, 4, 4, device=device)[:, :, 1:3],
                                                     copy_ok=False))),
    ]
    for op, args in samples:
        assert all(a is not None for a in args)
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_5d(backend):
    def f(x, buf):
        y = reshuffle_down(x, 2)
        reshuffle_up(y * 2.0, 2, out=buf[:, :, 1:3])
        return reshuffle_up(y, 2) + 1, buf

    def ref(x, buf):
        y = F.pixel_unshuffle(x, 2)
        buf[:, :, 1:3] = F.pixel_shuffle(y * 2.0, 2)
        return F.pixel_shuffle(y, 2) + 1, buf

    torch._dynamo.reset()
    x = torch.randn(2, 3, 2, 6, 8)
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    got, gbuf = compiled(x, torch.zeros(2, 3, 4, 6, 8))
    want, wbuf = ref(x, torch.zeros(2, 3, 4, 6, 8))
    assert bitwise_equal(got, want) and bitwise_equal(gbuf, wbuf)
    x3 = torch.randn(8, 2, 4)          # 3-D: a recompile, still one graph
    assert bitwise_equal(torch.compile(lambda t: reshuffle_up(t, 2), fullgraph=True, backend=backend)(x3),
                         F.pixel_shuffle(x3, 2))
