"""``fastreshuffle train``: the options of :class:`fastreshuffle.training.config.TrainConfig` (their
defaults too), given to :func:`fastreshuffle.training.loop.train` (L1 or MSE loss + Adam on
(compressed, original) patch pairs; run folder, resume and DDP described there)."""
from __future__ import annotations

import argparse

from ..backends import TRAINING_PRECISIONS
from ..nn.config import PRESETS
from ..training.config import DEFAULT_QUALITY, TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of training images (default: <data-root>/train/CBSD432)")
    g.add_argument("--val", help="folder of validation images (default: <data-root>/eval/Kodak24); "
                                 "'split': hold out the last --val-images training images (by name); "
                                 "'none': no validation")
    g.add_argument("--data-root", help="data root (default: $FASTRESHUFFLE_DATA or ../shared/data)")
    g.add_argument("--codec", help="codec spec: jpeg, jpeg:444, hevc, webp (see fastreshuffle.io.codecs); one "
                                   "that names a quality (jpeg:90) trains at it alone, without --quality "
                                   "[%(default)s]")
    g.add_argument("--quality", help="quality per sample, drawn uniformly from: N, LO-HI, or a list of them, "
                                     "A,B,C or 5-50,5-30 (overlaps count twice) [" + DEFAULT_QUALITY + "]")
    g.add_argument("--patch", type=int, help="patch size, multiple of 8 [%(default)s]")
    g.add_argument("--rot90", action="store_true", help="also augment with 90-degree rotations")
    g.add_argument("--mix", metavar="NAME=P,...",
                   help="full-range variations per sample, with probabilities: none (uncompressed, "
                        "target = input), 444 (JPEG 4:4:4 chroma), offset (coding grid off the 8-pixel "
                        "grid), double (compressed twice), dark / bright (the photo darkened, or moved towards "
                        "white, by a factor of 1/50 to 1/2 before coding), sharpen (an unsharp mask of "
                        "radius 0.5-2.5 at 50-250%% before coding, the sharpened photo the target; with "
                        "double, between the two codings: an edited camera JPEG saved again), e.g. "
                        "none=0.1,444=0.25,offset=0.5,double=0.15,dark=0.1")
    g.add_argument("--encode", choices=["patch", "whole"],
                   help="patch: code every patch on its own; whole: cut patches (at multiples of 8) from "
                        "--versions coded versions of each whole image, as photos are coded [%(default)s]")
    g.add_argument("--versions", type=int,
                   help="--encode whole: coded versions per image, each its own orientation and quality [%(default)s]")
    g.add_argument("--coded-cache", metavar="DIR",
                   help="--encode whole: keep the coded versions in DIR (.npy) and reuse them [memory only]")
    g.add_argument("--reduce", type=int, metavar="N",
                   help="shrink every photo (training and validation) N times first, each pixel the mean of "
                        "N x N: for originals that are JPEGs themselves (CBSD432's are quality 95), whose own "
                        "coding noise a network trained for high qualities would learn to put back [%(default)s]")
    g.add_argument("--also-shrunk", type=int, metavar="N",
                   help="train on every training photo also shrunk N times (after --reduce; 0: off), so a "
                        "network sees both scales: whole photos carry their own coding noise, shrunk ones less "
                        "of it; a patch comes from either with equal chance; validation photos are not added "
                        "[%(default)s]")
    g.add_argument("--small-images", choices=["pad", "skip"],
                   help="what to do with images smaller than the patch [%(default)s]")
    g.add_argument("--workers", type=int, help="DataLoader worker processes [min(2, cpus)]")
    g = p.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), help="architecture [%(default)s]")
    g.add_argument("--config", help="architecture as JSON (overrides --preset)")
    g.add_argument("--init", help="start from these weights: a .safetensors file or a shipped model's name "
                                  "(jpeg, hevc, ...); fine-tuning usually wants a lower --lr.  With a validation set they are "
                                  "validated first and are the run's first best.safetensors")
    g.add_argument("--no-zero-tail", dest="zero_tail", action="store_false",
                   help="keep PyTorch's random init of the last conv (default: zero it, so a residual "
                        "model starts as the identity)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="total optimisation steps [%(default)s]")
    g.add_argument("--batch-size", type=int, help="global batch size [%(default)s]")
    g.add_argument("--lr", type=float, help="peak learning rate [%(default)s]")
    g.add_argument("--min-lr", type=float, help="final LR for cosine [lr/100]")
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], help="[%(default)s]")
    g.add_argument("--step-every", type=int, help="step schedule: decay every N steps [steps/3]")
    g.add_argument("--step-gamma", type=float, help="step schedule: LR factor [%(default)s]")
    g.add_argument("--stop-at", type=int,
                   help="stop (with a checkpoint) after this step, keeping the --steps schedule; "
                        "continue later with --resume (which goes on to this step where the run stopped "
                        "before it, else to --steps)")
    g.add_argument("--warmup", type=int, help="linear warmup steps [%(default)s]")
    g.add_argument("--loss", choices=("l1", "mse"),
                   help="training loss: l1 (the paper's) or mse (what PSNR measures; for a last, "
                        "low-LR phase) [%(default)s]")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float,
                   help="clip the global gradient norm to this (0: off); the log's grad_norm column gives the norms")
    g.add_argument("--seed", type=int, help="seed for init and data [%(default)s]")
    g = p.add_argument_group("validation and output")
    g.add_argument("--out", required=True, help="run folder (created)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its own options (those given again win); the runtime "
                        "ones (--threads, --device, --time-budget, --checkpoint-every, ...) are this command's")
    g.add_argument("--val-every", type=int, help="validate and checkpoint every K steps [%(default)s]")
    g.add_argument("--val-quality", type=int, nargs="+",
                   help="validation quality/qualities; the val PSNR is one PSNR over every (image, quality) "
                        "pair, as the paper's set figure [the lowest training quality]")
    g.add_argument("--val-images", type=int, help="number of validation images [%(default)s]")
    g.add_argument("--val-crop", type=int, help="center crop for validation, 0: full [%(default)s]")
    g.add_argument("--log-every", type=int, help="CSV loss row every N steps [%(default)s]")
    g = p.add_argument_group("runtime")
    g.add_argument("--threads", type=int, help="torch intra-op threads per process")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N [%(default)s]")
    g.add_argument("--precision", choices=TRAINING_PRECISIONS,
                   help="bf16: autocast to bfloat16 over float32 master weights and Adam state; auto: bf16 "
                        "on a CUDA GPU and on a CPU with AVX512-BF16 or AMX, else fp32 [%(default)s]")
    g.add_argument("--no-amp", dest="precision", action="store_const", const="fp32",
                   help="same as --precision fp32 (older spelling)")
    g.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="stop with a checkpoint after this many seconds of training, keeping the --steps "
                        "schedule; continue with --resume")
    g.add_argument("--budget-clock", choices=("wall", "cpu"),
                   help="what --time-budget counts: wall-clock seconds, or this process's CPU seconds "
                        "(all its threads; for runs that get paused or share the machine) [%(default)s]")
    g.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                   help="also checkpoint (last.safetensors + training state) every this many seconds")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")
    # the defaults live in the config (shown by %(default)s), marked so that run() can tell an
    # option left at its default from one given (a resume takes the saved run's value for the former)
    p.set_defaults(**{k: _Default(v) for k, v in TrainConfig.defaults().items()})


class _Default:
    """An option's default, as argparse hands it back when the option is not given."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


def run(args) -> int:
    from ..training.loop import train
    values = {k: v.value if isinstance(v, _Default) else v for k, v in vars(args).items()}
    given = frozenset(k for k, v in vars(args).items() if not isinstance(v, _Default))
    return train(TrainConfig(**values, given=given))
