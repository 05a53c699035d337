"""Grow a trained network into a larger config that computes exactly the same function.

Training a larger preset from scratch starts at a gain of zero; grown from a trained smaller one
it starts where that one stands and only has to add to it.  The larger network is ``big``'s
usual initialisation with the small network's weights copied in:

* small dense layer ``i`` of a block becomes part of a big layer ``j(i)`` (increasing in ``i``):
  its hidden units are the big layer's first ones, its outputs sit at a run of the big layer's
  output slots;
* every big output that holds no small output, and every big layer that holds no small one, gets
  a zero ``conv2`` (weights and bias): those channels are exactly zero, and the extra hidden
  units feed nothing;
* every weight *reading* channels is copied from the small network where the channel carries a
  small one and keeps its random initialisation where it is zero: the gradient reaches the zero
  outputs through those random weights, so the new capacity trains (zeros on both sides never
  would).

The up-reshuffles interleave groups of 4 consecutive channels, and the big network's channel
positions differ from the small one's, so one small channel may end up spread over several big
channels, each holding its pixels at some sub-positions and zeros at the others: the small
channel is their *sum*, and since everything reading channels is linear before any ELU, each of
them gets the small network's weights for it.  That works when every small output is placed at
a big position congruent to its own modulo 4 ** (up-reshuffles still to come), which the layer
placement ensures, and is checked at every reshuffle.

Works for ``tiny`` -> ``small`` -> ``paper`` and ``tiny`` -> ``medium``; a pair without such a
placement (``small`` -> ``medium``, ``medium`` -> ``paper``), or a big network smaller anywhere,
raises ``ValueError``.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .config import IN_CHANNELS, DOWN_STEPS, ReshuffleNetConfig

__all__ = ["grow_state_dict"]


def _check(small: ReshuffleNetConfig, big: ReshuffleNetConfig) -> None:
    if small.residual != big.residual:
        raise ValueError(f"cannot grow residual={small.residual} into residual={big.residual}")
    for b in range(3):
        if (big.growth[b] < small.growth[b] or big.layers[b] < small.layers[b]
                or big.bottleneck * big.growth[b] < small.bottleneck * small.growth[b]):
            raise ValueError(f"cannot grow {small} into {big}: block {b} would shrink "
                             f"(growth {small.growth[b]} -> {big.growth[b]}, layers {small.layers[b]} -> "
                             f"{big.layers[b]}, hidden {small.bottleneck * small.growth[b]} -> "
                             f"{big.bottleneck * big.growth[b]})")


def _place(small_pos: int, n_small: int, big_start: int, n_big: int, modulus: int, first_layer: int,
           layers: int, where: str):
    """(big layer, first output slot) for a small layer whose outputs start at ``small_pos``:
    the first big layer from ``first_layer`` on where the slot keeps the position modulo
    ``modulus`` and the outputs fit."""
    for j in range(first_layer, layers):
        slot = (small_pos - big_start - n_big * j) % modulus
        if slot + n_small <= n_big:
            return j, slot
    raise ValueError(f"cannot grow: {where} has no big layer left to hold small outputs at a position "
                     f"congruent modulo {modulus}")


def _shuffled(owner: List[Optional[int]], where: str) -> List[Optional[int]]:
    """Owners after an up-reshuffle by 2.  ``owner[q]``: the small channel that big channel ``q``
    is a part of (None: zero).  Big channel ``G`` is big's ``4G..4G+3``; it is part of small
    channel ``g`` when its non-zero members are parts of small ``4g + r`` at the same ``r``."""
    out: List[Optional[int]] = []
    for big in range(len(owner) // 4):
        parts = {(x // 4) for r, x in enumerate(owner[4 * big:4 * big + 4]) if x is not None}
        bad = [(4 * big + r, x) for r, x in enumerate(owner[4 * big:4 * big + 4]) if x is not None and x % 4 != r]
        if len(parts) > 1 or bad:
            raise ValueError(f"cannot grow: {where}, big channels {4 * big}..{4 * big + 3} hold parts of "
                             f"small channels {owner[4 * big:4 * big + 4]}, not one aligned group")
        out.append(parts.pop() if parts else None)
    return out


@torch.no_grad()
def grow_state_dict(small_cfg: ReshuffleNetConfig, small: Dict[str, torch.Tensor],
                    big_cfg: ReshuffleNetConfig, big_init: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state_dict of ``big_cfg`` computing what ``small`` (of ``small_cfg``) computes; the
    entries not taken from ``small`` come from ``big_init`` (a fresh network's state_dict) or are
    zero, as the module docstring says.  Returned in ``big_init``'s dtypes."""
    _check(small_cfg, big_cfg)
    out = {k: v.detach().clone() for k, v in big_init.items()}
    owner: List[Optional[int]] = list(range(IN_CHANNELS * 4 ** DOWN_STEPS))   # the reshuffled input

    def copy_reader(weight: torch.Tensor, rows: int, small_weight: torch.Tensor) -> None:
        for q, x in enumerate(owner):
            if x is not None:
                weight[:rows, q] = small_weight[:, x].to(weight.dtype)

    for b in range(3):
        (cin_s, _), (cin_b, _) = small_cfg.block_channels()[b], big_cfg.block_channels()[b]
        ns, nb = small_cfg.growth[b], big_cfg.growth[b]
        hs = small_cfg.bottleneck * ns
        modulus = 4 ** (DOWN_STEPS - b)          # up-reshuffles from this block to the tail
        for i in range(big_cfg.layers[b]):
            pre = f"blocks.{b}.layers.{i}."
            out[pre + "conv2.weight"].zero_()
            out[pre + "conv2.bias"].zero_()
        owner += [None] * (nb * big_cfg.layers[b])
        j = 0
        for i in range(small_cfg.layers[b]):
            j, slot = _place(cin_s + ns * i, ns, cin_b, nb, modulus, j, big_cfg.layers[b], f"block {b}")
            src, dst = f"blocks.{b}.layers.{i}.", f"blocks.{b}.layers.{j}."
            w1 = out[dst + "conv1.weight"]
            copy_reader(w1[:, :cin_b + nb * j], hs, small[src + "conv1.weight"])
            out[dst + "conv1.bias"][:hs] = small[src + "conv1.bias"].to(w1.dtype)
            out[dst + "conv2.weight"][slot:slot + ns, :hs] = small[src + "conv2.weight"].to(w1.dtype)
            out[dst + "conv2.bias"][slot:slot + ns] = small[src + "conv2.bias"].to(w1.dtype)
            first = cin_b + nb * j + slot
            owner[first:first + ns] = range(cin_s + ns * i, cin_s + ns * (i + 1))
            j += 1
        owner = _shuffled(owner, f"after block {b}")
    copy_reader(out["tail.weight"], IN_CHANNELS, small["tail.weight"])
    out["tail.bias"].copy_(small["tail.bias"])
    return out
