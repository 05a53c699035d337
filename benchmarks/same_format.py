"""What writing a restored JPEG back as JPEG costs: RGB PSNR against the original of the JPEG
input, of the restored pixels (lossless, ``restore``'s default PNG) and of those pixels re-encoded
as JPEG at several qualities (4:4:4, as ``restore --format same`` writes), per input quality.

    python -m benchmarks.same_format --data ../shared/data/train/CBSD432 --limit 24
    python -m benchmarks.same_format --data /tmp/outside --quality 80 85 90 95 --json same.json
    python -m benchmarks.same_format --data VAL8 --reduce 2   # originals that are JPEGs themselves

The inputs are Pillow JPEGs (4:2:0) of each photo, restored through their tables as
``fastreshuffle.restore`` does with a PIL JPEG (guard on).  Prints, per input quality, the mean
and the worst change over the input for each output; ``KEEP_JPEG_FROM`` in
``fastreshuffle/inference/files.py`` comes from this table (from where the re-encode at the
default quality stops keeping the gain).
"""
from __future__ import annotations

import argparse
import io
import json
from typing import Dict, List, Sequence

import numpy as np

from benchmarks.common import SUBSAMPLING

OUTPUT_QUALITIES = (95, 97, 98, 99, 100)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def jpeg_roundtrip(img: np.ndarray, quality: int, subsampling: int = 2):
    """-> (the PIL JPEG image, its decoded RGB pixels); ``subsampling`` in Pillow's numbers
    (2: 4:2:0, Pillow's default; 0: 4:4:4)."""
    from PIL import Image

    from fastreshuffle.io.codecs import jpeg_file
    im = Image.open(io.BytesIO(jpeg_file(img, quality, SUBSAMPLING[subsampling])))
    return im, np.asarray(im.convert("RGB"))


def measure(images: Sequence[np.ndarray], qualities: Sequence[int], model="jpeg",
            outputs: Sequence[int] = OUTPUT_QUALITIES) -> List[Dict]:
    import fastreshuffle as fr
    rows = []
    for q in qualities:
        d = []
        for img in images:
            im, dec = jpeg_roundtrip(img, q)
            out = np.asarray(fr.restore(im, model, device="cpu"))
            base = psnr(dec, img)
            line = [psnr(out, img) - base]
            for oq in outputs:
                line.append(psnr(jpeg_roundtrip(out, oq, subsampling=0)[1], img) - base)
            d.append(line)
        d = np.array(d)
        rows.append({"quality": int(q), "outputs": ["png"] + [f"jpeg{oq}" for oq in outputs],
                     "mean": d.mean(0).round(3).tolist(), "worst": d.min(0).round(3).tolist()})
    return rows


def main(argv=None) -> int:
    from fastreshuffle.training.data import load_folder
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of original photos")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--quality", type=int, nargs="+", default=[75, 80, 83, 85, 88, 90, 92, 95])
    p.add_argument("--model", default="jpeg")
    p.add_argument("--reduce", type=int, default=1,
                   help="shrink each photo N times first (training.data.shrink): for originals that are JPEGs "
                        "themselves (CBSD432's are quality 95), whose own coding noise would count as loss")
    p.add_argument("--json")
    a = p.parse_args(argv)
    if not 1 <= a.reduce <= 8:
        p.error(f"--reduce must be 1 to 8, got {a.reduce}")
    images = load_folder(a.data, limit=a.limit, reduce=a.reduce)[0]
    rows = measure(images, a.quality, a.model)
    print("input q | change over the input (dB), mean / worst: " + "  ".join(rows[0]["outputs"]))
    for r in rows:
        print(f"{r['quality']:7d} | " + "  ".join(f"{m:+.3f}/{w:+.3f}" for m, w in zip(r["mean"], r["worst"])))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
