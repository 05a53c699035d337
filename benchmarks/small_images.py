"""Does restoring make small or flat images worse?  Crops of the outside photos (benchmarks.eval_photos
OUTSIDE) of 8 to 128 px, or the whole photos (``--full``), coded as JPEG files (Pillow 4:2:0) at several
qualities and restored as ``fastreshuffle restore`` restores a JPEG file (its tables, the guard, the
network of its quality band), in four variants side by side:

* ``before``: no mirrored context around small images, uniform areas not kept (as up to 2026-12-05);
* ``context``: small images run with mirrored context (``tiling.MIN_CONTEXT``);
* ``uniform``: uniform areas kept as decoded (``guard.UNIFORM_RADIUS``, ``--radius``);
* ``both``: what ``restore`` does now;
* with ``--planar``, ``both uniform only``: ``both`` without the rule that keeps rounded planes
  as decoded too (``guard.PLANAR_STEP``, since 2026-12-05).

    python -m benchmarks.small_images                    # crops, q10-q90
    python -m benchmarks.small_images --full --qualities 5 10 20 30 50 75 90 --radius 4 8 16
    python -m benchmarks.small_images --full --qualities 5 10 20 30 50 75 90 --planar

Prints, per size (or "full") x quality x variant, the mean and the worst change of RGB PSNR and how
many images got worse (by more than 0.01 dB).  fp32, one process, CPU flags printed.
"""
from __future__ import annotations

import argparse
import io
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--crops", type=int, default=6, help="crops per photo and size [6]")
    ap.add_argument("--full", action="store_true", help="whole photos instead of crops")
    ap.add_argument("--qualities", type=int, nargs="+", default=[10, 30, 50, 75, 90])
    ap.add_argument("--radius", type=int, nargs="+", default=None,
                    help="uniform-area radii to compare (default: the shipped UNIFORM_RADIUS)")
    ap.add_argument("--photos", default=None, help="comma-separated scikit-image photos [eval_photos.OUTSIDE]")
    ap.add_argument("--planar", action="store_true", help="also run 'both' with uniform areas only (no planes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from PIL import Image

    import fastreshuffle
    from benchmarks.common import cpu_flags, machine_line, psnr_or_99
    from benchmarks.eval_photos import OUTSIDE, photo
    from fastreshuffle.inference import guard, tiling

    shipped = guard.UNIFORM_RADIUS, tiling.MIN_CONTEXT, guard.PLANAR_STEP
    radii = args.radius or [shipped[0]]
    context, step = shipped[1], shipped[2]
    variants = [("before", -1, 0, step), ("context", -1, context, step)]
    variants += [(f"uniform r{r}", r, 0, step) for r in radii] + [(f"both r{r}", r, context, step) for r in radii]
    if args.planar:
        variants += [(f"both r{r} uniform only", r, context, -1) for r in radii]
    names = args.photos.split(",") if args.photos else list(OUTSIDE)
    rng = np.random.default_rng(args.seed)
    items = []
    for name in names:
        img = photo(name)
        if args.full:
            items.append(("full", img))
            continue
        for s in args.sizes:
            for _ in range(args.crops):
                y = int(rng.integers(0, img.shape[0] - s + 1)) // 8 * 8
                x = int(rng.integers(0, img.shape[1] - s + 1)) // 8 * 8
                items.append((s, img[y:y + s, x:x + s]))
    print(f"# {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"# {len(names)} photos, {'whole' if args.full else f'{args.crops} crops per size'}, model jpeg, fp32")
    res = {}
    try:
        for key, img in items:
            for q in args.qualities:
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", quality=q)
                data = buf.getvalue()
                coded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                for name, radius, ctx, planar in variants:
                    guard.UNIFORM_RADIUS, tiling.MIN_CONTEXT, guard.PLANAR_STEP = radius, ctx, planar
                    out = np.asarray(fastreshuffle.restore(Image.open(io.BytesIO(data)), "jpeg", device="cpu",
                                                           precision="fp32"))
                    res.setdefault((key, q, name), []).append(psnr_or_99(out, img) - psnr_or_99(coded, img))
    finally:
        guard.UNIFORM_RADIUS, tiling.MIN_CONTEXT, guard.PLANAR_STEP = shipped
    keys = ["full"] if args.full else args.sizes
    print(f"{'size':>5} {'q':>3} " + " ".join(f"{n:>24}" for n, *_ in variants))
    print(f"{'':>9} " + " ".join(f"{'mean / worst / worse':>24}" for _ in variants))
    for key in keys:
        for q in args.qualities:
            cells = []
            for n, *_ in variants:
                g = res[(key, q, n)]
                cells.append(f"{np.mean(g):+7.3f} /{np.min(g):+8.3f} /{sum(v < -0.01 for v in g):3d}")
            print(f"{key!s:>5} {q:>3} " + " ".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
