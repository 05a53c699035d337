"""Does restoring make an annotated picture worse?  A photo coded as a JPEG, decoded, then drawn on
(a 3-px line and a line of text, as an editor or a screenshot tool adds them) and given to
``fastreshuffle.restore`` as pixels (an array, or a PNG of it): the guard finds the JPEG history
in them and restores where the pixels show it.  The marks were not JPEG-coded: measured against
the photo with the same marks drawn on it, never compressed.

    python -m benchmarks.annotations
    python -m benchmarks.annotations --qualities 30 75 --colours 0,255,0 200,60,60 255,255,255

Prints, per photo x quality x colour, the PSNR before -> after restoring over the whole picture
and within 6 px of the marks.  Default precision of ``restore``, one process, CPU flags printed.
"""
from __future__ import annotations

import argparse
import io

import numpy as np


def _colour(text: str):
    try:
        c = tuple(int(v) for v in text.split(","))
    except ValueError:
        c = ()
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise argparse.ArgumentTypeError(f"a colour is R,G,B in 0..255, e.g. 0,255,0; got {text!r}")
    return c


def _marked(img, colour):
    from PIL import Image, ImageDraw
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    d = ImageDraw.Draw(im)
    h, w = im.size[1], im.size[0]
    d.line((0, 0, w - 1, int(h * 0.8)), fill=colour, width=3)
    d.text((w // 12, int(h * 0.8)), "Hello 2026", fill=colour)
    return np.asarray(im).copy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="astronaut,coffee,chelsea",
                    help="comma-separated scikit-image photos [astronaut,coffee,chelsea]")
    ap.add_argument("--size", type=int, default=256, help="the top-left crop's side [256]")
    ap.add_argument("--qualities", type=int, nargs="+", default=[10, 30, 50, 75, 90])
    ap.add_argument("--colours", type=_colour, nargs="+", default=[(0, 255, 0), (200, 60, 60), (255, 255, 255)])
    args = ap.parse_args(argv)

    from PIL import Image
    from scipy.ndimage import binary_dilation

    import fastreshuffle
    from benchmarks.common import cpu_flags, machine_line
    from benchmarks.eval_photos import photo

    print(f"# annotations: {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"# {'photo':10s} {'q':>3s} {'colour':>13s} | {'whole: before -> after':>22s} | near the marks")
    for name in args.photos.split(","):
        a = np.ascontiguousarray(photo(name)[:args.size, :args.size, :3])
        for q in args.qualities:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=q)
            decoded = np.asarray(Image.open(buf).convert("RGB"))
            for colour in args.colours:
                drawn = _marked(decoded.copy(), colour)
                truth = _marked(a.copy(), colour)
                near = binary_dilation(np.any(drawn != decoded, axis=2), iterations=6)
                out = fastreshuffle.restore(drawn, device="cpu")

                def psnr(x, m):
                    return 10 * np.log10(255.0 ** 2 / np.mean((x.astype(np.float64) - truth)[m] ** 2))
                whole = np.ones(near.shape, bool)
                print(f"  {name:10s} {q:3d} {str(colour):>13s} | {psnr(drawn, whole):6.2f} -> {psnr(out, whole):6.2f} dB"
                      f"       | {psnr(drawn, near):6.2f} -> {psnr(out, near):6.2f} dB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
