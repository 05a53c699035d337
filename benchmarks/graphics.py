"""Does restoring make pictures that are not photos worse?  Synthetic screenshots (text, a menu
bar, a chart) and smooth gradients (linear grey and colour, radial), drawn here with Pillow (no
files needed), and with ``--pictures "black and white"`` a photo thresholded to 0 / 255 (``dithered``: dithered to 1 bit), coded as JPEG files (Pillow 4:2:0) and restored as ``fastreshuffle restore``
restores a JPEG file (``fastreshuffle.restore`` on the opened file: its tables, the guard, the
network of its quality band), and also given never compressed (a PNG: must come back unchanged).

    python -m benchmarks.graphics                           # q30-q95 and never compressed
    python -m benchmarks.graphics --qualities 88 90 --size 256

Prints, per picture x quality, the decoded JPEG's RGB PSNR against the drawing and the change
after restoring (dB), then per quality the mean and the worst change.  The shipped networks were
trained on photos only; this is where their weak cases are measured (docs/restore.md, "Known
gaps").  fp32, one process, CPU flags printed.
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np


def screenshot(size: int, kind: int, seed: int = 0) -> np.ndarray:
    """A window: title bar, a side list, lines of code-like text (``kind`` 1: plus a bar chart and
    a ring; 2: coloured text), on a light background; ``size`` x 3/4 size."""
    from PIL import Image, ImageDraw, ImageFont
    rng = np.random.default_rng(seed + kind)
    w, h = size, size * 3 // 4
    font = ImageFont.load_default(size=max(8, size // 40))
    im = Image.new("RGB", (w, h), (246, 246, 246))
    d = ImageDraw.Draw(im)
    bar = max(12, h // 12)
    d.rectangle((0, 0, w - 1, bar - 1), fill=(40, 60, 110))
    d.text((8, bar // 4), "File  Edit  View  Window  Help", font=font, fill=(255, 255, 255))
    side = w // 4
    d.rectangle((0, bar, side, h - 1), fill=(225, 228, 235))
    step = max(10, size // 36)
    for i, y in enumerate(range(bar + 6, h - step, step)):
        d.text((6, y), f"item {i:02d} folder", font=font, fill=(20, 20, 20))
        colour = tuple(int(c) for c in rng.integers(0, 200, 3)) if kind == 2 else (30, 30, 30)
        d.text((side + 8, y), f"{i:3d} def f_{i}(x): return x * {rng.integers(1, 99)} + {rng.random():.3f}",
               font=font, fill=colour)
    if kind == 1:
        for j in range(5):
            x0 = w * 3 // 4 + j * w // 40
            top = int(rng.integers(h // 2, h - 20))
            d.rectangle((x0, top, x0 + w // 60, h - 10), fill=(int(rng.integers(0, 255)), 120, 200))
        r = w // 12
        d.ellipse((w - 3 * r, bar + r, w - r, bar + 3 * r), outline=(200, 30, 30), width=3)
    return np.asarray(im)


def gradient(size: int, kind: str) -> np.ndarray:
    x = np.linspace(0.0, 255.0, size)
    if kind == "linear grey":
        a = np.dstack([np.tile(x, (size, 1))] * 3)
    elif kind == "linear colour":
        a = np.dstack([np.tile(x[:, None], (1, size)), np.tile(x[::-1, None], (1, size)) * 0.5 + 60,
                       np.full((size, size), 128.0)])
    else:                                                    # radial
        a = np.dstack([np.hypot(*np.meshgrid(x - 128, x - 128)) * 1.4] * 3)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def black_and_white(size: int) -> np.ndarray:
    """scikit-image's camera photo (512 px, grey), resized to ``size`` and thresholded at its median
    to 0 / 255: a black-and-white (1-bit) picture, as a scan or a fax."""
    from PIL import Image
    from skimage import data
    grey = np.asarray(Image.fromarray(data.camera()).resize((size, size), Image.BICUBIC))
    return np.repeat(np.where(grey > np.median(grey), 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def dithered(size: int) -> np.ndarray:
    """scikit-image's camera photo resized to ``size`` and dithered to black and white (1 bit) by
    Pillow's Floyd-Steinberg: a picture of dots, as a program renders a halftone, a fax or a GIF."""
    from PIL import Image
    from skimage import data
    grey = Image.fromarray(data.camera()).resize((size, size), Image.BICUBIC)
    return np.repeat(np.asarray(grey.convert("1").convert("L"))[..., None], 3, axis=2)


