"""Module forms of the reshuffle ops, drop-ins for ``nn.PixelShuffle`` / ``nn.PixelUnshuffle``,
and :func:`replace_pixel_shuffle`, which swaps torch's modules for them in an existing model.

``ReshuffleUp(upscale_factor)`` computes ``F.pixel_shuffle(x, upscale_factor)`` and
``ReshuffleDown(downscale_factor)`` ``F.pixel_unshuffle(x, downscale_factor)``, bit for bit, on
``(*, C, H, W)`` input of any dtype and layout (the ops of :mod:`fastreshuffle.ops.reshuffle`).
Same constructor argument, attribute name and ``extra_repr`` as torch's modules; no parameters
or buffers, so a model's ``state_dict`` is the same before and after the swap.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple

import torch
from torch import nn

from ..ops.reshuffle import reshuffle_down, reshuffle_up

__all__ = ["ReshuffleUp", "ReshuffleDown", "replace_pixel_shuffle", "Replaced"]


class ReshuffleUp(nn.Module):
    """``nn.PixelShuffle`` on the fused op: ``(*, C*r*r, H, W) -> (*, C, H*r, W*r)``."""

    __constants__ = ["upscale_factor"]
    upscale_factor: int

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return reshuffle_up(input, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class ReshuffleDown(nn.Module):
    """``nn.PixelUnshuffle`` on the fused op: ``(*, C, H*r, W*r) -> (*, C*r*r, H, W)``."""

    __constants__ = ["downscale_factor"]
    downscale_factor: int

    def __init__(self, downscale_factor: int) -> None:
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return reshuffle_down(input, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


class Replaced(NamedTuple):
    """One swap made by :func:`replace_pixel_shuffle`."""
    name: str            # qualified name in the model, as in ``model.named_modules()``
    old: nn.Module       # the torch module that was there
    new: nn.Module       # the module now there


# hook dictionaries of nn.Module (those present in the running torch are carried over)
_HOOK_ATTRS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks")


def _swap(old: nn.Module) -> nn.Module:
    if type(old) is nn.PixelShuffle:
        new: nn.Module = ReshuffleUp(old.upscale_factor)
    else:
        new = ReshuffleDown(old.downscale_factor)
    new.train(old.training)
    for attr in _HOOK_ATTRS:   # the same dictionaries: the user's handles still remove their hooks
        hooks = getattr(old, attr, None)
        if hooks:
            setattr(new, attr, hooks)
    return new


def replace_pixel_shuffle(model: nn.Module) -> List[Replaced]:
    """Swap every ``nn.PixelShuffle`` / ``nn.PixelUnshuffle`` in ``model`` (in place) for
    :class:`ReshuffleUp` / :class:`ReshuffleDown`; outputs stay bit-identical.

    Returns one :class:`Replaced` ``(name, old, new)`` per swapped module (the names are those of
    ``model.named_modules()``; a module registered in several places is swapped for one new
    module everywhere, reported once per place).  Only modules of exactly torch's classes are
    swapped (a subclass may override ``forward``); ``training`` mode and hooks are carried over.
    Calls of ``F.pixel_shuffle`` inside a ``forward`` cannot be reached and stay as they are.
    ``model`` itself cannot be replaced in place: pass the model that contains it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"replace_pixel_shuffle: expected an nn.Module, got {type(model).__name__}")
    if type(model) in (nn.PixelShuffle, nn.PixelUnshuffle):
        raise ValueError("replace_pixel_shuffle: the model is itself a "
                         f"{type(model).__name__}; it cannot be replaced in place -- use "
                         "ReshuffleUp/ReshuffleDown directly or pass a model that contains it")
    swapped: Dict[int, nn.Module] = {}
    changes: List[Replaced] = []
    # every (parent, attribute) edge, also for modules shared under several names
    for parent_name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent._modules.items()):
            if child is None or type(child) not in (nn.PixelShuffle, nn.PixelUnshuffle):
                continue
            if id(child) not in swapped:
                swapped[id(child)] = _swap(child)
            new = swapped[id(child)]
            setattr(parent, child_name, new)
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            changes.append(Replaced(name, child, new))
    return changes
