"""Export a training run's weights as a shipped model: fp16 safetensors with provenance metadata.

    python -m tools.export_weights RUN/last.safetensors fastreshuffle/weights/jpeg.safetensors \
        --meta command="fastreshuffle train ..." --meta steps=3000 --meta hardware="2-core CPU"

With ``--average SRC2 [SRC3 ...]`` the file written holds the parameter-wise mean of ``src`` and
those files (a "weight soup" of runs fine-tuned from one network; all must share one config),
computed in float64 before the fp16 rounding.

The file keeps the source's metadata (a run's ``codec``, ``quality``, ``preset``, ``step``; the
codec decides how ``restore`` guards a file), ``--meta`` adding to it or replacing single keys.
Refuses to overwrite an existing file (or link) unless --overwrite is given.
"""
import argparse
import sys

import torch

from fastreshuffle.inference.loading import load_model
from fastreshuffle.io.weights import save_weights


def average_into(model: torch.nn.Module, others) -> None:
    """Make ``model`` float64 and set its parameters and buffers to their mean with those of
    ``others`` (so the export rounds the float64 mean to fp16 once)."""
    states = [model.state_dict()] + [o.state_dict() for o in others]
    mean = {k: sum(s[k].double() for s in states) / len(states) for k in states[0]}
    model.double().load_state_dict(mean)


def output_args(p: argparse.ArgumentParser) -> None:
    """The options every weights-writing tool shares (also tools.grow_weights)."""
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--overwrite", action="store_true")


def meta_of(args) -> dict:
    """The --meta KEY=VALUE pairs as a dict (ValueError naming a pair without '=')."""
    bad = [kv for kv in args.meta if "=" not in kv]
    if bad:
        raise ValueError(f"--meta takes KEY=VALUE, got {bad[0]!r}")
    return dict(kv.split("=", 1) for kv in args.meta)


def source_meta(path, keys=None) -> dict:
    """The metadata of weights file ``path`` to carry into a file made from it (all of it, or
    only ``keys``), less what :func:`save_weights` writes itself."""
    from fastreshuffle.inference.loading import resolve_weights
    from fastreshuffle.io.weights import RESERVED_METADATA, read_metadata
    meta = read_metadata(resolve_weights(path))
    return {k: v for k, v in meta.items() if k not in RESERVED_METADATA and (keys is None or k in keys)}


def run_tool(tool: str, args, body) -> int:
    """What every weights-writing tool does around its work: refuse ``args.dst`` if it exists
    (a link too) without --overwrite, is a folder or cannot be written, parse --meta, then
    ``body(meta)``, whose :func:`save_weights` is given ``overwrite=args.overwrite`` (a file
    made meanwhile is not replaced either); a bad input (unreadable or foreign weights, a bad
    option, a file that cannot be written) said in one line, exit status 2, no traceback."""
    from fastreshuffle.cli._common import check_output_arg
    from fastreshuffle.errors import UserError, WeightsError
    try:
        check_output_arg("dst", args.dst, args.overwrite)
        return body(meta_of(args))
    except (UserError, WeightsError, ValueError, OSError) as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--average", nargs="+", default=[], metavar="SRC",
                   help="also these weights files: write the parameter-wise mean of all")
    output_args(p)
    args = p.parse_args(argv)
    return run_tool("export_weights", args, lambda meta: _export(args, meta))


def _export(args, meta: dict) -> int:
    model = load_model(args.src)
    meta = {**source_meta(args.src), **meta}
    if args.average:
        others = [load_model(f) for f in args.average]
        for f, o in zip(args.average, others):
            if o.config != model.config:
                print(f"export_weights: {f} has config {o.config.to_json()}, {args.src} has "
                      f"{model.config.to_json()}; only networks of one config can be averaged",
                      file=sys.stderr)
                return 2
        average_into(model, others)
        meta.setdefault("averaged", " ".join([args.src] + args.average))
    save_weights(model, args.dst, dtype=torch.float16, metadata=meta, overwrite=args.overwrite)
    print(f"wrote {args.dst} ({model.config.to_json()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
