"""Tiled against untiled restoration with the shipped models: how far apart they are, per
tile size and overlap (docs/restore.md, "Tiling").

    python -m benchmarks.tile_seams [--models jpeg hevc-paper] [--tile 128] [--overlaps 32 48 64 96]

A real photo (scikit-image's ``astronaut``, 512x512, JPEG q20 through Pillow) is restored by the
network in float32 without the guard, once whole and once per (tile, overlap); printed: the
largest float difference, the largest 8-bit difference and how many 8-bit pixels differ by more
than one level.  Small tiles put most pixels near a seam; the defaults are printed beside.
"""
from __future__ import annotations

import argparse
import io

import numpy as np

from .common import cpu_flags, machine_line


def photo(quality: int) -> np.ndarray:
    from PIL import Image
    from skimage import data
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["jpeg", "hevc-paper"])
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlaps", type=int, nargs="+", default=[16, 32, 48, 64, 96])
    p.add_argument("--quality", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    import fastreshuffle as fr
    from fastreshuffle.inference.tiling import DEFAULT_OVERLAP, default_tile

    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"CPU flags: {cpu_flags()}")
    print(f"defaults on CPU: tile {default_tile('cpu')}, overlap {DEFAULT_OVERLAP}")
    x = photo(args.quality).astype(np.float32) / 255
    print(f"astronaut 512x512, JPEG q{args.quality}; tile {args.tile}; float32, no guard")
    print(f"{'model':<12} {'overlap':>7} {'max |float diff|':>17} {'max levels':>10} {'pixels > 1 level':>16}")
    for name in args.models:
        kw = dict(model=name, device="cpu", guard=False, precision="fp32")
        whole = fr.restore(x, tile=0, **kw)
        for ov in args.overlaps:
            tiled = fr.restore(x, tile=args.tile, overlap=ov, **kw)
            d = np.abs(tiled - whole).max()
            levels = np.abs(np.round(tiled * 255).astype(int) - np.round(whole * 255).astype(int))
            print(f"{name:<12} {ov:>7} {d:>17.1e} {levels.max():>10} {int((levels > 1).sum()):>16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
