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
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the file to write (.onnx; a picture's name, such as photo.jpg, is refused)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")


def run(args) -> int:
    from ..errors import OutputExistsError, UserError, WeightsError
    from ..inference.export import export_onnx, refuse_picture_name

    if not args.output.strip():   # (an unset shell variable; " " had been written as a file named " ")
        raise UserError(f"-o {args.output!r} names no file (an empty name): name the file to write (e.g. model.onnx)")
    if args.output.endswith(("/", os.sep)):
        raise UserError(f"-o {args.output} names a folder: name the file to write (e.g. model.onnx)")
    refuse_picture_name(args.output)   # (with --overwrite a photo.jpg had been replaced by the model)
    if sys.stderr.isatty():   # progress, for a person waiting (an error stays one line in logs)
        print(printable(f"exporting {args.model} to {args.output} (tracing the network and checking the graph: tens "
                        "of seconds on a CPU) ..."), file=sys.stderr, flush=True)
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
        print(printable(f"note: {path} is an ONNX file whatever its name says (.onnx is the usual suffix; ONNX "
                        "Runtime, OpenVINO and onnx.load read it)"), file=sys.stderr)
    print(printable(f"wrote {path}: input N x 3 x H x W float in [0, 1] -> output of the same size "
                    "(an image under 8 px on a side comes back as it went in)"), file=sys.stderr)
    print("note: the graph is the network alone, without restore's guard: it applies the full correction to every "
          "image, which makes high-quality and never-compressed pictures worse" + _harm(args.model) + "; "
          + _use(args.model), file=sys.stderr)
    return 0


def _codec(model: str):
    from ..inference.loading import model_codec
    try:
        return model_codec(model)
    except Exception:     # (an unreadable file was refused by the export already)
        return None


def _harm(model: str) -> str:
    """An example of the harm, measured for the codec the model was trained for (README)."""
    codec = _codec(model)
    if codec == "hevc":
        return " (the hevc network on Kodak24 at HEIF quality 60: -3.0 dB mean, -4.6 dB worst, docs/harm_curve_hevc.json)"
    if codec == "webp":
        return ""
    return " (the jpeg network on Kodak24 at JPEG q90: -1.0 dB mean, -2.1 dB worst, docs/harm_curve.json)"


def _use(model: str) -> str:
    """What the exported network is for, by the codec the model was trained for: restore's bands and
    schedules (:mod:`fastreshuffle.inference.loading`, :mod:`fastreshuffle.inference.guard`) in words."""
    from ..inference import guard
    from ..inference.loading import JPEG_HIGH_MIN, JPEG_LOW_MAX, JPEG_MID_MIN
    codec = _codec(model)

    def shares(schedule, what):
        return ", ".join(f"{share:g} at {what} {key:g}" for key, share in schedule) + " (interpolated between)"
    if codec == "hevc":
        return ("restore applies a share of it by the HEIF file's QP: " + shares(guard._HEVC_QP_SCHEDULE, "QP")
                + "; fastreshuffle.inference.guard.hevc_qp_strength(qp)")
    if codec == "webp":
        return ("restore applies a share of it by the lossy WebP file's quantiser index: "
                + shares(guard._WEBP_SCHEDULE, "index") + "; fastreshuffle.inference.guard.webp_strength(index), "
                "docs/restore.md, *Lossy WebP files*")
    return (f"use it on JPEGs of the qualities its band restores (jpeg {JPEG_LOW_MAX + 1:g}-{JPEG_MID_MIN - 1:g}, "
            f"jpeg-low {JPEG_LOW_MAX:g} or less, jpeg-mid {JPEG_MID_MIN:g}-{JPEG_HIGH_MIN - 1:g}, jpeg-high "
            f"{JPEG_HIGH_MIN:g} and more; export the band of the quality you restore), or apply "
            "fastreshuffle.inference.guard.strength(quality, name) yourself")
