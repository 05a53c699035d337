"""The package's operators (kernels in ``csrc/`` and ``kernels/``, registered as
``torch.ops.fastreshuffle.*``), each module holding one op's Python wrapper, fake kernels and
autograd side by side:

* :mod:`.reshuffle` -- ``reshuffle_down`` / ``reshuffle_up`` (paper Eq. 3 / 4);
* :mod:`.dense` -- the fused dense layer (in place into a block buffer, or functional);
* :mod:`.block` -- a differentiable dense block on one buffer (training).

Module names differ from the functions exported here on purpose: importing a submodule sets
an attribute of this package, which would otherwise replace the function of the same name.
Submodules load on first use: the reshuffle ops need only the extension, the dense layer also
registers its Triton op.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "reshuffle_down": ".reshuffle", "reshuffle_up": ".reshuffle", "built_with_cuda": "._extension",
    "dense_layer_": ".dense", "dense_layer_reshuffle_": ".dense", "dense_layer": ".dense",
    "pack_dense_weights": ".dense",
    "dense_block": ".block",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
