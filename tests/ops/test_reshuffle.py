"""Reshuffle ops: bit-exact against torch and against the paper's index formulas."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastreshuffle
from fastreshuffle import reshuffle_down, reshuffle_up

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
          torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128]
LAYOUTS = ["contiguous", "channels_last", "channel_slice", "transposed", "stepped"]


def _cuda_param(device):
    if device == "cuda" and not fastreshuffle.ops.built_with_cuda():
        pytest.skip("extension built without CUDA kernels")


def random_tensor(shape, dtype, device, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype)
    if dtype.is_floating_point:
        # include the special values: a permutation must move them untouched
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 100
        flat = x.view(-1)
        if flat.numel() >= 4:
            flat[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=torch.float64)
        return x.to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000) + 1, shape, generator=gen).to(dtype)


def make_layout(x, layout):
    """Return a tensor equal to x with the given memory layout."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "channel_slice":  # x lives in the middle of a larger channel buffer
        n, c, h, w = x.shape
        buf = torch.zeros(n, c + 5, h, w, dtype=x.dtype, device=x.device)
        buf[:, 2:2 + c] = x
        return buf[:, 2:2 + c]
    if layout == "transposed":  # H and W strides swapped
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "stepped":  # every other column of a wider tensor
        n, c, h, w = x.shape
        big = torch.zeros(n, c, h, 2 * w, dtype=x.dtype, device=x.device)
        big[..., ::2] = x
        return big[..., ::2]
    raise ValueError(layout)


