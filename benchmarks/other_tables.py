"""JPEG files written with other encoders' quantisation tables: does restoring them make them worse?

Most encoders scale the IJG (libjpeg) tables, but cameras, phones and editors write their own,
often flatter ones at high quality, and 4:4:4 or grey files (ImageMagick from quality 90, GIMP,
scanners).  Each photo of ``--data`` (shrunk ``--reduce`` times first) is written by Pillow with
each table pair below, at 4:2:0, 4:4:4 and as a grey JPEG (``--samplings``: 4:2:2 too), restored as ``fastreshuffle.restore``
does (the file's tables: band, share of the correction, consistency), and scored against the
photo (RGB PSNR, or grey).  ``--before`` also restores each file with the guard of session 47
(the luma table's IJG quality and one schedule for every chroma sampling), side by side.

    python -m benchmarks.other_tables                                    # Kodak24
    python -m benchmarks.other_tables --data HELD_OUT --reduce 2 --before --tables flat-6 ijg-97
    python -m benchmarks.other_tables --samplings 4:2:2                  # as some cameras write

Tables (luma; chroma alongside), steps clipped to 1..255: ``ijg-Q`` IJG quality Q; ``flat-K``
every step K (chroma too); ``lin-A-B`` A + B (u + v) (chroma A + 2B (u + v)); ``quad-A-B`` A + B
(u^2 + v^2) (chroma 1.5x); ``stdceil-S`` the standard tables times S rounded up; ``lQ-cflat1``
IJG qQ luma (97, 80, 90), chroma steps 1; ``l88-c97`` IJG q88 luma, IJG q97 chroma; Pillow's presets
``high``, ``medium``, ``low`` (Photoshop-like).  fp32 or the default precision, one thread, CPU
flags printed.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np

SAMPLINGS = {"4:2:0": 2, "4:2:2": 1, "4:4:4": 0, "grey": None}   # -> Pillow's subsampling (None: grey)
DEFAULT_SAMPLINGS = ("4:2:0", "4:4:4", "grey")


def table_pairs():
    """name -> (luma, chroma) 8 x 8 int tables, natural order."""
    from PIL import JpegPresets

    from fastreshuffle.io.jpeg_tables import IJG_CHROMA, IJG_LUMA, ijg_table
    u, v = np.mgrid[0:8, 0:8]

    def clip(t):
        return np.clip(np.round(t), 1, 255).astype(int)

    pairs = {}
    for q in (85, 90, 93, 95, 96, 97):
        pairs[f"ijg-{q}"] = (ijg_table(q).reshape(8, 8).astype(int), ijg_table(q, IJG_CHROMA).reshape(8, 8).astype(int))
    for k in (4, 5, 6, 7):
        pairs[f"flat-{k}"] = (np.full((8, 8), k), np.full((8, 8), k))
    for a, b in ((1, 0.3), (1, 0.4), (2, 0.5), (3, 1.0)):
        pairs[f"lin-{a}-{b}"] = (clip(a + b * (u + v)), clip(a + 2 * b * (u + v)))
    for a, b in ((2, 0.1), (3, 0.3)):
        pairs[f"quad-{a}-{b}"] = (clip(a + b * (u ** 2 + v ** 2)), clip(1.5 * (a + b * (u ** 2 + v ** 2))))
    for s in (0.06, 0.1, 0.22):
        pairs[f"stdceil-{s}"] = (np.ceil(IJG_LUMA.reshape(8, 8) * s).astype(int),
                                 np.ceil(IJG_CHROMA.reshape(8, 8) * s).astype(int))
    for q in (97, 80, 90):
        pairs[f"l{q}-cflat1"] = (ijg_table(q).reshape(8, 8).astype(int), np.ones((8, 8), int))
    pairs["l88-c97"] = (ijg_table(88).reshape(8, 8).astype(int), ijg_table(97, IJG_CHROMA).reshape(8, 8).astype(int))
    for name in ("high", "medium", "low"):
        t = JpegPresets.presets[name]["quantization"]
        pairs[name] = (np.array(t[0]).reshape(8, 8), np.array(t[1]).reshape(8, 8))
    return pairs


def _before_guard(guard):
    """The guard of session 47 (before 4:4:4 and flat tables were told apart): the luma table's
    IJG quality, and the band's schedule whatever the chroma sampling."""
    from fastreshuffle.io.jpeg_tables import ijg_quality

    def guard_for(tables, model=None):
        if tables is None:
            return None
        q = ijg_quality(tables.luma)
        return guard.Guard(tables, q, guard._band_strength(q, model, False))
    return guard_for


