"""``fastreshuffle train``: arguments of :func:`fastreshuffle.training.loop.train` (L1 or MSE loss + Adam
on (compressed, original) patch pairs; run folder, resume and DDP described there)."""
from __future__ import annotations

import argparse

from ..backends import TRAINING_PRECISIONS
from ..nn.config import PRESETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of training images (default: <data-root>/train/CBSD432)")
    g.add_argument("--val", help="folder of validation images (default: <data-root>/eval/Kodak24); "
                                 "'split': hold out the last --val-images training images (by name); "
                                 "'none': no validation")
    g.add_argument("--data-root", help="data root (default: $FASTRESHUFFLE_DATA or ../shared/data)")
    g.add_argument("--codec", default="jpeg", help="codec spec without quality: jpeg, jpeg:444, hevc, webp "
                                                   "(see fastreshuffle.io.codecs) [jpeg]")
    g.add_argument("--quality", default=None, help="quality per sample, drawn uniformly from: N, LO-HI, "
                                                   "or a list of them, A,B,C or 5-50,5-30 (overlaps "
                                                   "count twice) [10]")
    g.add_argument("--patch", type=int, default=96, help="patch size, multiple of 8 [96]")
    g.add_argument("--rot90", action="store_true", help="also augment with 90-degree rotations")
    g.add_argument("--mix", default=None, metavar="NAME=P,...",
                   help="full-range variations per sample, with probabilities: none (uncompressed, "
                        "target = input), 444 (JPEG 4:4:4 chroma), offset (coding grid off the 8-pixel "
                        "grid), double (compressed twice), e.g. none=0.1,444=0.25,offset=0.5,double=0.15")
    g.add_argument("--encode", choices=["patch", "whole"], default="patch",
                   help="patch: code every patch on its own; whole: cut patches (at multiples of 8) from "
                        "--versions coded versions of each whole image, as photos are coded [patch]")
    g.add_argument("--versions", type=int, default=4,
                   help="--encode whole: coded versions per image, each its own orientation and quality [4]")
    g.add_argument("--coded-cache", default=None, metavar="DIR",
                   help="--encode whole: keep the coded versions in DIR (.npy) and reuse them [memory only]")
    g.add_argument("--small-images", choices=["pad", "skip"], default="pad",
                   help="what to do with images smaller than the patch [pad]")
    g.add_argument("--workers", type=int, default=None, help="DataLoader worker processes [min(2, cpus)]")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default="small", choices=sorted(PRESETS), help="architecture [small]")
    g.add_argument("--config", help="architecture as JSON (overrides --preset)")
    g.add_argument("--init", help="start from these weights (safetensors)")
    g.add_argument("--no-zero-tail", dest="zero_tail", action="store_false",
                   help="keep PyTorch's random init of the last conv (default: zero it, so a residual "
                        "model starts as the identity)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=2000, help="total optimisation steps [2000]")
    g.add_argument("--batch-size", type=int, default=16, help="global batch size [16]")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate [1e-3]")
    g.add_argument("--min-lr", type=float, default=None, help="final LR for cosine [lr/100]")
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine", help="[cosine]")
    g.add_argument("--step-every", type=int, default=None, help="step schedule: decay every N steps [steps/3]")
    g.add_argument("--step-gamma", type=float, default=0.5, help="step schedule: LR factor [0.5]")
    g.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) after this step, keeping the --steps schedule; "
                        "continue later with --resume")
    g.add_argument("--warmup", type=int, default=0, help="linear warmup steps [0]")
    g.add_argument("--loss", choices=("l1", "mse"), default="l1",
                   help="training loss: l1 (the paper's) or mse (what PSNR measures; for a last, "
                        "low-LR phase) [l1]")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--grad-clip", type=float, default=0.0,
                   help="clip the global gradient norm to this (0: off); the log's grad_norm column gives the norms")
    g.add_argument("--seed", type=int, default=0, help="seed for init and data [0]")
    g = p.add_argument_group("validation and output")
    g.add_argument("--out", required=True, help="run folder (created)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--val-every", type=int, default=250, help="validate and checkpoint every K steps [250]")
    g.add_argument("--val-quality", type=int, nargs="+", default=None,
                   help="validation quality/qualities [the lowest training quality]")
    g.add_argument("--val-images", type=int, default=8, help="number of validation images [8]")
    g.add_argument("--val-crop", type=int, default=256, help="center crop for validation, 0: full [256]")
    g.add_argument("--log-every", type=int, default=10, help="CSV loss row every N steps [10]")
    g = p.add_argument_group("runtime")
    g.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto]")
    g.add_argument("--precision", choices=TRAINING_PRECISIONS, default="auto",
                   help="bf16: autocast to bfloat16 over float32 master weights and Adam state; auto: bf16 "
                        "on a CUDA GPU and on a CPU with AVX512-BF16 or AMX, else fp32 [auto]")
    g.add_argument("--no-amp", dest="precision", action="store_const", const="fp32",
                   help="same as --precision fp32 (older spelling)")
    g.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop with a checkpoint after this many seconds of training, keeping the --steps "
                        "schedule; continue with --resume")
    g.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                   help="what --time-budget counts: wall-clock seconds, or this process's CPU seconds "
                        "(all its threads; for runs that get paused or share the machine) [wall]")
    g.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                   help="also checkpoint (last.safetensors + training state) every this many seconds")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")


def run(args) -> int:
    from ..training.loop import train
    return train(args)