def bitwise_equal(a, b):
    """Exact equality of the bits (NaN == NaN, -0.0 != +0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.contiguous().cpu().reshape(-1), b.contiguous().cpu().reshape(-1)
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    a8 = a.view(torch.uint8) if a.numel() else a
    b8 = b.view(torch.uint8) if b.numel() else b
    return torch.equal(a8, b8)


# -- literal implementations of the paper's equations (HWC indexing, as written there) --------
def paper_down(x: np.ndarray, s: int) -> np.ndarray:
    """Eq. 3: R_down(X)[i, j, t] = X[i*s + (t mod s^2) // s, j*s + (t mod s^2) mod s, t // s^2]."""
    h, w, c = x.shape
    out = np.empty((h // s, w // s, c * s * s), dtype=x.dtype)
    for i in range(h // s):
        for j in range(w // s):
            for t in range(c * s * s):
                out[i, j, t] = x[i * s + (t % (s * s)) // s, j * s + (t % (s * s)) % s, t // (s * s)]
    return out


def paper_up(x: np.ndarray, s: int) -> np.ndarray:
    """Eq. 4: R_up(X)[i, j, t] = X[i // s, j // s, t*s^2 + s*(i mod s) + (j mod s)]."""
    h, w, c = x.shape
    out = np.empty((h * s, w * s, c // (s * s)), dtype=x.dtype)
    for i in range(h * s):
        for j in range(w * s):
            for t in range(c // (s * s)):
                out[i, j, t] = x[i // s, j // s, t * s * s + s * (i % s) + (j % s)]
    return out


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_matches_paper_equations(s):
    gen = torch.Generator().manual_seed(s)
    x = torch.randn(1, 3, 4 * s, 2 * s, generator=gen, dtype=torch.float64)
    hwc = x[0].permute(1, 2, 0).numpy()
    expect_down = torch.from_numpy(paper_down(hwc, s)).permute(2, 0, 1)[None]
    got_down = reshuffle_down(x, s)
    assert bitwise_equal(got_down, expect_down)
    y = torch.randn(1, 2 * s * s, 3, 5, generator=gen, dtype=torch.float64)
    expect_up = torch.from_numpy(paper_up(y[0].permute(1, 2, 0).numpy(), s)).permute(2, 0, 1)[None]
    assert bitwise_equal(reshuffle_up(y, s), expect_up)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("s", [1, 2, 3, 8])
def test_down_up_match_torch(device, dtype, layout, s):
    _cuda_param(device)
    gen = torch.Generator().manual_seed(hash((str(dtype), layout, s)) % 2**31)
    shape = (2, 3, 5 * s, 7 * s) if s < 8 else (1, 2, 2 * s, 3 * s)
    x = make_layout(random_tensor(shape, dtype, "cpu", gen).to(device), layout)
    y = reshuffle_down(x, s)
    assert bitwise_equal(y, F.pixel_unshuffle(x.contiguous(), s))
    if layout in ("contiguous", "channels_last"):
        assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last"
                               else torch.contiguous_format)
    z = make_layout(random_tensor((2, 3 * s * s, 5, 7), dtype, "cpu", gen).to(device), layout)
    u = reshuffle_up(z, s)
    assert bitwise_equal(u, F.pixel_shuffle(z.contiguous(), s))
    assert bitwise_equal(reshuffle_down(u, s), z.contiguous())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.float64], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_out_variant_writes_only_its_slice(device, dtype, layout):
    _cuda_param(device)
    gen = torch.Generator().manual_seed(7)
    s = 2
    x = make_layout(random_tensor((2, 12, 3, 5), dtype, "cpu", gen).to(device), layout)
    poison = torch.tensor(float("nan")).to(dtype) if dtype.is_floating_point else torch.tensor(123).to(dtype)
    buf = torch.empty(2, 10, 6, 10, dtype=dtype, device=device)
    buf = make_layout(buf, layout).fill_(poison.item())
    before = buf.clone()
    ret = reshuffle_up(x, s, out=buf[:, 3:6])
    assert ret.data_ptr() == buf[:, 3:6].data_ptr()
    assert bitwise_equal(buf[:, 3:6], F.pixel_shuffle(x.contiguous(), s))
    assert bitwise_equal(buf[:, :3], before[:, :3]) and bitwise_equal(buf[:, 6:], before[:, 6:])
    # down into a slice
    hi = random_tensor((2, 2, 6, 10), dtype, "cpu", gen).to(device)
    buf2 = torch.full((2, 11, 3, 5), poison.item(), dtype=dtype, device=device)
    reshuffle_down(hi, s, out=buf2[:, 1:9])
    assert bitwise_equal(buf2[:, 1:9], F.pixel_unshuffle(hi, s))
    assert bitwise_equal(buf2[:, :1], torch.full_like(buf2[:, :1], poison.item()))
    assert bitwise_equal(buf2[:, 9:], torch.full_like(buf2[:, 9:], poison.item()))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_unit_sizes(device):
    _cuda_param(device)
    for shape, s in [((0, 3, 4, 4), 2), ((2, 0, 4, 4), 2), ((2, 3, 0, 4), 2), ((1, 1, 1, 1), 1),
                     ((1, 1, 2, 2), 2), ((3, 1, 8, 8), 8)]:
        x = torch.randn(shape, device=device)
        n, c, h, w = shape
        y = reshuffle_down(x, s)
        # (torch's pixel_unshuffle returns the input shape unchanged for some empty inputs,
        # so the shape is checked against Eq. 3 directly)
        assert y.shape == (n, c * s * s, h // s, w // s)
        if x.numel():
            assert bitwise_equal(y, F.pixel_unshuffle(x, s))
    x = torch.randn(2, 4, 0, 3, device=device)
    assert reshuffle_up(x, 2).shape == (2, 1, 0, 6)


@pytest.mark.parametrize("call, match", [
    (lambda: reshuffle_down(torch.zeros(4, 4), 2), r"at least 3 dimensions, got a 2-D tensor of shape \[4, 4\]"),
    (lambda: reshuffle_up(torch.zeros(4), 1), r"reshuffle_up: .* at least 3 dimensions, got a 1-D tensor"),
    (lambda: reshuffle_down(torch.tensor(1.0), 1), r"at least 3 dimensions, got a 0-D tensor of shape \[\]"),
    (lambda: reshuffle_down(torch.zeros(2, 1, 3, 5, 4), 2),
     r"height 5 and width 4 must both be divisible by scale 2 \(input shape \[2, 1, 3, 5, 4\]\)"),
    (lambda: reshuffle_up(torch.zeros(6, 4, 4), 2), r"channels 6 must be divisible by scale\^2 = 4 \(input shape \[6, 4, 4\]\)"),
    (lambda: reshuffle_up(torch.zeros(2, 3, 8, 2, 2), 2, out=torch.zeros(2, 3, 2, 4, 5)),
     r"out has shape \[2, 3, 2, 4, 5\] but input \[2, 3, 8, 2, 2\] with scale 2 gives \[2, 3, 2, 4, 4\]"),
    (lambda: reshuffle_up(torch.zeros(8, 2, 2), 2, out=torch.zeros(1, 2, 4, 4)),
     r"out has shape \[1, 2, 4, 4\] but input \[8, 2, 2\] with scale 2 gives \[2, 4, 4\]"),
    (lambda: reshuffle_down(torch.zeros(1, 3, 5, 4), 2), r"height 5 and width 4 must both be divisible by scale 2"),
    (lambda: reshuffle_down(torch.zeros(1, 3, 4, 6), 4), r"height 4 and width 6 .* scale 4"),
    (lambda: reshuffle_up(torch.zeros(1, 6, 4, 4), 2), r"channels 6 must be divisible by scale\^2 = 4"),
    (lambda: reshuffle_up(torch.zeros(1, 4, 4, 4), 0), r"scale must be 1\.\.1048576, got 0"),
    (lambda: reshuffle_down(torch.zeros(1, 4, 4, 4), -2), r"scale must be 1\.\.1048576, got -2"),
    (lambda: reshuffle_down(torch.zeros(1, 4, 4, 4), 2.0), r"scale must be an int"),
    (lambda: reshuffle_down([[1.0]], 2), r"expected a torch.Tensor"),
    (lambda: reshuffle_up(torch.zeros(1, 8, 2, 2), 2, out=torch.zeros(1, 2, 4, 5)),
     r"out has shape \[1, 2, 4, 5\] but input \[1, 8, 2, 2\] with scale 2 gives \[1, 2, 4, 4\]"),
    (lambda: reshuffle_up(torch.zeros(1, 8, 2, 2), 2, out=torch.zeros(1, 2, 4, 4, dtype=torch.float64)),
     r"out has dtype torch.float64 but input has dtype torch.float32"),
    (lambda: reshuffle_down(torch.zeros(1, 1, 2, 2), 2, out=torch.zeros(1, 4, 1, 1).expand(2, 4, 1, 1)),
     r"out has shape \[2, 4, 1, 1\]"),
])
def test_bad_input_messages(call, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        call()


def test_direct_torch_ops_check_arguments_in_cpp():
    """torch.ops.* bypass the Python checks: the C++ kernels must reject bad input themselves."""
    ops = torch.ops.fastreshuffle
    with pytest.raises(RuntimeError, match=r"height 5 and width 4 must both be divisible by scale 2"):
        ops.reshuffle_down(torch.zeros(1, 3, 5, 4), 2)
    with pytest.raises(RuntimeError, match=r"channels 6 must be divisible by scale\^2 = 4"):
        ops.reshuffle_up(torch.zeros(1, 6, 4, 4), 2)
    with pytest.raises(RuntimeError, match=r"scale must be >= 1"):
        ops.reshuffle_up(torch.zeros(1, 6, 4, 4), 0)
    with pytest.raises(RuntimeError, match=r"4-D"):
        ops.reshuffle_up(torch.zeros(6, 4, 4), 1)
    with pytest.raises(RuntimeError, match=r"too large"):
        ops.reshuffle_up(torch.zeros(1, 4, 4, 4), 2**40)
    with pytest.raises(RuntimeError, match=r"out has shape"):
        ops.reshuffle_up_out(torch.zeros(1, 8, 2, 2), 2, torch.zeros(1, 2, 4, 5))
    with pytest.raises(RuntimeError, match=r"internal overlap"):
        ops.reshuffle_down_out(torch.zeros(1, 1, 2, 2), 2, torch.zeros(1, 1, 1, 1).expand(1, 4, 1, 1))
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(RuntimeError, match=r"overlaps the input"):
        ops.reshuffle_up_out(x, 1, x)


def test_lazy_conjugate_and_negative_views():
    x = torch.randn(1, 2, 4, 4, dtype=torch.complex64)
    assert bitwise_equal(reshuffle_down(x.conj(), 2), F.pixel_unshuffle(x.conj().resolve_conj(), 2))
    assert bitwise_equal(reshuffle_up(x.conj().imag.reshape(1, 4, 2, 4)[:, :, :, :2].contiguous(), 2),
                         F.pixel_shuffle(x.conj().imag.reshape(1, 4, 2, 4)[:, :, :, :2].contiguous(), 2))


def test_gradcheck_float64():
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reshuffle_down(t, 2), (x,))
    y = torch.randn(2, 8, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reshuffle_up(t, 2), (y,))
    assert torch.autograd.gradgradcheck(lambda t: reshuffle_up(t, 2), (y,))


def test_gradient_is_the_inverse_op():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    g = torch.randn(1, 32, 2, 2)
    reshuffle_down(x, 4).backward(g)
    assert bitwise_equal(x.grad, F.pixel_shuffle(g, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    _cuda_param(device)
    ops = torch.ops.fastreshuffle
    samples = [
        (ops.reshuffle_down, (torch.randn(2, 3, 4, 6, device=device), 2)),
        (ops.reshuffle_down, (torch.randn(2, 3, 4, 6, device=device).to(memory_format=torch.channels_last), 2)),
        (ops.reshuffle_up, (torch.randn(2, 8, 3, 5, device=device, requires_grad=True), 2)),
        (ops.reshuffle_down_out, (torch.randn(1, 2, 4, 4, device=device), 2, torch.empty(1, 8, 2, 2, device=device))),
        (ops.reshuffle_up_out, (torch.randn(1, 8, 2, 2, device=device), 2, torch.empty(1, 6, 4, 4, device=device)[:, 1:3])),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_matches_eager():
    def f(x):
        y = reshuffle_down(x, 2) * 2.0
        buf = torch.zeros(x.shape[0], 5, x.shape[2], x.shape[3])
        reshuffle_up(y, 2, out=buf[:, 1:4])
        return buf + 1

    x = torch.randn(2, 3, 6, 8)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), f(x))


# One dtype per element size (1, 2, 4, 8, 16 bytes): the CPU kernel has compile-time paths per
# element size, scale and (channels_last) channel count; every one must be exact, including
# the word (de)interleave ones.  Outputs are preallocated and poisoned so that an element the
# kernel forgets to write shows up.
def _poison(t, byte):
    """Fill every byte of t's storage with `byte`."""
    torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage()).fill_(byte)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32, torch.float64,
                                   torch.complex128], ids=str)
@pytest.mark.parametrize("s", [2, 3, 4, 8])
@pytest.mark.parametrize("c", [1, 2, 3, 4, 5, 9, 37])  # 37: vector bodies of the channel transposes + tails
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_fast_paths_every_element_size(dtype, s, c, layout):
    gen = torch.Generator().manual_seed(hash((str(dtype), s, c, layout)) % 2**31)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = random_tensor((2, c, 3 * s, 37 * s), dtype, "cpu", gen).contiguous(memory_format=fmt)
    expect = F.pixel_unshuffle(x.contiguous(), s)
    out = torch.empty(expect.shape, dtype=dtype).contiguous(memory_format=fmt)
    _poison(out, 0xA5)
    reshuffle_down(x, s, out=out)
    assert bitwise_equal(out, expect)
    assert bitwise_equal(reshuffle_down(x, s), expect)
    back = torch.empty(x.shape, dtype=dtype).contiguous(memory_format=fmt)
    _poison(back, 0x5A)
    reshuffle_up(out, s, out=back)
    assert bitwise_equal(back, x)
    assert bitwise_equal(reshuffle_up(out, s), x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32, torch.float64,
                                   torch.complex128], ids=str)
@pytest.mark.parametrize("s", [2, 4, 8])
@pytest.mark.parametrize("c", [3, 32])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "unaligned"])
def test_vectorized_micro_tile_shapes(device, dtype, s, c, layout):
    # Shapes the 16-byte micro-tile kernels take (NCHW; channels_last RGB; channels_last with
    # many channels at scale 2), poisoned outputs, both directions; "unaligned" starts the
    # tensors one element into their storage, so the launcher must fall back to the general path.
    # (On CPU the same cases run through the CPU kernels.)
    _cuda_param(device)
    gen = torch.Generator().manual_seed(hash((str(dtype), s, c, layout)) % 2**31)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def place(t):
        if layout != "unaligned":
            return t.to(device).contiguous(memory_format=fmt)
        flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=device)
        v = flat[1:].view(t.shape)
        v.copy_(t)
        return v

    def poisoned_like(shape):
        if layout != "unaligned":
            out = torch.empty(shape, dtype=dtype, device=device).contiguous(memory_format=fmt)
        else:
            out = torch.empty(int(np.prod(shape)) + 1, dtype=dtype, device=device)[1:].view(shape)
        _poison(out, 0xA5)
        return out

    x = place(random_tensor((2, c, 4 * s, 32 * s), dtype, "cpu", gen))
    expect = F.pixel_unshuffle(x.contiguous(), s)
    out = poisoned_like(expect.shape)
    reshuffle_down(x, s, out=out)
    assert bitwise_equal(out, expect)
    z = place(random_tensor((2, c * s * s, 4, 32), dtype, "cpu", gen))
    expect = F.pixel_shuffle(z.contiguous(), s)
    back = poisoned_like(expect.shape)
    reshuffle_up(z, s, out=back)
    assert bitwise_equal(back, expect)


@pytest.mark.parametrize("s", [2, 3, 4, 8])
def test_cpu_rgb_uint8_channels_last_every_width(s):
    # RGB uint8 channels_last has its own byte-shuffle path: vector groups of 1 or 2
    # low-resolution pixels, and an element loop for the last ones where a 16-byte load would
    # leave the row.  Every width from 1 to 11 crosses that boundary at each scale.
    gen = torch.Generator().manual_seed(100 + s)
    for w in range(1, 12):
        x = random_tensor((2, 3, 2 * s, w * s), torch.uint8, "cpu", gen).contiguous(
            memory_format=torch.channels_last)
        expect = F.pixel_unshuffle(x.contiguous(), s)
        out = torch.empty(expect.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        _poison(out, 0xA5)
        reshuffle_down(x, s, out=out)
        assert bitwise_equal(out, expect), (s, w)
        back = torch.empty(x.shape, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        _poison(back, 0x5A)
        reshuffle_up(out, s, out=back)
        assert bitwise_equal(back, x), (s, w)


def test_large_outputs_on_huge_pages_behave_like_tensors():
    # outputs >= 32 MiB come from the extension's huge-page allocator: same values, layout and
    # tensor behaviour (resize, storage sharing, serialization) as any other CPU tensor
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 2048, 2048, generator=gen)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        y = reshuffle_down(inp, 2)
        assert y.numel() * y.element_size() >= 32 << 20
        assert bitwise_equal(y, F.pixel_unshuffle(x, 2))
        assert y.is_contiguous(memory_format=torch.channels_last if inp is not x else torch.contiguous_format)
        assert bitwise_equal(reshuffle_up(y, 2), x)
    y = reshuffle_down(x, 2)
    buf = io.BytesIO()
    torch.save(y, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf), y)
    arr = y.numpy()
    assert arr[0, 5, 7, 9] == y[0, 5, 7, 9].item()
    y.resize_(2, 3, 4, 5).fill_(1.0)
    assert y.sum().item() == 120


def test_out_sharing_memory_in_ways_the_kernel_cannot_check_is_still_right():
    """A non-dense ``out`` overlapping a non-dense input passed the kernel's check ("too hard" for
    torch) and was written while being read: a silently wrong result."""
    buf = torch.randn(2, 8, 4, 4)
    x = buf[:, 4:8]
    ref = F.pixel_shuffle(x.clone(), 2)
    out = buf[:, 2:6].view(2, 1, 8, 8)                    # shares channels 4-5 with x
    assert torch.equal(reshuffle_up(x, 2, out=out), ref)
    buf = torch.randn(2, 12, 4, 4)
    x = buf[:, 2:6]
    ref = F.pixel_unshuffle(x.clone(), 2)
    out = torch.zeros(2, 32, 2, 2)[:, 8:24]                # a slice of another buffer
    assert torch.equal(reshuffle_down(x, 2, out=out), ref)
    buf = torch.randn(2, 20, 4, 4)                          # disjoint slices of one buffer
    x, before = buf[:, 0:4], buf[:, 0:4].clone()
    out = buf[:, 4:20, :2, :2]
    assert torch.equal(reshuffle_down(x, 2, out=out), F.pixel_unshuffle(before, 2))
    assert torch.equal(buf[:, 0:4], before)


def test_out_sharing_memory_under_torch_compile_is_still_right():
    """Under torch.compile the eager overlap check cannot run (no data pointers while tracing):
    an aliasing ``out`` got the kernel directly, which passed it as "too hard" and gave wrong
    values with no error."""
    def f(buf):
        reshuffle_up(buf[:, :4], 2, out=buf.view(2, 2, 8, 8)[:, :1])
        return buf
    buf = torch.arange(2 * 8 * 4 * 4.).view(2, 8, 4, 4)
    ref = F.pixel_shuffle(buf[:, :4].clone(), 2)
    out = torch.compile(f, fullgraph=True)(buf.clone())     # inductor: aot_eager kept it right
    assert torch.equal(out.view(2, 2, 8, 8)[:, :1], ref)


def test_huge_scales_and_quantized_tensors_are_refused_clearly():
    with pytest.raises(ValueError, match="scale must be 1..1048576"):
        reshuffle_up(torch.zeros(1, 0, 2, 2), 2 ** 21)
    with pytest.warns(UserWarning):   # torch deprecates quantized tensors
        q = torch.quantize_per_tensor(torch.rand(1, 4, 2, 2), 0.1, 0, torch.quint8)
    with pytest.raises(TypeError, match="quantized tensors are not supported"):
        reshuffle_up(q, 2)


def test_out_rules_as_torch_has_them():
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        reshuffle_up(x, 2, out=torch.empty(1, 1, 6, 6))
    with torch.no_grad():                                   # no graph wanted: fine
        reshuffle_up(x, 2, out=torch.empty(1, 1, 6, 6))
    with pytest.raises(TypeError, match="not bool"):
        reshuffle_up(x.detach(), True)
    for bad in (torch.empty(1, 1, 6, 6, dtype=torch.complex64).conj(), torch.empty(1, 1, 6, 6)._neg_view()):
        src = torch.randn(1, 4, 3, 3, dtype=bad.dtype)
        with pytest.raises(ValueError, match="lazily conjugated or negated"):
            reshuffle_up(src, 2, out=bad)


def test_forward_mode_ad_is_refused_not_zero():
    x, t = torch.randn(1, 4, 3, 3, dtype=torch.float64), torch.randn(1, 4, 3, 3, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(lambda z: reshuffle_up(z, 2), (x,), (t,))
    import torch.autograd.forward_ad as fwad
    with fwad.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD"):
        reshuffle_down(fwad.make_dual(x, t), 1)


def test_torch_func_derivative_transforms_are_refused_clearly():
    """torch.func.grad / jacrev through the ops failed inside torch, on autograd.Function's
    setup_context; now said plainly.  vmap keeps working, and plain autograd too."""
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    for f in (lambda z: reshuffle_up(z, 2).sum(), lambda z: reshuffle_down(z, 1).sum()):
        for transform in (torch.func.grad, torch.func.jacrev):
            with pytest.raises(NotImplementedError, match="torch.func's grad / jacrev / jvp"):
                transform(f)(x)
    assert torch.equal(torch.vmap(lambda z: reshuffle_up(z, 2))(x[None]), reshuffle_up(x, 2)[None])
    g, = torch.autograd.grad(reshuffle_up(x.requires_grad_(), 2).sum(), x)
    assert torch.equal(g, torch.ones_like(x))


def test_sparse_tensors_are_refused_with_a_clear_error():
    """They reached the dispatcher's "Could not run ... from the 'SparseCPU' backend"."""
    for op in (reshuffle_down, reshuffle_up):
        with pytest.raises(TypeError, match="sparse_coo tensors are not supported"):
            op(torch.zeros(1, 4, 2, 2).to_sparse(), 2)


@pytest.mark.skipif(fastreshuffle.ops.built_with_cuda(), reason="the extension has its CUDA kernels")
def test_cuda_tensors_fall_back_to_torch_without_the_cuda_kernels():
    """Built without nvcc (as here): the ops have CUDA kernels all the same -- torch's
    pixel_(un)shuffle, registered from Python -- so a CUDA torch never fails in the dispatcher.
    Run on CPU tensors: the same values as the ops, ``out=`` written, bad arguments refused."""
    import warnings

    from fastreshuffle.ops import reshuffle as R
    for name in R.TORCH_CUDA_FALLBACK:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastreshuffle::{name}", "CUDA"), name
    ops = torch.ops.fastreshuffle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in (torch.randn(2, 3, 8, 12), torch.randint(0, 255, (1, 3, 12, 8), dtype=torch.uint8)
                  .contiguous(memory_format=torch.channels_last), torch.randn(2, 3, 16, 12)[:, :, ::2]):
            down = R._torch_down(x, 2)
            assert torch.equal(down, ops.reshuffle_down(x, 2))
            assert torch.equal(R._torch_up(down, 2), ops.reshuffle_up(down, 2))
            for got, want in ((down, ops.reshuffle_down(x, 2)), (R._torch_up(down, 2), ops.reshuffle_up(down, 2))):
                assert got.stride() == want.stride()      # the ops keep the input's memory format
            buf = torch.full((x.shape[0], 13, x.shape[2] // 2, x.shape[3] // 2), 7, dtype=x.dtype)
            R._torch_down_out(x, 2, buf[:, :12])
            assert torch.equal(buf[:, :12], down) and (buf[:, 12] == 7).all()
            up = torch.zeros_like(x)
            R._torch_up_out(down, 2, up)
            assert torch.equal(up, x)
        with pytest.raises(ValueError, match="scale"):
            R._torch_down(torch.zeros(1, 1, 4, 4), 0)
        with pytest.raises((ValueError, RuntimeError)):
            R._torch_down_out(torch.zeros(1, 1, 4, 4), 2, torch.zeros(1, 3, 2, 2))
    with pytest.warns(UserWarning, match="without its CUDA kernels"):
        R._torch_up(torch.zeros(1, 4, 2, 2), 2)
