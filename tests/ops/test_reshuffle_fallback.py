"""The CUDA fallback of the reshuffle ops (mutation review mut32): registered under the right
names, its out= checks, and the memory format kept where torch's kernels return contiguous."""
import warnings

import pytest
import torch

from fastreshuffle.ops import reshuffle as R


def test_each_fallback_is_the_op_of_its_name():
    """TORCH_CUDA_FALLBACK maps each op to its own torch version (the dispatcher test only sees
    that some kernel is there): called as the op would be, on CPU, the same values."""
    ops = torch.ops.fastreshuffle
    x = torch.randn(2, 3, 8, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in R.TORCH_CUDA_FALLBACK.items():
            down = name.startswith("reshuffle_down")
            inp = x if down else ops.reshuffle_down(x, 2)
            want = getattr(ops, name.replace("_out", ""))(inp, 2)
            if name.endswith("_out"):
                got = torch.empty_like(want)
                assert fn(inp, 2, got) is None
            else:
                got = fn(inp, 2)
            assert torch.equal(got, want), name


def test_fallback_out_of_another_dtype_is_refused():
    """out.copy_ would cast silently: the fallback checks out= as the kernels do."""
    x = torch.randn(1, 4, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match="dtype"):
            R._torch_down_out(x, 2, torch.empty(1, 16, 2, 2, dtype=torch.float64))
        with pytest.raises(TypeError, match="dtype"):
            R._torch_up_out(x, 2, torch.empty(1, 1, 8, 8, dtype=torch.float64))


def test_fallback_keeps_channels_last_where_torch_returns_contiguous(monkeypatch):
    """torch's CUDA pixel_(un)shuffle return contiguous tensors (its CPU ones keep the format, so
    the CPU test above cannot see it): simulated here, the fallback still keeps the input's."""
    F = torch.nn.functional
    real_down, real_up = F.pixel_unshuffle, F.pixel_shuffle
    monkeypatch.setattr(F, "pixel_unshuffle", lambda x, s: real_down(x, s).contiguous())
    monkeypatch.setattr(F, "pixel_shuffle", lambda x, s: real_up(x, s).contiguous())
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y in (R._torch_down(x, 2), R._torch_up(x, 2)):
            assert y.is_contiguous(memory_format=torch.channels_last)
