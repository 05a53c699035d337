"""Decoded JPEGs without their file (a PNG, an array), in small crops: what the blind path finds
and gains, beside the JPEG file of the same pixels.

Crops of each photo in ``--data`` (default Kodak24 from the data root) at two positions (from
(100, 100) and (103, 105)) and each size, coded as JPEG files (Pillow 4:2:0) at each quality,
then restored twice as ``fastreshuffle.restore`` does: the decoded pixels as an array (the JPEG
history looked for in the pixels: ``inference/jpeg_history.py``) and the file (its own tables).
Also each never-compressed crop as an array, which must come back unchanged.

    python -m benchmarks.blind_crops                          # Kodak24, 96 / 160x120 / 256, q5-85
    python -m benchmarks.blind_crops --data DIR --json out.json

Prints per size x quality: the mean gain (RGB PSNR, dB) of the blind restore and of the file's,
the worst image's blind gain, how many claims were found on the codec's own grid (offset (0, 0))
and how many elsewhere, and how many blind restores gained over 0.05 dB less than the file's.
To compare two versions, run it in a checkout of each.  fp32, one thread, CPU flags printed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings

import numpy as np

SIZES = ((96, 96), (160, 120), (256, 256))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder of never-compressed photos [Kodak24 from the data root]")
    ap.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 20, 50, 85])
    ap.add_argument("--json", default=None, help="also write every result here")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    import fastreshuffle as fr
    from benchmarks.common import cpu_flags
    from fastreshuffle.inference.jpeg_history import detect_jpeg
    from fastreshuffle.io.datasets import eval_dir
    from fastreshuffle.io.images import list_images
    from fastreshuffle.metrics import psnr

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")     # the "under 64 px" and "no JPEG found" warnings, per image
    folder = args.data or str(eval_dir())
    files = list_images(folder)
    if not files:
        print(f"no images in {folder}", file=sys.stderr)
        return 2
    print(f"# blind crops: {folder} ({len(files)} images), JPEG 4:2:0, fp32, 1 thread; CPU flags: {cpu_flags()}")
    rows, unchanged = {}, []
    for path in files:
        im = np.asarray(Image.open(path).convert("RGB"))
        for h, w in SIZES:
            for y0, x0 in ((100, 100), (103, 105)):
                c = np.ascontiguousarray(im[y0:y0 + h, x0:x0 + w])
                if c.shape[:2] != (h, w):
                    continue
                if (y0, x0) == (100, 100):
                    unchanged.append(bool(np.array_equal(fr.restore(c, device="cpu", precision="fp32"), c)))
                for q in args.qualities:
                    buf = io.BytesIO()
                    Image.fromarray(c).save(buf, "JPEG", quality=q)
                    d = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
                    found = detect_jpeg(d)
                    blind = fr.restore(d, device="cpu", precision="fp32")
                    file = np.asarray(fr.restore(Image.open(io.BytesIO(buf.getvalue())), device="cpu", precision="fp32"))
                    base = psnr(c, d)
                    rows.setdefault((h, q), []).append({
                        "image": os.path.basename(str(path)), "at": [y0, x0], "blind": psnr(c, blind) - base,
                        "file": psnr(c, file) - base,
                        "found": None if found is None else {"offset": list(found.offset), "quality": found.quality}})
    print(f"{'size':>9} {'q':>3} | {'blind':>7} {'file':>7} {'worst':>7} | {'on grid':>7} {'off':>4} {'none':>4} | behind file")
    for (h, q), rs in sorted(rows.items()):
        w = dict(SIZES)[h]
        on = sum(r["found"] is not None and r["found"]["offset"] == [0, 0] for r in rs)
        none = sum(r["found"] is None for r in rs)
        print(f"{f'{w}x{h}':>9} {q:>3} | {np.mean([r['blind'] for r in rs]):+7.3f} {np.mean([r['file'] for r in rs]):+7.3f} "
              f"{min(r['blind'] for r in rs):+7.2f} | {on:>7} {len(rs) - on - none:>4} {none:>4} | "
              f"{sum(r['blind'] < r['file'] - 0.05 for r in rs)} of {len(rs)}")
    print(f"never-compressed crops returned unchanged: {sum(unchanged)} of {len(unchanged)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": folder, "cpu_flags": cpu_flags(), "unchanged": unchanged,
                       "rows": [{"size": [dict(SIZES)[h], h], "quality": q, "results": rs}
                                for (h, q), rs in sorted(rows.items())]}, f, indent=1)
    return 0 if all(unchanged) else 1


if __name__ == "__main__":
    sys.exit(main())
