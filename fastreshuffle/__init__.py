"""fastreshuffle: compression-artifact removal with the multi-scale reshuffling network
(Tang & Luo, CLIC 2018) on fast custom kernels."""
from __future__ import annotations

__version__ = "0.1.0"

from .config import PRESETS, ReshuffleNetConfig
from .models import ReshuffleNet
from .ops import reshuffle_down, reshuffle_up

# Heavier pieces (Triton, codecs, pretrained weights) load on first use.
_LAZY = {
    "FastReshuffleNet": "fastreshuffle.fast_model",
    "dense_layer_": "fastreshuffle.dense_op",
    "load_pretrained": "fastreshuffle.pretrained",
    "restore": "fastreshuffle.pretrained",
}

__all__ = ["__version__", "PRESETS", "ReshuffleNetConfig", "ReshuffleNet", "reshuffle_down",
           "reshuffle_up", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastreshuffle' has no attribute {name!r}")
