"""Export a training run's weights as a shipped model: fp16 safetensors with provenance metadata.

    python -m tools.export_weights RUN/last.safetensors fastreshuffle/weights/jpeg.safetensors \
        --meta command="fastreshuffle train ..." --meta steps=3000 --meta hardware="2-core CPU"

Refuses to overwrite an existing file unless --overwrite is given.
"""
import argparse
import sys

import torch

from fastreshuffle.inference.loading import load_model
from fastreshuffle.io.weights import save_weights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    import os
    if os.path.exists(args.dst) and not args.overwrite:
        print(f"export_weights: {args.dst} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    meta = dict(kv.split("=", 1) for kv in args.meta)
    model = load_model(args.src)
    save_weights(model, args.dst, dtype=torch.float16, metadata=meta)
    print(f"wrote {args.dst} ({model.config.to_json()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
