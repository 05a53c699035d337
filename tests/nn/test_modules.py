"""ReshuffleUp / ReshuffleDown (drop-ins for nn.PixelShuffle / nn.PixelUnshuffle) and
replace_pixel_shuffle."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastreshuffle
from fastreshuffle import ReshuffleDown, ReshuffleUp, replace_pixel_shuffle


def _bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def test_exported_at_package_top_and_nn():
    import fastreshuffle.nn as fnn
    assert fastreshuffle.ReshuffleUp is fnn.ReshuffleUp is ReshuffleUp
    assert fastreshuffle.ReshuffleDown is fnn.ReshuffleDown
    assert fastreshuffle.replace_pixel_shuffle is fnn.replace_pixel_shuffle
    for name in ("ReshuffleUp", "ReshuffleDown", "replace_pixel_shuffle"):
        assert name in fastreshuffle.__all__ and name in dir(fastreshuffle) and name in fnn.__all__
    # dir() lists the API, not the package's own helpers (it showed `annotations` and `importlib`)
    assert set(fastreshuffle.__all__) <= set(dir(fastreshuffle))
    assert not [n for n in dir(fastreshuffle) if n in ("annotations", "importlib") or n.startswith("_L")]


def test_modules_mirror_torch():
    up, down = ReshuffleUp(3), ReshuffleDown(2)
    assert up.upscale_factor == 3 and down.downscale_factor == 2
    assert repr(up) == repr(nn.PixelShuffle(3)).replace("PixelShuffle", "ReshuffleUp")
    assert repr(down) == repr(nn.PixelUnshuffle(2)).replace("PixelUnshuffle", "ReshuffleDown")
    assert up.extra_repr() == nn.PixelShuffle(3).extra_repr() == "upscale_factor=3"
    assert down.extra_repr() == nn.PixelUnshuffle(2).extra_repr() == "downscale_factor=2"
    assert ReshuffleUp(upscale_factor=2).upscale_factor == 2
    assert ReshuffleDown(downscale_factor=4).downscale_factor == 4
    for m in (up, down):      # state-free
        assert not list(m.parameters()) and not list(m.buffers()) and m.state_dict() == {}


@pytest.mark.parametrize("shape", [(18, 4, 5), (2, 18, 4, 5), (2, 3, 18, 4, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8, torch.bool, torch.complex64], ids=str)
def test_module_outputs_bit_identical(shape, dtype):
    x = (torch.randn(shape) * 50).to(dtype) if dtype != torch.complex64 else torch.randn(shape, dtype=dtype)
    assert _bits(ReshuffleUp(3)(x), nn.PixelShuffle(3)(x))
    y = x[..., :4, :4]
    assert _bits(ReshuffleDown(2)(y), nn.PixelUnshuffle(2)(y))


def test_module_gradients_match_torch():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ReshuffleUp(2), (x,))
    assert torch.autograd.gradcheck(ReshuffleDown(3), (torch.randn(1, 2, 6, 3, dtype=torch.float64,
                                                                    requires_grad=True),))


def test_modules_compile_fullgraph_and_export():
    m = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), ReshuffleUp(2), ReshuffleDown(2))
    x = torch.randn(2, 3, 6, 8)
    eager = m(x)
    assert torch.equal(torch.compile(m, fullgraph=True, backend="aot_eager")(x), eager)
    ep = torch.export.export(m, (x,))
    assert torch.equal(ep.module()(x), eager)


class _SRNet(nn.Module):
    """A model mixing both modules, nested containers, a shared module and a functional call."""

    def __init__(self):
        super().__init__()
        self.down = nn.PixelUnshuffle(2)
        self.body = nn.Sequential(nn.Conv2d(12, 48, 3, padding=1), nn.ReLU())
        self.ups = nn.ModuleList([nn.PixelShuffle(2), nn.Conv2d(12, 12, 1)])
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(12, 12, 1), nn.PixelShuffle(2))})
        self.shared = self.ups[0]            # the same module under two names

    def forward(self, x):
        y = self.body(self.down(x))
        y = self.ups[1](self.ups[0](y))
        y = self.heads["a"](y)
        return F.pixel_unshuffle(y, 2) + self.shared(torch.cat([y] * 4, 1))[:, :3, ::2, ::2].sum()


def test_replace_pixel_shuffle_swaps_everything_and_keeps_outputs():
    torch.manual_seed(0)
    model = _SRNet().eval()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        want = model(x)
    changes = replace_pixel_shuffle(model)
    names = sorted(c.name for c in changes)
    assert names == ["down", "heads.a.1", "shared", "ups.0"]
    for name, old, new in changes:
        assert type(old) in (nn.PixelShuffle, nn.PixelUnshuffle)
        assert model.get_submodule(name) is new
        assert isinstance(new, ReshuffleUp if isinstance(old, nn.PixelShuffle) else ReshuffleDown)
    assert model.shared is model.ups[0]                      # still one shared module
    assert not any(type(m) in (nn.PixelShuffle, nn.PixelUnshuffle) for m in model.modules())
    assert model.state_dict().keys() == before_state.keys()
    with torch.no_grad():
        assert _bits(model(x), want)
    assert replace_pixel_shuffle(model) == []                # idempotent


def test_replace_pixel_shuffle_keeps_training_mode_and_hooks_and_skips_subclasses():
    class MyShuffle(nn.PixelShuffle):
        def forward(self, x):
            return super().forward(x) * 2

    seen = []
    ps = nn.PixelShuffle(2)
    handle = ps.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model = nn.Sequential(ps, MyShuffle(1)).train()
    model[0].eval()
    changes = replace_pixel_shuffle(model)
    assert [c.name for c in changes] == ["0"]
    assert isinstance(model[0], ReshuffleUp) and not model[0].training
    assert type(model[1]) is MyShuffle
    model(torch.randn(1, 4, 2, 2))
    assert seen == [torch.Size([1, 1, 4, 4])]
    handle.remove()                                          # the user's handle still removes it
    model(torch.randn(1, 4, 2, 2))
    assert len(seen) == 1


def test_replace_pixel_shuffle_argument_errors():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        replace_pixel_shuffle("model")
    with pytest.raises(ValueError, match="itself a PixelShuffle"):
        replace_pixel_shuffle(nn.PixelShuffle(2))


def test_bench_upsamplers_smoke(capsys):
    """The benchmark runs end to end (tiny shapes, one round) and checks bit-identity itself."""
    from benchmarks import bench_upsamplers

    assert bench_upsamplers.main(["--tiny", "--devices", "cpu", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "ESPCN x3" in out and "EDSR x4 upsampler" in out
    assert "Real-ESRGAN" in out and "FAILED" not in out


def test_bench_upsamplers_fails_loudly(monkeypatch, capsys):
    from benchmarks import bench_upsamplers

    def broken(model):           # a wrong swap: the benchmark must refuse to time it
        model[-1] = ReshuffleUp(1)
        return [("x", None, None)]

    monkeypatch.setattr(bench_upsamplers.fastreshuffle, "replace_pixel_shuffle", broken)
    assert bench_upsamplers.main(["--tiny", "--devices", "cpu", "--cases", "ESPCN",
                                  "--repeats", "1", "--warmup", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out
