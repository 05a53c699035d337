"""Does restoring make pixelated photos worse?  Crops of the outside photos (benchmarks.eval_photos
OUTSIDE, scikit-image's) enlarged by copying pixels -- cells of ``--cells`` px (8 and 16: on the
JPEG grid; 4, and 8 shifted by 4 px: not) -- coded as JPEG files (Pillow, 4:2:0 and 4:4:4) and
restored as ``fastreshuffle restore`` restores a JPEG file (``fastreshuffle.restore`` on the opened
file: its tables, the guard, the network of its quality band), with the guard's rule for flat cells
(``guard.keep_cells``) and without it, side by side.

    python -m benchmarks.pixelated                          # q10-q95, cells of 4, 8, 8+4, 16 px
    python -m benchmarks.pixelated --qualities 90 --cells 8 --samplings 444

Prints, per cell size x sampling x quality, the mean and the worst change of RGB PSNR over the
photos (decoded JPEG -> restored, against the pixelated picture), for both, and how many photos
got worse by more than 0.05 dB.  fp32, one process, CPU flags printed.
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np

SAMPLINGS = {"420": 2, "444": 0}


def pixelated(photo: np.ndarray, cell: int, shift: int = 0, size: int = 256) -> np.ndarray:
    """A ``size`` x ``size`` picture of ``cell`` x ``cell`` cells, each a pixel of the middle of
    ``photo``; the cells start ``shift`` px off the top-left corner."""
    n = (size + shift) // cell + 1
    h, w = photo.shape[:2]
    crop = photo[(h - n) // 2:(h - n) // 2 + n, (w - n) // 2:(w - n) // 2 + n]
    big = np.repeat(np.repeat(crop, cell, axis=0), cell, axis=1)
    return np.ascontiguousarray(big[cell - shift:cell - shift + size, cell - shift:cell - shift + size]
                                if shift else big[:size, :size])


def main(argv=None) -> int:
    from benchmarks.eval_photos import OUTSIDE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", type=int, nargs="+", default=[10, 30, 50, 75, 90, 95])
    ap.add_argument("--cells", nargs="+", default=["4", "8", "8+4", "16"],
                    help="cell sizes in px; N+S: cells of N px shifted by S px [4 8 8+4 16]")
    ap.add_argument("--samplings", nargs="+", default=list(SAMPLINGS), choices=list(SAMPLINGS))
    ap.add_argument("--photos", default=",".join(OUTSIDE), help="comma-separated scikit-image photos")
    ap.add_argument("--size", type=int, default=256, help="side of the pictures in px [256]")
    args = ap.parse_args(argv)
    try:
        cells = [tuple(int(v) for v in c.split("+")) if "+" in c else (int(c), 0) for c in args.cells]
    except ValueError:
        print(f"pixelated: --cells takes N or N+S, got {args.cells}", file=sys.stderr)
        return 2
    if any(c < 1 or not 0 <= s < c for c, s in cells) or args.size < 64:
        print("pixelated: cells of 1 px or more, shifts under the cell, --size 64 or more", file=sys.stderr)
        return 2
    return _run(args, cells)


def _run(args, cells) -> int:
    from PIL import Image

    import fastreshuffle
    from benchmarks.common import cpu_flags, machine_line, psnr_or_99
    from benchmarks.eval_photos import photo
    from fastreshuffle.inference import guard

    names = args.photos.split(",")
    photos = {n: photo(n) for n in names}
    print(f"# {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"# {len(names)} photos ({', '.join(names)}), {args.size} px pictures; JPEG files restored by "
          "fastreshuffle.restore (auto model, guarded), fp32; change of RGB PSNR in dB, mean / worst (photos worse "
          "by > 0.05 dB)")
    print(f"{'cells':<6} {'chroma':<7} {'quality':<8} {'decoded dB':>10}   {'with keep_cells':>26}   "
          f"{'without':>26}")
    shipped = guard._CELL_SHARE, guard._CELL_FLAT_SHARE
    try:
        for cell, shift in cells:
            for sampling in args.samplings:
                for q in args.qualities:
                    before, changes = [], {True: [], False: []}
                    for name in names:
                        pic = pixelated(photos[name], cell, shift, args.size)
                        buf = io.BytesIO()
                        Image.fromarray(pic).save(buf, "JPEG", quality=q, subsampling=SAMPLINGS[sampling])
                        data = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
                        b = psnr_or_99(data, pic)
                        before.append(b)
                        for on in (True, False):
                            guard._CELL_SHARE, guard._CELL_FLAT_SHARE = shipped if on else (float("inf"),) * 2
                            out = fastreshuffle.restore(Image.open(io.BytesIO(buf.getvalue())), device="cpu",
                                                        precision="fp32")
                            changes[on].append(psnr_or_99(np.asarray(out.convert("RGB")), pic) - b)
                    cols = [f"{np.mean(changes[on]):+8.3f} / {np.min(changes[on]):+8.3f} "
                            f"({sum(c < -0.05 for c in changes[on])})" for on in (True, False)]
                    label = f"{cell}" + (f"+{shift}" if shift else "")
                    print(f"{label:<6} {sampling:<7} q{q:<7} {np.mean(before):>10.2f}   {cols[0]:>26}   "
                          f"{cols[1]:>26}", flush=True)
    finally:
        guard._CELL_SHARE, guard._CELL_FLAT_SHARE = shipped
    return 0


if __name__ == "__main__":
    sys.exit(main())
