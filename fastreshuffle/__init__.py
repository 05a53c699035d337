"""fastreshuffle: compression-artifact removal with the multi-scale reshuffling network
(Tang & Luo, CLIC 2018) on fast custom kernels.

Layers (each imports only the ones before it; see docs/architecture.md):
``ops`` (kernels as torch ops) -> ``nn`` (networks) -> ``io`` (images, codecs, weights, safe
writes) -> ``inference`` (the model factory, restore, tiling, evaluation) -> ``training`` ->
``cli``.  ``backends`` holds every run-time switch and the device resolver, ``errors`` the
exceptions, ``metrics`` PSNR/SSIM/PSNR-B.
"""
import importlib as _importlib

__version__ = "0.1.0"

# Everything loads on first use: `import fastreshuffle` stays cheap.
_LAZY = {
    "PRESETS": "fastreshuffle.nn.config",
    "ReshuffleNetConfig": "fastreshuffle.nn.config",
    "ReshuffleNet": "fastreshuffle.nn.reference",
    "FastReshuffleNet": "fastreshuffle.nn.fast",
    "reshuffle_down": "fastreshuffle.ops.reshuffle",
    "reshuffle_up": "fastreshuffle.ops.reshuffle",
    "ReshuffleUp": "fastreshuffle.nn.modules",
    "ReshuffleDown": "fastreshuffle.nn.modules",
    "replace_pixel_shuffle": "fastreshuffle.nn.modules",
    "dense_layer_": "fastreshuffle.ops.dense",
    "load_pretrained": "fastreshuffle.inference.loading",
    "load_model": "fastreshuffle.inference.loading",
    "restore": "fastreshuffle.inference.restore",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastreshuffle' has no attribute {name!r}")


def __dir__():   # the public names, the sub-packages loaded so far (not the helpers above)
    return sorted({n for n in globals() if not n.startswith("_")} | set(__all__))
