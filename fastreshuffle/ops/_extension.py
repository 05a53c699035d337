"""Loads the compiled extension ``fastreshuffle._C``, which registers the C++/CUDA kernels of
``torch.ops.fastreshuffle.*`` (schemas in ``csrc/*/<op>.cpp``, one ``TORCH_LIBRARY_IMPL`` per
backend file).  The extension is mandatory: every op module imports this one."""
from __future__ import annotations

import torch

try:
    from .. import _C  # noqa: F401
except ImportError as e:  # pragma: no cover - only without a build
    raise ImportError(
        "fastreshuffle's C++ extension (fastreshuffle._C) is not built or does not match the "
        "installed torch; reinstall with `pip install --no-build-isolation -e .` "
        f"(original error: {e})") from e

ops = torch.ops.fastreshuffle


def built_with_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    return bool(ops.built_with_cuda())
