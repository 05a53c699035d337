"""Checks the public op functions share."""
from __future__ import annotations

import torch


def refuse_forward_ad(op: str, tensors, instead: str) -> None:
    """Raise where any of ``tensors`` carries a forward-mode AD tangent (``torch.func.jvp``,
    ``torch.autograd.forward_ad``).  The ops have no forward-mode formula, and a torch custom op
    whose inputs do not require grad runs no autograd formula at all: its outputs would come back
    with zero tangents (``jvp``) or none (``forward_ad``), without a word.  The raw
    ``torch.ops.fastreshuffle.*`` ops cannot check this themselves; the Python functions do."""
    if torch.compiler.is_compiling():
        return
    unpack = torch.autograd.forward_ad.unpack_dual
    if any(isinstance(t, torch.Tensor) and unpack(t).tangent is not None for t in tensors):
        raise NotImplementedError(f"{op}: forward-mode AD (jvp) is not supported; {instead}")
