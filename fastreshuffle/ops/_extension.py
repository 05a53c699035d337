"""Loads the compiled extension ``fastreshuffle._C``, which registers the C++/CUDA kernels of
``torch.ops.fastreshuffle.*`` (schemas in ``csrc/*/<op>.cpp``, one ``TORCH_LIBRARY_IMPL`` per
backend file).  The extension is mandatory: every op module imports this one."""
from __future__ import annotations

import torch

from ..errors import ExtensionError

_REBUILD = ("rebuild it against this torch -- from a checkout `pip install --no-build-isolation -e .`, from "
            "its source package `pip install --no-build-isolation --force-reinstall --no-deps fastreshuffle-*.tar.gz` "
            "(a C++ compiler is needed) -- or install the torch it was built for")

try:
    from .. import _C
except ImportError as e:  # pragma: no cover - only without a build
    raise ExtensionError(f"fastreshuffle's C++ extension (fastreshuffle._C) cannot be loaded ({e}): {_REBUILD}") from e


def torch_release(version: str):
    """(major, minor) of a torch version string such as ``2.13.0+cpu``."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


BUILT_FOR = (getattr(_C, "torch_major", None), getattr(_C, "torch_minor", None))
if None in BUILT_FOR:   # built before the extension recorded its torch
    raise ExtensionError("fastreshuffle's C++ extension was built by an older version of fastreshuffle: rebuild "
                         "it -- from a checkout `pip install --no-build-isolation -e .`")
if BUILT_FOR != torch_release(torch.__version__):   # another C++ ABI: calls could crash
    raise ExtensionError(f"fastreshuffle's C++ extension was compiled against torch {BUILT_FOR[0]}.{BUILT_FOR[1]}, "
                         f"but torch {torch.__version__} is installed: {_REBUILD}")

ops = torch.ops.fastreshuffle


def built_with_cuda() -> bool:
    """Whether the extension was compiled with its CUDA kernels."""
    return bool(ops.built_with_cuda())
