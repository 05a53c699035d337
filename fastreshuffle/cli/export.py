"""``fastreshuffle export --model NAME|PATH --format onnx -o FILE``: a model as an ONNX file
(:func:`fastreshuffle.inference.export.export_onnx`; input/output described there)."""
from __future__ import annotations

import argparse
import os
import sys

from ._common import printable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="jpeg", metavar="NAME|PATH",
                   help="a shipped model (jpeg, jpeg-low, jpeg-mid, jpeg-high, hevc, hevc-low, hevc-paper, webp) or a "
                        ".safetensors weights file (default: jpeg)")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="output format (default: onnx)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")


def run(args) -> int:
    from ..errors import OutputExistsError, UserError, WeightsError
    from ..inference.export import export_onnx

    if sys.stderr.isatty():   # progress, for a person waiting (an error stays one line in logs)
        print(f"exporting {args.model} to {args.output} (tracing the network and checking the graph: tens of "
              "seconds on a CPU) ...", file=sys.stderr, flush=True)
    try:
        path = export_onnx(args.model, args.output, opset=args.opset, overwrite=args.overwrite)
    except WeightsError as e:
        raise UserError(str(e)) from None
    except OutputExistsError as e:
        raise UserError(f"{e.filename} exists (use --overwrite)") from None
    except OSError as e:   # the file could not be written after the export (a full disk): exit 1, as restore's
        print(printable(f"fastreshuffle export: error: cannot write {e.filename}: {e.strerror or e}"), file=sys.stderr)
        return 1
    if os.path.splitext(str(path))[1].lower() != ".onnx":
        print(f"note: {path} is an ONNX file whatever its name says (.onnx is the usual suffix; ONNX Runtime, "
              "OpenVINO and onnx.load read it)", file=sys.stderr)
    print(f"wrote {path}: input N x 3 x H x W float in [0, 1] -> output of the same size "
          "(an image under 8 px on a side comes back as it went in)\n"
          "note: the graph is the network alone, without restore's guard: it applies the full correction to every "
          "image, which makes high-quality and never-compressed photos worse (the jpeg network on Kodak24 at JPEG q90: -1.0 dB mean, -2.1 dB worst, docs/harm_curve.json); use it on "
          "JPEGs of quality 44 or less (export the band of the quality you restore), or apply fastreshuffle.inference.guard.strength(quality) yourself "
          "(strength(quality, 'jpeg-high') for jpeg-high, the same for jpeg-mid)",
          file=sys.stderr)
    return 0
