"""Property-based tests (hypothesis) of the reshuffle ops: random shapes (0 and 1 sizes
included), scales 1-8, dtypes, memory formats, strided views and out-variants writing into
slices always equal torch exactly; invalid combinations always raise a clear error.

The number of cases each property ran is printed in pytest's terminal summary."""
import collections

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastreshuffle import reshuffle_down, reshuffle_up  # noqa: E402

CASES = collections.Counter()

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
          torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]
LAYOUTS = ["contiguous", "channels_last", "channel_slice", "transposed", "stepped", "batch_slice"]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _fill(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_complex or dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.complex64 if dtype.is_complex else torch.float64).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=g).to(dtype)


def _layout(x, layout):
    n, c, h, w = x.shape
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "channel_slice":
        buf = torch.zeros((n, c + 3, h, w), dtype=x.dtype)
        buf[:, 1:1 + c] = x
        return buf[:, 1:1 + c]
    if layout == "transposed":
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "stepped":
        big = torch.zeros((n, c, h, 2 * w), dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "batch_slice":
        big = torch.zeros((2 * n, c, h, w), dtype=x.dtype)
        big[::2] = x
        return big[::2]
    return x.contiguous()


def _same_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    if a.numel() == 0 or a.dtype == torch.bool:
        assert torch.equal(a, b)
    else:
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


shapes = st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))


@FUZZ
@given(nchw=shapes, s=st.integers(1, 8), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       seed=st.integers(0, 2**31 - 1))
def test_down_then_up_equals_torch(nchw, s, dtype, layout, seed):
    n, c, hb, wb = nchw
    x = _layout(_fill((n, c, hb * s, wb * s), dtype, seed), layout)
    y = reshuffle_down(x, s)
    assert y.shape == (n, c * s * s, hb, wb)
    if x.numel():  # torch's pixel_unshuffle mis-shapes some empty inputs
        _same_bits(y, F.pixel_unshuffle(x.contiguous(), s))
    _same_bits(reshuffle_up(y, s), x.contiguous())
    CASES["down/up vs torch"] += 1


@FUZZ
@given(nchw=shapes, s=st.integers(1, 8), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       before=st.integers(0, 3), after=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_out_variant_into_slices(nchw, s, dtype, layout, before, after, seed):
    n, c, h, w = nchw
    x = _layout(_fill((n, c * s * s, h, w), dtype, seed), layout)
    buf = _layout(_fill((n, before + c + after, h * s, w * s), dtype, seed + 1), layout)
    keep = buf.clone()
    reshuffle_up(x, s, out=buf[:, before:before + c])
    _same_bits(buf[:, before:before + c], F.pixel_shuffle(x.contiguous(), s) if x.numel()
               else torch.empty((n, c, h * s, w * s), dtype=dtype))
    _same_bits(buf[:, :before], keep[:, :before])
    _same_bits(buf[:, before + c:], keep[:, before + c:])
    # and down into a slice
    buf2 = _fill((n, before + c * s * s + after, h, w), dtype, seed + 2)
    keep2 = buf2.clone()
    hi = _fill((n, c, h * s, w * s), dtype, seed + 3)
    reshuffle_down(hi, s, out=buf2[:, before:before + c * s * s])
    if hi.numel():
        _same_bits(buf2[:, before:before + c * s * s], F.pixel_unshuffle(hi, s))
    _same_bits(buf2[:, :before], keep2[:, :before])
    _same_bits(buf2[:, before + c * s * s:], keep2[:, before + c * s * s:])
    CASES["out= into slices"] += 1


@FUZZ
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=6), s=st.integers(-3, 9),
       up=st.booleans(), out_delta=st.sampled_from([None, 0, 1]))
def test_invalid_inputs_raise_clear_errors(shape, s, up, out_delta):
    x = torch.zeros(shape)
    op = reshuffle_up if up else reshuffle_down
    valid = len(shape) >= 3 and s >= 1          # (*, C, H, W), as torch's pixel (un)shuffle
    if valid:
        c, h, w = shape[-3:]
        valid = (c % (s * s) == 0) if up else (h % s == 0 and w % s == 0)
    out = None
    if valid and out_delta is not None:
        c, h, w = shape[-3:]
        oshape = shape[:-3] + ([c // (s * s), h * s, w * s] if up else [c * s * s, h // s, w // s])
        oshape[-1] += out_delta
        out = torch.empty(oshape)
        valid = out_delta == 0
    if valid:
        op(x, s, out=out) if out is not None else op(x, s)
        CASES["valid (no error)"] += 1
        return
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        op(x, s, out=out) if out is not None else op(x, s)
    msg = str(info.value)
    assert ("at least 3 dimensions" in msg or "scale" in msg or "divisible" in msg or "out has shape" in msg), msg
    CASES["invalid -> clear error"] += 1


def pytest_terminal_summary_lines():
    return [f"{k}: {v} cases" for k, v in sorted(CASES.items())]