PICTURES = {"screenshot": lambda s: screenshot(s, 0), "screenshot+chart": lambda s: screenshot(s, 1),
            "screenshot colour": lambda s: screenshot(s, 2), "linear grey": lambda s: gradient(s, "linear grey"),
            "linear colour": lambda s: gradient(s, "linear colour"), "radial": lambda s: gradient(s, "radial"),
            "black and white": black_and_white, "dithered": dithered}
DEFAULT = list(PICTURES)[:6]    # the set the docs' figures are over; "black and white", "dithered" when named


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", type=int, nargs="+", default=[30, 50, 75, 85, 88, 90, 95])
    ap.add_argument("--size", type=int, default=512, help="width of the pictures in pixels [512]")
    ap.add_argument("--pictures", default=None,
                    help=f"comma-separated, of {', '.join(PICTURES)} [all but black and white]")
    ap.add_argument("--uniform-only", action="store_true",
                    help="keep only uniform areas as decoded, not rounded planes (the guard before 2026-12-05)")
    args = ap.parse_args(argv)
    names = args.pictures.split(",") if args.pictures else DEFAULT
    unknown = [n for n in names if n not in PICTURES]
    if unknown or args.size < 64:
        print(f"graphics: unknown pictures {unknown}" if unknown else "graphics: --size must be >= 64",
              file=sys.stderr)
        return 2

    from fastreshuffle.inference import guard

    shipped = guard.PLANAR_STEP
    try:
        if args.uniform_only:
            guard.PLANAR_STEP = -1
        return _run(args, names)
    finally:
        guard.PLANAR_STEP = shipped


def _run(args, names) -> int:
    from PIL import Image

    import fastreshuffle
    from benchmarks.common import cpu_flags, machine_line, psnr_or_99

    print(f"# {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"# pictures drawn at width {args.size}; JPEG files restored by fastreshuffle.restore (auto model, "
          f"guarded{', uniform areas only' if args.uniform_only else ''}), fp32; PNG = never compressed")
    cols = [f"q{q}" for q in args.qualities] + ["PNG"]
    print(f"{'picture':<18} " + " ".join(f"{c:>15}" for c in cols))
    print(f"{'':<18} " + " ".join(f"{'in dB / change':>15}" for _ in cols))
    changes = {c: [] for c in cols}
    bad = 0
    for name in names:
        img = PICTURES[name](args.size)
        cells = []
        for q in args.qualities + [None]:
            if q is None:
                data = img
                opened = Image.fromarray(img)
            else:
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", quality=q)
                opened = Image.open(io.BytesIO(buf.getvalue()))
                data = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            out = np.asarray(fastreshuffle.restore(opened, device="cpu", precision="fp32").convert("RGB"))
            before = psnr_or_99(data, img)
            change = psnr_or_99(out, img) - before
            if q is None and not np.array_equal(out, img):
                bad += 1                                   # a never-compressed picture must come back as it is
            changes["PNG" if q is None else f"q{q}"].append(change)
            cells.append(f"{before:6.2f} /{change:+7.3f}")
        print(f"{name:<18} " + " ".join(f"{c:>15}" for c in cells))
    print(f"{'mean':<18} " + " ".join(f"{np.mean(changes[c]):>+15.3f}" for c in cols))
    print(f"{'worst':<18} " + " ".join(f"{np.min(changes[c]):>+15.3f}" for c in cols))
    if bad:
        print(f"graphics: {bad} never-compressed picture(s) changed by restore", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
