"""The shipped JPEG model on photos outside Kodak24: scikit-image's ``astronaut``, ``coffee``,
``chelsea`` and ``rocket`` (README "Shipped models"), JPEG q10 (Pillow, 4:2:0) -> restored.

    python -m benchmarks.eval_photos                 # the README's four photos, model jpeg, q10
    python -m benchmarks.eval_photos --quality 30 --model path/to/weights.safetensors
    python -m benchmarks.eval_photos --save /tmp/outside    # OUTSIDE's seven photos as PNG, for
    python -m benchmarks.harm_curve --data /tmp/outside      # ... any folder tool (also `fastreshuffle eval`)

Prints RGB PSNR of the JPEG image and of the restored one against the original, and the gain;
``--json`` writes the rows.  ``tests/inference/test_shipped_models.py`` pins these gains.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Sequence

import numpy as np

from fastreshuffle.backends import PRECISIONS

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# The no-harm check outside Kodak24 (``--save``): the four above plus a dark star field, a fundus
# photo and a synthetic colour wheel.  Left out: ``immunohistochemistry`` -- it is itself a decoded
# JPEG (the blind detector finds IJG q74 on a grid at (3, 5)), so a restore that removes those
# artifacts would be scored as harm against it.  Three of the seven are JPEG files too, of high
# quality: hubble_deep_field (IJG q95, 4:4:4), retina (q94, 4:2:0) and rocket (q95, 4:4:4): against
# them a JPEG of about that quality or more restored well loses PSNR (the retina at q93 and q95), so
# rows from q93 on are checked on the seven shrunk 2x (``harm_curve --reduce 2``) as well.
OUTSIDE = PHOTOS + ("hubble_deep_field", "retina", "colorwheel")


def photo(name: str) -> np.ndarray:
    """RGB uint8 (alpha dropped; a grey photo, such as ``camera``, as three equal channels) of a
    scikit-image sample photo."""
    import skimage.data

    a = getattr(skimage.data, name)()
    return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3])


def gains(photos: Sequence[str] = PHOTOS, model="jpeg", quality: int = 10, device="cpu",
          precision: str = "auto") -> List[Dict]:
    """One row per photo: JPEG ``quality`` through ``fastreshuffle.io.codecs.jpeg``, then
    ``fastreshuffle.restore`` (whole image, no tiles) in ``precision`` (``restore``'s: "auto" is
    bf16 where the AVX512-BF16 kernel runs, fp32 elsewhere, so its gains differ by ~0.002 dB from
    one kind of CPU to the other)."""
    import fastreshuffle
    from fastreshuffle.io import codecs
    from fastreshuffle.metrics import psnr

    rows = []
    for name in photos:
        img = photo(name)
        coded = codecs.jpeg(img, quality)
        out = fastreshuffle.restore(coded.image, model, device=device, tile=0, precision=precision)
        before, after = psnr(img, coded.image), psnr(img, out)
        rows.append(dict(photo=name, height=img.shape[0], width=img.shape[1], bpp=coded.bpp,
                         psnr_codec=before, psnr_restored=after, gain=after - before))
    return rows


def save(folder: str, names: Sequence[str] = OUTSIDE) -> int:
    """Write ``names`` as ``<name>.png`` into ``folder``; refuses a folder that has files in it."""
    from pathlib import Path

    from PIL import Image
    out = Path(folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} exists and is not an empty folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(photo(name)).save(out / f"{name}.png")
    print(f"wrote {len(names)} photos to {out}: {', '.join(names)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="jpeg", help="shipped model name or weights file [jpeg]")
    ap.add_argument("--quality", type=int, default=10)
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="restore's precision [auto: bf16 where the AVX512-BF16 kernel runs, else fp32]")
    ap.add_argument("--json", default=None)
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="only write the OUTSIDE photos as PNG into DIR (a new or empty folder) and exit")
    args = ap.parse_args(argv)
    if args.save:
        return save(args.save)
    rows = gains(args.photos.split(","), args.model, args.quality, args.device, args.precision)
    import torch

    from fastreshuffle.backends import resolve_precision
    dtype = str(resolve_precision(args.precision, torch.device(args.device))).replace("torch.", "")
    print(f"model {args.model}, JPEG q{args.quality} (Pillow 4:2:0), {dtype} ({args.precision}), "
          "RGB PSNR vs the original")
    print(f"{'photo':<10} {'size':>9} {'bpp':>6} {'JPEG dB':>8} {'restored':>9} {'gain':>7}")
    for r in rows:
        print(f"{r['photo']:<10} {r['width']:>4}x{r['height']:<4} {r['bpp']:>6.3f} {r['psnr_codec']:>8.2f} "
              f"{r['psnr_restored']:>9.2f} {r['gain']:>+7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=args.model, quality=args.quality, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
