"""Checks the public op functions share."""
from __future__ import annotations

import torch


def refuse_forward_ad(op: str, tensors, instead: str) -> None:
    """Raise where any of ``tensors`` carries a forward-mode AD tangent (``torch.func.jvp``,
    ``torch.autograd.forward_ad``), or inside a torch.func derivative transform.  The ops have no forward-mode formula, and a torch custom op
    whose inputs do not require grad runs no autograd formula at all: its outputs would come back
    with zero tangents (``jvp``) or none (``forward_ad``), without a word.  The raw
    ``torch.ops.fastreshuffle.*`` ops cannot check this themselves; the Python functions do."""
    if torch.compiler.is_compiling():
        return
    unpack = torch.autograd.forward_ad.unpack_dual
    if any(isinstance(t, torch.Tensor) and unpack(t).tangent is not None for t in tensors):
        raise NotImplementedError(f"{op}: forward-mode AD (jvp) is not supported; {instead}")
    # torch.func's derivative transforms (grad, jacrev, jvp, ...) fail inside torch on a custom
    # op's autograd formula with a message about autograd.Function's setup_context; vmap works.
    # (Outside any transform, the usual case, one cheap call says so.)
    if torch._C._functorch.maybe_current_level() is None:
        return
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    from torch._C._functorch import TransformType
    if any(i.key() in (TransformType.Grad, TransformType.Jvp) for i in retrieve_all_functorch_interpreters()):
        raise NotImplementedError(f"{op}: torch.func's grad / jacrev / jvp transforms are not supported (plain "
                                  f"autograd is: loss.backward(), torch.autograd.grad); {instead}")
