"""Where data lives: ``--data`` (any folder of images) > ``--data-root`` > ``FASTRESHUFFLE_DATA``
> ``../shared/data`` (from the current folder, then from the source checkout).

A data root holds ``eval/Kodak24`` (the 24 Kodak PhotoCD photos, public: r0k.us/graphics/kodak,
768x512 PNG; the project's copy is cropped to 500x500) and ``train/CBSD432`` (the 432 colour
BSDS500 photos outside CBSD68, used by denoising papers, 481x321).  Any folder of PNG/JPEG/... photos
works in their place (``--data``, ``--val``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

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
    for candidate in default_roots():
        if candidate.is_dir():
            return candidate
    return default_roots()[0]


def default_roots() -> Tuple[Path, ...]:
    """Where the default data root is looked for: ``../shared/data`` from the current folder,
    then from the source checkout (when the package runs from one, not installed from a wheel)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "setup.py").is_file():
        return Path.cwd() / DEFAULT_RELATIVE, checkout / DEFAULT_RELATIVE
    return (Path.cwd() / DEFAULT_RELATIVE,)


def missing_folder_message(folder: Path, what: str) -> str:
    """The error for a data folder that does not exist: what to pass instead."""
    msg = f"{what} folder not found: {folder}."
    roots = default_roots()
    if Path(folder).is_relative_to(roots[0]) and not any(r.is_dir() for r in roots):
        # the default root, found in no place it is looked for: name them
        msg += (f" No data root: ../shared/data does not exist from the current folder ({roots[0]})"
                + (f" nor from the source checkout ({roots[1]})." if len(roots) > 1 else "."))
    return (msg + " Pass --data FOLDER (any folder of PNG/JPEG images), "
            f"or --data-root / ${ENV_VAR} pointing at a folder with eval/Kodak24 and train/CBSD432 "
            "(public sets: Kodak24 from r0k.us/graphics/kodak, CBSD432 = BSDS500 minus CBSD68)")


def train_dir(override=None) -> Path:
    return data_root(override) / "train" / "CBSD432"


def eval_dir(override=None) -> Path:
    return data_root(override) / "eval" / "Kodak24"
