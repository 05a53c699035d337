"""The network: its configuration (:mod:`.config`), the plain-PyTorch reference
(:mod:`.reference`, ``ReshuffleNet``) and the drop-in on the fused ops (:mod:`.fast`,
``FastReshuffleNet``, same ``state_dict``; block buffers in :mod:`.buffers`).

``FastReshuffleNet`` loads on first use (it imports the dense-layer ops)."""
from __future__ import annotations

import importlib

from .config import PRESETS, ReshuffleNetConfig
from .reference import ReshuffleNet

__all__ = ["PRESETS", "ReshuffleNetConfig", "ReshuffleNet", "FastReshuffleNet"]


def __getattr__(name):
    if name == "FastReshuffleNet":
        return importlib.import_module(".fast", __name__).FastReshuffleNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
