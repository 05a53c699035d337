"""nn.grow: a trained network grown into a larger config computes the same function, and every
new weight trains (tools.grow_weights writes it)."""
import pytest
import torch

from fastreshuffle.io.weights import read_weights, save_weights
from fastreshuffle.nn import ReshuffleNet
from fastreshuffle.nn.config import PRESETS
from fastreshuffle.nn.grow import grow_state_dict


def _trained(cfg, seed=0):
    """A network with every weight non-zero (a fresh one has a zero-free but default tail)."""
    torch.manual_seed(seed)
    net = ReshuffleNet(cfg).double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net


def _grown(small, big_cfg, seed=1):
    torch.manual_seed(seed)
    big = ReshuffleNet(big_cfg).double()
    big.load_state_dict(grow_state_dict(small.config, small.state_dict(), big.config, big.state_dict()))
    return big


@pytest.mark.parametrize("pair", [("tiny", "small"), ("small", "paper"), ("tiny", "paper")])
def test_grown_network_computes_the_same(pair):
    small = _trained(PRESETS[pair[0]])
    big = _grown(small, PRESETS[pair[1]])
    x = torch.rand(2, 3, 37, 45, dtype=torch.float64)
    with torch.no_grad():
        a, b = small(x), big(x)
    assert (a - x).abs().max() > 1e-2                  # the small network does something
    assert (a - b).abs().max() < 1e-12


def test_every_new_weight_trains():
    """Two SGD steps move every tensor of the grown network: the zero conv2 of the new outputs
    gets a gradient through the (random) weights that read those channels, and then the new
    hidden units and columns get theirs.  With zeros on both sides nothing new would move."""
    small = _trained(PRESETS["tiny"])
    big = _grown(small, PRESETS["small"])
    start = {k: v.clone() for k, v in big.state_dict().items()}
    opt = torch.optim.SGD(big.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=gen)
        opt.zero_grad()
        torch.nn.functional.l1_loss(big(x), torch.rand(x.shape, dtype=x.dtype, generator=gen)).backward()
        opt.step()
    still = [k for k, v in big.state_dict().items() if torch.equal(v, start[k])]
    assert not still, still
    # and in each tensor, the entries that were zero (new outputs) moved too
    for k, v in start.items():
        if k.endswith("conv2.weight"):
            zero = v == 0
            assert zero.any() and (big.state_dict()[k][zero] != 0).all(), k


def test_refuses_what_it_cannot_grow():
    with pytest.raises(ValueError, match="shrink"):
        _grown(_trained(PRESETS["small"]), PRESETS["tiny"])
    with pytest.raises(ValueError, match="residual"):
        from dataclasses import replace
        _grown(_trained(PRESETS["tiny"]), replace(PRESETS["small"], residual=False))
    # small -> medium: growth 32 -> 48, no placement keeps the positions modulo 64
    with pytest.raises(ValueError, match="congruent"):
        _grown(_trained(PRESETS["small"]), PRESETS["medium"])


def test_grow_weights_tool(tmp_path, capsys):
    from tools import grow_weights
    src, dst = tmp_path / "tiny.safetensors", tmp_path / "small.safetensors"
    small = _trained(PRESETS["tiny"]).float()
    save_weights(small, src, metadata={"codec": "hevc", "step": "7"})
    assert grow_weights.main([str(src), str(dst), "--preset", "small", "--half"]) == 0
    cfg, state, meta = read_weights(dst)
    assert cfg == PRESETS["small"] and meta["grown_from"] == str(src)
    assert meta["codec"] == "hevc" and "step" not in meta     # the same function, not the same run
    assert all(v.dtype == torch.float16 for v in state.values())
    big = ReshuffleNet(cfg)
    big.load_state_dict({k: v.float() for k, v in state.items()})
    x = torch.rand(1, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=0, atol=5e-3)   # fp16 storage of the small weights
    assert grow_weights.main([str(src), str(dst), "--preset", "small"]) == 2      # exists
    assert grow_weights.main([str(dst), str(tmp_path / "t.safetensors"), "--preset", "tiny"]) == 2
    assert "shrink" in capsys.readouterr().err
    assert grow_weights.main([str(dst), str(tmp_path / "s.safetensors"), "--preset", "small"]) == 2
    assert "already is a small network" in capsys.readouterr().err
    assert not (tmp_path / "s.safetensors").exists() and not (tmp_path / "t.safetensors").exists()
