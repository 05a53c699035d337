"""Does restoring make an annotated picture worse?  A photo coded as a JPEG, decoded, then drawn on
(a 3-px line and a line of text, as an editor or a screenshot tool adds them) and given to
``fastreshuffle.restore`` as pixels (an array, or a PNG of it): the guard finds the JPEG history
in them and restores where the pixels show it.  The marks were not JPEG-coded: measured against
the photo with the same marks drawn on it, never compressed.

    python -m benchmarks.annotations
    python -m benchmarks.annotations --qualities 30 75 --colours 0,255,0 200,60,60 255,255,255

Prints, per photo x quality x colour, the PSNR before -> after restoring over the whole picture
and within 6 px of the marks.  Default precision of ``restore``, one process, CPU flags printed.

``--pasted``: instead of marks, the decoded JPEG pasted on a page of each colour (64 px around it,
the photo on the page's 16-px grid, as a screenshot of a web page has it), and a bar of each
colour pasted on the decoded JPEG on its 8x8 grid (a redaction bar, a sticker); "near" is within 6
px of the paste's edges.  A grey photo (``camera``) is given as RGB.

    python -m benchmarks.annotations --pasted --photos camera,astronaut,coffee --qualities 10 30 75 90 \
        --colours 30,60,200 200,30,30 250,250,250 20,20,20

``--subsampling 444``: the photo's JPEG in 4:4:4 (default 4:2:0); ``--replicated``: its chroma as a
decoder without libjpeg's fancy upsampling leaves it (each 2x2 box replicated); ``--file`` (with
``--pasted``): the never-compressed picture with the paste coded as one JPEG file and the file
restored (with its tables), instead of the decoded photo pasted; ``--at 61``: the photo 3 px off
the 8x8 grid of the page (and of the file).
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
    ap.add_argument("--pasted", action="store_true",
                    help="the photo pasted on a page of each colour, and a bar of each colour pasted on the photo")
    ap.add_argument("--subsampling", choices=("420", "444"), default="420", help="the JPEG's chroma sampling [420]")
    ap.add_argument("--replicated", action="store_true",
                    help="the decoded chroma replicated, as a decoder without fancy upsampling gives it")
    ap.add_argument("--file", action="store_true",
                    help="with --pasted: the pasted picture coded as one JPEG file, and the file restored")
    ap.add_argument("--at", type=int, default=64,
                    help="with --pasted: the photo this many px from the page's top left corner, 1-127 [64: on "
                         "the 16-px grid]")
    args = ap.parse_args(argv)
    if not 1 <= args.at <= 127:
        ap.error(f"--at must be 1-127, got {args.at}")
    if args.file and (not args.pasted or args.replicated):
        ap.error("--file goes with --pasted, and not with --replicated (the file is decoded as Pillow decodes it)")

    from PIL import Image
    from scipy.ndimage import binary_dilation

    import fastreshuffle
    from benchmarks.common import cpu_flags, machine_line
    from benchmarks.eval_photos import photo

    print(f"# annotations: {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"# {'photo':10s} {'q':>3s} {'colour':>13s} | {'whole: before -> after':>22s} | near the marks")
    for name in args.photos.split(","):
        a = np.ascontiguousarray(photo(name)[:args.size, :args.size])
        sub = 0 if args.subsampling == "444" else 2
        for q in args.qualities:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=q, subsampling=sub)
            decoded = np.asarray(Image.open(buf).convert("RGB"))
            decoded = replicated_chroma(decoded) if args.replicated else decoded
            for colour in args.colours:
                if args.pasted:
                    cases = _pasted(a, a if args.file else decoded, colour, args.at)
                else:
                    drawn = _marked(decoded.copy(), colour)
                    cases = [(drawn, _marked(a.copy(), colour),
                              binary_dilation(np.any(drawn != decoded, axis=2), iterations=6))]
                for drawn, truth, near in cases:
                    src = drawn
                    if args.file:           # the whole picture coded; the file restored with its tables
                        b = io.BytesIO()
                        Image.fromarray(truth).save(b, "JPEG", quality=q, subsampling=sub)
                        src = Image.open(io.BytesIO(b.getvalue()))
                        drawn = np.asarray(src.convert("RGB"))
                    out = np.asarray(fastreshuffle.restore(src, device="cpu"))

                    def psnr(x, m):
                        mse = np.mean((x.astype(np.float64) - truth)[m] ** 2)
                        return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")
                    whole = np.ones(near.shape, bool)
                    print(f"  {name:10s} {q:3d} {str(colour):>13s} | {psnr(drawn, whole):6.2f} -> "
                          f"{psnr(out, whole):6.2f} dB       | {psnr(drawn, near):6.2f} -> {psnr(out, near):6.2f} dB",
                          flush=True)
    return 0


def replicated_chroma(rgb):
    """``rgb`` (even sizes) with its chroma as a decoder without fancy upsampling leaves a 4:2:0
    JPEG's: each 2x2 box of Cb and Cr (JFIF's) replaced by its mean, rounded to 8 bits."""
    from fastreshuffle.inference.jpeg_consistency import _to_ycc
    ycc = _to_ycc(rgb)
    h, w = rgb.shape[:2]
    for i in (1, 2):
        ycc[i] = np.repeat(np.repeat(ycc[i].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)), 2, 0), 2, 1)
    y, cb, cr = ycc[0], ycc[1] - 128, ycc[2] - 128
    out = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _pasted(a, decoded, colour, at=64):
    """[(picture, truth, near)] for the decoded JPEG on a page of ``colour`` (at ``at`` px from its
    top left corner, 128 - ``at`` from the bottom right) and
    for a bar of ``colour`` pasted on the decoded JPEG on its 8x8 grid; near: within 6 px of the
    paste's edges."""
    from scipy.ndimage import binary_dilation
    h, w = a.shape[:2]
    picture = np.empty((h + 128, w + 128, 3), np.uint8)
    picture[:] = colour
    truth = picture.copy()
    picture[at:at + h, at:at + w] = decoded
    truth[at:at + h, at:at + w] = a
    photo_area = np.zeros(picture.shape[:2], bool)
    photo_area[at:at + h, at:at + w] = True
    bar, bar_truth = decoded.copy(), a.copy()
    y0, x0 = h // 64 * 24, w // 64 * 8           # a bar across the middle, on the 8x8 grid
    y1, x1 = y0 + h // 64 * 8, x0 + w // 64 * 40
    bar[y0:y1, x0:x1] = colour
    bar_truth[y0:y1, x0:x1] = colour
    bar_area = np.zeros(bar.shape[:2], bool)
    bar_area[y0:y1, x0:x1] = True

    def near(m):
        return binary_dilation(m, iterations=6) & binary_dilation(~m, iterations=6)
    return [(picture, truth, near(photo_area)), (bar, bar_truth, near(bar_area))]


if __name__ == "__main__":
    raise SystemExit(main())
