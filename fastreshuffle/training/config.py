"""What a training run is asked to do: :class:`TrainConfig`, the options of ``fastreshuffle train``
(the command maps its arguments onto it, with these defaults) and the argument of
:func:`fastreshuffle.training.loop.train` from Python.  No torch here (``train --help`` reads it)."""
from __future__ import annotations

import dataclasses
from typing import FrozenSet, List, Optional

__all__ = ["TrainConfig", "DEFAULT_QUALITY", "RUN_OPTIONS"]

# --quality when none is given (None in the config, so that a given 10 can be told apart)
DEFAULT_QUALITY = "10"


@dataclasses.dataclass
class TrainConfig:
    """One run's options, named as the command's (``batch_size`` is ``--batch-size``); the
    command's ``--help`` describes each.  Only ``out`` has no default."""
    out: str
    # data
    data: Optional[str] = None           # default: <data-root>/train/CBSD432
    val: Optional[str] = None            # a folder, "split" or "none"; default: <data-root>/eval/Kodak24
    data_root: Optional[str] = None      # default: $FASTRESHUFFLE_DATA or ../shared/data
    codec: str = "jpeg"
    quality: Optional[str] = None        # default: DEFAULT_QUALITY
    patch: int = 96
    rot90: bool = False
    mix: Optional[str] = None
    encode: str = "patch"                # or "whole"
    versions: int = 4
    coded_cache: Optional[str] = None
    small_images: str = "pad"            # or "skip"
    reduce: int = 1                      # shrink every photo this many times first (data.shrink)
    also_shrunk: int = 0                 # train also on every training photo shrunk this many times
    workers: Optional[int] = None        # default: min(2, cpus)
    # model
    preset: str = "small"
    config: Optional[str] = None         # JSON text, overrides preset
    init: Optional[str] = None
    zero_tail: bool = True
    # optimisation
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: Optional[float] = None       # default: lr / 100
    schedule: str = "cosine"             # or "step", "constant"
    step_every: Optional[int] = None     # default: steps / 3
    step_gamma: float = 0.5
    stop_at: Optional[int] = None
    warmup: int = 0
    loss: str = "l1"                     # or "mse"
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    seed: int = 0
    # validation and output
    resume: bool = False
    val_every: int = 250
    val_quality: Optional[List[int]] = None   # default: the lowest training quality
    val_images: int = 8
    val_crop: int = 256
    log_every: int = 10
    # runtime
    threads: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"
    time_budget: Optional[float] = None
    budget_clock: str = "wall"           # or "cpu"
    checkpoint_every: Optional[float] = None
    progress: bool = True
    deterministic: bool = False
    # the options given explicitly (the command line's); None: all of them (a config built in Python)
    given: Optional[FrozenSet[str]] = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def defaults(cls) -> dict:
        """The default of every option that has one (the command's defaults)."""
        return {f.name: f.default for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING and f.name != "given"}

    def was_given(self, name: str) -> bool:
        return self.given is None or name in self.given


# What a run is (its data, network, schedule, validation): a resume takes these from the saved run
# unless given again.  The others say how this process runs (where, how long, how many threads).
RUN_OPTIONS = ("data", "val", "data_root", "codec", "quality", "patch", "rot90", "mix", "encode", "versions",
               "coded_cache", "small_images", "reduce", "also_shrunk", "preset", "config", "zero_tail", "steps", "batch_size", "lr",
               "min_lr", "schedule", "step_every", "step_gamma", "warmup", "loss", "weight_decay", "grad_clip",
               "seed", "val_every", "val_quality", "val_images", "val_crop", "log_every", "precision")
