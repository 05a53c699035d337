"""What the blind guard's chroma check costs on whole decoded JPEGs given as pixels: the photos of
``--data`` coded as JPEG at each quality, decoded as libjpeg does (``420``, ``422``, ``444``) or
with its chroma replicated as a decoder without fancy upsampling leaves it (``replicated``), and
restored as arrays twice in one process, with the check (``restore``'s default) and without it
(``jpeg_history._CHROMA_VETO`` set to infinity).  A decoded JPEG's chroma is what the decoder
makes, so the check should cost little; where it does, the gain lost is printed per photo.

    python -m benchmarks.eval_photos --save /tmp/outside
    python -m benchmarks.chroma_check --data /tmp/outside --data HELD_OUT_DIR --kinds 420 422 444 replicated

Prints per kind x quality the mean and the worst gain (RGB PSNR, dB) without -> with the check,
and each photo whose gain moved by more than 0.005 dB.  Default precision of ``restore``, one
thread, CPU flags printed (docs/quality.md, *Pasted pictures*).
"""
from __future__ import annotations

import argparse
import io
import sys
import warnings

import numpy as np

KINDS = ("420", "422", "444", "replicated")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="a folder of never-compressed photos (repeatable)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--qualities", type=int, nargs="+", default=[10, 30, 75, 90])
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    import fastreshuffle as fr
    from benchmarks.annotations import replicated_chroma
    from benchmarks.common import cpu_flags
    from fastreshuffle.inference import jpeg_history
    from fastreshuffle.io.images import list_images
    from fastreshuffle.metrics import psnr

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")      # ("no JPEG found in the pixels", per image)
    files = [f for d in args.data for f in list_images(d)]
    if not files:
        print(f"no images in {', '.join(args.data)}", file=sys.stderr)
        return 2
    photos = []
    for path in files:
        a = np.asarray(Image.open(path).convert("RGB"))
        photos.append((str(path).rsplit("/", 1)[-1], np.ascontiguousarray(a[:a.shape[0] // 2 * 2, :a.shape[1] // 2 * 2])))
    print(f"# chroma check: {len(photos)} photos; CPU flags: {cpu_flags()}")
    limit = jpeg_history._CHROMA_VETO
    for kind in args.kinds:
        for q in args.qualities:
            without, with_ = [], []
            for name, a in photos:
                b = io.BytesIO()
                Image.fromarray(a).save(b, "JPEG", quality=q, subsampling={"422": 1, "444": 0}.get(kind, 2))
                d = np.asarray(Image.open(b).convert("RGB"))
                d = replicated_chroma(d) if kind == "replicated" else d
                try:
                    jpeg_history._CHROMA_VETO = float("inf")
                    g0 = psnr(a, fr.restore(d, device="cpu")) - psnr(a, d)
                finally:
                    jpeg_history._CHROMA_VETO = limit
                g1 = psnr(a, fr.restore(d, device="cpu")) - psnr(a, d)
                without.append(g0)
                with_.append(g1)
                if abs(g1 - g0) > 0.005:
                    print(f"  {kind} q{q} {name}: {g0:+.3f} -> {g1:+.3f} dB", flush=True)
            print(f"{kind:10s} q{q:<3d} mean {np.mean(without):+.3f} -> {np.mean(with_):+.3f} dB, "
                  f"worst {min(without):+.3f} -> {min(with_):+.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
