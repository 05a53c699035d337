"""Where data lives: ``--data-root`` flag > ``FASTRESHUFFLE_DATA`` env > ``../shared/data``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

ENV_VAR = "FASTRESHUFFLE_DATA"
DEFAULT_RELATIVE = Path("..") / "shared" / "data"


def data_root(override: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Resolve the data root.

    Order: explicit ``override``; the ``FASTRESHUFFLE_DATA`` environment variable;
    ``../shared/data`` relative to the current directory; ``../shared/data`` relative to
    the source checkout (so it also works when run from elsewhere inside the repo).
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cwd_candidate = Path.cwd() / DEFAULT_RELATIVE
    if cwd_candidate.is_dir():
        return cwd_candidate
    repo_candidate = Path(__file__).resolve().parents[2] / DEFAULT_RELATIVE
    if repo_candidate.is_dir():
        return repo_candidate
    return cwd_candidate


def train_dir(override=None) -> Path:
    return data_root(override) / "train" / "CBSD432"


def eval_dir(override=None) -> Path:
    return data_root(override) / "eval" / "Kodak24"
