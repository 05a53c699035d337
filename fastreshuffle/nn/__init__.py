"""The network: its configuration (:mod:`.config`), the plain-PyTorch reference
(:mod:`.reference`, ``ReshuffleNet``) and the drop-in on the fused ops (:mod:`.fast`,
``FastReshuffleNet``, same ``state_dict``; block buffers in :mod:`.buffers`), and the module
forms of the reshuffle ops (:mod:`.modules`: ``ReshuffleUp`` / ``ReshuffleDown``, drop-ins for
``nn.PixelShuffle`` / ``nn.PixelUnshuffle``, and ``replace_pixel_shuffle``).

The networks load on first use (``FastReshuffleNet`` imports the dense-layer ops); the
configuration needs no torch, so ``fastreshuffle train --help`` does not import it."""
from __future__ import annotations

import importlib

from .config import PRESETS, ReshuffleNetConfig

_LAZY = {"ReshuffleNet": ".reference", "FastReshuffleNet": ".fast", "ReshuffleUp": ".modules", "ReshuffleDown": ".modules",
         "replace_pixel_shuffle": ".modules"}
__all__ = ["PRESETS", "ReshuffleNetConfig", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