def main(argv=None) -> int:
    pairs = table_pairs()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder of never-compressed photos [Kodak24 from the data root]")
    ap.add_argument("--reduce", type=int, default=1, help="shrink each photo N times first (mean of N x N)")
    ap.add_argument("--tables", nargs="+", default=list(pairs), choices=list(pairs), metavar="NAME",
                    help="table pairs to write (default: all)")
    ap.add_argument("--samplings", nargs="+", default=list(DEFAULT_SAMPLINGS), choices=list(SAMPLINGS),
                    metavar="S", help=f"chroma samplings to write, of {', '.join(SAMPLINGS)} "
                                      f"(default: {' '.join(DEFAULT_SAMPLINGS)})")
    ap.add_argument("--before", action="store_true", help="also restore with the guard of session 47")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--json", default=None, help="also write every result here")
    args = ap.parse_args(argv)
    if args.reduce < 1:
        ap.error(f"--reduce must be 1 or more, got {args.reduce}")

    import torch
    from PIL import Image

    import fastreshuffle as fr
    from benchmarks.common import cpu_flags
    from fastreshuffle.inference import guard
    from fastreshuffle.inference.evaluate import load_eval_images
    from fastreshuffle.io.datasets import eval_dir
    from fastreshuffle.io.jpeg_tables import tables_from_pil
    from fastreshuffle.metrics import psnr
    from fastreshuffle.training.data import shrink

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    folder = args.data or str(eval_dir())
    images, names, _ = load_eval_images(Path(folder))
    if not images:
        print(f"no images in {folder}", file=sys.stderr)
        return 2
    if args.reduce > 1:
        images = [shrink(a, args.reduce) for a in images]
    print(f"# other encoders' tables: {folder} ({len(images)} photos{f', shrunk {args.reduce}x' if args.reduce > 1 else ''}), "
          f"precision {args.precision}, 1 thread; CPU flags: {cpu_flags()}")
    rules = {"now": guard.guard_for}
    if args.before:
        rules = {"before": _before_guard(guard), **rules}
    print(f"{'tables':>12} {'sampling':>8} {'q':>3} | " + " | ".join(f"{r:>6}: mean / worst" for r in rules)
          + " (dB; q: the quality now read)")
    out, real = [], guard.guard_for
    try:
        for name in args.tables:
            luma, chroma = pairs[name]
            for label in args.samplings:
                sub = SAMPLINGS[label]
                gains = {r: [] for r in rules}
                quality = None
                for a in images:
                    buf = io.BytesIO()
                    if sub is None:
                        a = np.asarray(Image.fromarray(a).convert("L"))
                        Image.fromarray(a).save(buf, "JPEG", qtables=[luma.ravel().tolist()])
                    else:
                        Image.fromarray(a).save(buf, "JPEG", qtables=[luma.ravel().tolist(), chroma.ravel().tolist()],
                                                subsampling=sub)
                    data = buf.getvalue()
                    decoded = np.asarray(Image.open(io.BytesIO(data)))
                    tables = tables_from_pil(Image.open(io.BytesIO(data)))
                    quality = real(tables, "jpeg").quality
                    read = list(tables.subsampling) if tables.chroma is not None else None
                    for r, rule in rules.items():
                        guard.guard_for = rule
                        got = np.asarray(fr.restore(Image.open(io.BytesIO(data)), device="cpu", precision=args.precision))
                        gains[r].append(psnr(got, a) - psnr(decoded, a))
                    guard.guard_for = real
                print(f"{name:>12} {label:>8} {quality:3.0f} | "
                      + " | ".join(f"{np.mean(g):+6.3f} / {min(g):+6.3f}" for g in gains.values()), flush=True)
                out.append({"tables": name, "sampling": label, "quality": quality, "file_sampling": read,
                            **{r: {"mean": float(np.mean(g)), "worst": float(min(g)), "per_image": g}
                               for r, g in gains.items()}})
    finally:
        guard.guard_for = real
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": folder, "reduce": args.reduce, "cpu_flags": cpu_flags(), "names": names,
                       "results": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
