"""Grow trained weights into a larger preset that starts out computing the same function.

    python -m tools.grow_weights fastreshuffle/weights/hevc.safetensors /work/runs/hevc_paper0.safetensors \
        --preset paper [--seed 0] [--half]

Then train the larger network from it: ``fastreshuffle train --preset paper --init DST ...``.
How and why: :mod:`fastreshuffle.nn.grow`.  Before writing, the grown network is run beside the
source on a random 61x83 image in float64; a difference over 1e-9 is an error.
The source's ``codec`` is carried (the grown network computes the same function, and the codec
decides how ``restore`` guards a file).  Refuses to overwrite an existing file unless --overwrite
is given.
"""
import argparse
import sys

import torch

from fastreshuffle.inference.loading import load_model
from fastreshuffle.io.weights import save_weights
from fastreshuffle.nn import ReshuffleNet
from fastreshuffle.nn.config import PRESETS
from fastreshuffle.nn.grow import grow_state_dict
from tools.export_weights import output_args, run_tool, source_meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS),
                   help="the larger preset (tiny grows into small, medium or paper; small into paper)")
    p.add_argument("--seed", type=int, default=0, help="initialisation of the new weights [0]")
    p.add_argument("--half", action="store_true", help="store fp16 (a paper network: 13 instead of 26 MiB)")
    output_args(p)
    args = p.parse_args(argv)
    return run_tool("grow_weights", args, lambda meta: _grow(args, meta))


def _grow(args, meta: dict) -> int:
    small = load_model(args.src, fast=False).double()
    if small.config == PRESETS[args.preset]:
        raise ValueError(f"{args.src} already is a {args.preset} network; name a larger preset")
    torch.manual_seed(args.seed)
    big = ReshuffleNet(PRESETS[args.preset]).double()
    big.load_state_dict(grow_state_dict(small.config, small.state_dict(), big.config, big.state_dict()))
    x = torch.rand(1, 3, 61, 83, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (big(x) - small(x)).abs().max().item()
    if diff > 1e-9:
        print(f"grow_weights: error: the grown network differs from the source by {diff:.3g}", file=sys.stderr)
        return 1
    meta = {**source_meta(args.src, ("codec",)), "grown_from": args.src, "grown_seed": str(args.seed), **meta}
    save_weights(big, args.dst, dtype=torch.float16 if args.half else torch.float32, metadata=meta,
                 overwrite=args.overwrite)
    print(f"wrote {args.dst}: {args.preset} {big.config.to_json()}, grown from {small.config.to_json()}; "
          f"max difference on a test image {diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
