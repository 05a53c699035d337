"""``fastreshuffle demo``: JPEG-compress a real photo, restore it, print PSNR, save a side-by-side PNG.

Restored exactly as ``fastreshuffle restore`` restores a JPEG file (``fastreshuffle.restore`` on the
opened JPEG: its tables, the do-no-harm guard, the network of its quality band, precision auto).

The photo is scikit-image's ``astronaut`` (``pip install scikit-image``, an optional extra).
The saved image shows, left to right: the JPEG-compressed input, the restored image and
the original.  An existing output file is never replaced without ``--overwrite``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ._common import (add_device_argument, add_threads_argument, apply_threads, check_output_arg, device_from_args,
                      printable)

if TYPE_CHECKING:                 # numpy only when the demo runs, not for --help
    import numpy as np

DEFAULT_OUTPUT = "fastreshuffle_demo.png"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="OUT.png",
                   help=f"side-by-side PNG to write (default: ./{DEFAULT_OUTPUT})")
    p.add_argument("--model", default="jpeg", metavar="jpeg|hevc|PATH",
                   help="shipped model name or .safetensors file (default: jpeg)")
    p.add_argument("--quality", type=int, default=10, help="JPEG quality 1-100 (default: 10)")
    add_device_argument(p)
    add_threads_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT.png if it exists")


def demo_photo() -> np.ndarray:
    """The test photo as RGB uint8; raises ImportError with an install hint."""
    import numpy as np
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the demo photo comes from scikit-image, which is not installed; "
                          "install it with: pip install scikit-image") from None
    return np.ascontiguousarray(data.astronaut()[..., :3], dtype=np.uint8)


def jpeg_file(img: np.ndarray, quality: int):
    """The photo as a JPEG file (Pillow, 4:2:0), opened: a PIL image that keeps its tables."""
    import io

    from PIL import Image

    from ..io.codecs import jpeg_file as coded
    return Image.open(io.BytesIO(coded(img, quality)))


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    import numpy as np
    h = max(i.shape[0] for i in images)
    w = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    canvas = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for i in images:
        canvas[:i.shape[0], x:x + i.shape[1]] = i
        x += i.shape[1] + gap
    return canvas


def _how(jpeg, model) -> str:
    """Which network restored the JPEG, as ``restore`` says it: the model of its quality band, or
    nothing to remove (the guard leaves a high-quality JPEG as it is)."""
    from ..inference.guard import guard_for
    from ..inference.loading import auto_model_name, band_model
    from ..io.jpeg_tables import tables_from_pil
    if model == "auto":                 # as restore() takes it: the JPEG model, with its bands
        model = auto_model_name(jpeg.format)
    g = guard_for(tables_from_pil(jpeg), model)
    if g is None:
        return f"model {model}"
    if g.strength <= 0:
        return f"(JPEG quality ~{g.quality:.0f}: no visible artifacts to remove; left unchanged)"
    return f"model {band_model(model, quality=g.quality)}"


def run(args) -> int:
    import numpy as np

    from ..errors import OutputExistsError, WeightsError
    from ..io.safe_write import save_image_atomic
    from ..metrics import psnr

    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be in 1..100, got {args.quality}")
    out = Path(args.output)
    if out.suffix.lower() != ".png" or args.output.endswith(("/", os.sep)):   # (Path drops a final "/")
        raise UserError(f"the demo writes a PNG: name the output file NAME.png, got {args.output!r}")
    check_output_arg("-o" if args.output != DEFAULT_OUTPUT else "the demo's default output", out, args.overwrite)
    try:
        original = demo_photo()
    except ImportError as e:
        raise UserError(str(e)) from None

    import fastreshuffle
    apply_threads(args)
    device = device_from_args(args)
    jpeg = jpeg_file(original, args.quality)
    compressed = np.asarray(jpeg.convert("RGB"))
    try:   # what `fastreshuffle restore photo.jpg` does: its tables, the guard, the network of its quality
        restored = np.asarray(fastreshuffle.restore(jpeg, args.model, device=str(device)))
    except WeightsError as e:
        raise UserError(str(e)) from None
    p_in, p_out = psnr(compressed, original), psnr(restored, original)
    print(f"photo: scikit-image astronaut, {original.shape[1]}x{original.shape[0]}")
    print(f"JPEG q{args.quality}:  PSNR {p_in:.2f} dB")
    print(f"restored:  PSNR {p_out:.2f} dB  ({p_out - p_in:+.2f} dB)  {_how(jpeg, args.model)}")
    try:
        save_image_atomic(side_by_side(compressed, restored, original), out, overwrite=args.overwrite)
    except OutputExistsError:
        raise UserError(f"{out} exists; use --overwrite to replace it") from None
    except OSError as e:
        print(printable(f"fastreshuffle demo: error: cannot write {out}: {e.strerror or e}"), file=sys.stderr)
        return 1
    print(printable(f"saved {out}  (left to right: JPEG q{args.quality}, restored, original)"))
    return 0
