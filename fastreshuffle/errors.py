"""Exceptions the library raises for problems a user can fix (the CLI prints them as one line).

Every layer may raise these; none of them imports the CLI.  Library-specific errors subclass
the builtin that fits (``ValueError``, ``FileExistsError``), so callers can catch either.
"""
from __future__ import annotations

import errno

__all__ = ["UserError", "WeightsError", "ImageReadError", "OutputExistsError", "CodecError", "DataError",
           "ExtensionError"]


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit code 2, no traceback."""


class WeightsError(ValueError):
    """A weights file that cannot be used: not safetensors, truncated, tampered or mismatched."""


class ImageReadError(Exception):
    """An image file that cannot be read; ``path`` and ``reason`` are attributes."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed."""

    def __init__(self, path):
        super().__init__(errno.EEXIST, "output exists (overwrite=True, or --overwrite on the command line, "
                                       "replaces it)", str(path))


class CodecError(ValueError):
    """Bad codec name/spec or an encoder failure."""


class DataError(ValueError):
    """A data folder that cannot be used (missing, empty, nothing readable)."""


class ExtensionError(ImportError):
    """The compiled extension cannot be used: not built, or built against another torch release
    (the CLI says it in one line)."""
