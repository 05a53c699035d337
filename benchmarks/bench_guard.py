"""How long the JPEG guard takes beside the network, on a phone-sized JPEG.

The guard of a JPEG file (``inference/guard.py``: blend, projection onto the file's quantisation
intervals, uniform areas kept) runs on the CPU in float64 numpy after the network.  This script
times, on one photo coded as a JPEG file (Pillow, 4:2:0), side by side in one process (variants
taking turns, medians):

* ``reference``: :func:`reference_project`, the projection written plainly on the whole image
  (the chroma recovered by Landweber steps on full-size planes, as up to 2026-12-05);
* ``project, 1 thread`` and ``project, N threads``: :func:`fastreshuffle.inference.jpeg_consistency.project`
  in strips (N = :func:`fastreshuffle.inference.guard.strip_workers`, torch's thread count up to 4);
* ``keep_uniform``: the uniform / rounded-plane rule, 1 and N threads;
* with ``--network``, ``fastreshuffle.restore()`` of the file with the guard off (the network of the
  file's quality band, restore's precision) and on (what a user waits for).

The outputs are compared first: every variant of the projection must give the reference's pixels
(exit code 1 if not).

    python -m benchmarks.bench_guard                       # 4032 x 3024 (12 MP), JPEG q90
    python -m benchmarks.bench_guard --size 1920x1080 --quality 50 --network

``--restore-only`` times nothing but ``restore()`` with the guard off and on, and so runs against
any version of the package: from another checkout's root (built),
``PYTHONPATH=. python /path/to/benchmarks/bench_guard.py --restore-only``.
"""
from __future__ import annotations

import argparse
import io
import math
import sys

import numpy as np


def fancy_up(p: np.ndarray, f: int, axis: int) -> np.ndarray:
    """libjpeg's "fancy" 2x upsampling along one axis (each sample -> 3/4 of itself + 1/4 of its
    previous / next one, edges replicated), on full-size planes; ``f`` 1: ``p`` itself."""
    if f == 1:
        return p
    m = p.shape[axis]
    prev = np.take(p, np.r_[0, np.arange(m - 1)], axis=axis)
    nxt = np.take(p, np.r_[np.arange(1, m), m - 1], axis=axis)
    shape = list(p.shape)
    shape[axis] = 2 * m
    return np.stack([0.75 * p + 0.25 * prev, 0.75 * p + 0.25 * nxt], axis=axis + 1).reshape(shape)


def reference_project(decoded: np.ndarray, restored: np.ndarray, tables, steps: int = 8) -> np.ndarray:
    """The projection of ``restored`` onto the JPEG intervals read from ``decoded`` (both H x W x 3
    uint8), written plainly on the whole image, independently of the package's code: JFIF YCbCr,
    8x8 block DCT, luma intervals from the decoded luma, chroma intervals from the downsampled
    chroma planes recovered by ``steps`` Landweber steps through libjpeg's fancy upsampling on the
    full-size planes, the correction back to RGB, rounded and clipped.  -> uint8."""
    n = 8
    dct = np.array([[math.sqrt((1 if u == 0 else 2) / n) * math.cos((2 * x + 1) * u * math.pi / (2 * n))
                     for x in range(n)] for u in range(n)])
    r, g, b = (decoded[..., i].astype(np.float64) for i in range(3))
    ro, go, bo = (restored[..., i].astype(np.float64) for i in range(3))
    ref = [0.299 * r + 0.587 * g + 0.114 * b, -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
           0.5 * r - 0.418688 * g - 0.081312 * b + 128]
    out = [0.299 * ro + 0.587 * go + 0.114 * bo, -0.168736 * ro - 0.331264 * go + 0.5 * bo + 128,
           0.5 * ro - 0.418688 * go - 0.081312 * bo + 128]
    h, w = decoded.shape[:2]
    fv, fw = tables.subsampling
    mh, mw = n * fv, n * fw

    def pad(p):
        return np.pad(p, ((0, -h % mh), (0, -w % mw)), mode="edge")

    def block_dct(p):
        hh, ww = p.shape
        return dct @ (p - 128).reshape(hh // n, n, ww // n, n).transpose(0, 2, 1, 3) @ dct.T

    def correction(o, rf, q):
        k = np.round(block_dct(rf) / q)
        c = block_dct(o)
        d = dct.T @ (np.clip(c, (k - 0.5) * q, (k + 0.5) * q) - c) @ dct
        return d.transpose(0, 2, 1, 3).reshape(o.shape)

    def down(p):
        hh, ww = p.shape
        return p.reshape(hh // fv, fv, ww // fw, fw).mean(axis=(1, 3))

    dy = correction(pad(out[0]), pad(ref[0]), tables.luma)[:h, :w]
    dc = [np.zeros_like(dy), np.zeros_like(dy)]
    if tables.chroma is not None:
        for i, q in zip((1, 2), tables.chroma):
            full = pad(ref[i])
            x = down(full)
            for _ in range(steps):
                x = x + down(full - fancy_up(fancy_up(x, fv, 0), fw, 1))
            d = correction(down(pad(out[i])), x, q)
            dc[i - 1] = np.repeat(np.repeat(d, fv, axis=0), fw, axis=1)[:h, :w]
    rgb = np.stack([dy + 1.402 * dc[1], dy - 0.344136 * dc[0] - 0.714136 * dc[1], dy + 1.772 * dc[0]], axis=-1)
    return np.clip(np.round(restored.astype(np.float64) + rgb), 0, 255).astype(np.uint8)


def phone_jpeg(width: int, height: int, quality: int, subsampling: int = 2):
    """scikit-image's astronaut scaled to width x height (bicubic), coded as a JPEG file ->
    (the open Pillow image, its decoded pixels)."""
    from PIL import Image
    from skimage import data
    big = Image.fromarray(np.ascontiguousarray(data.astronaut()[..., :3])).resize((width, height), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    im = Image.open(io.BytesIO(buf.getvalue()))
    return im, np.asarray(im.convert("RGB"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4032x3024", help="W x H of the photo [4032x3024]")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality [90]")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the variants taking turns [3]")
    ap.add_argument("--network", action="store_true", help="also time restore() of the file, guard off and on")
    ap.add_argument("--restore-only", action="store_true",
                    help="only restore(), guard off and on (works with any version of the package)")
    args = ap.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {args.size!r}: give W x H, e.g. 4032x3024")
    import time

    import torch
    if args.restore_only:
        return _restore_only(width, height, args.quality, args.rounds)

    from fastreshuffle.inference import guard
    from fastreshuffle.inference.jpeg_consistency import project
    from fastreshuffle.io.jpeg_tables import tables_from_pil

    from .common import cpu_flags, machine_line, summarize

    im, dec = phone_jpeg(width, height, args.quality)
    tables = tables_from_pil(im)
    g = guard.guard_for(tables, "jpeg")   # the strength restore() gives it (its band's)
    # A stand-in for the network's output: the decoded photo with a correction of up to 4 levels.
    rng = np.random.default_rng(0)
    restored = np.clip(dec.astype(np.int16) + rng.integers(-4, 5, dec.shape), 0, 255).astype(np.uint8)
    blended = guard.blend(dec, restored, g.strength)
    n = guard.strip_workers()
    print(f"{machine_line()}\nCPU flags: {cpu_flags()}")
    print(f"photo {width}x{height}, JPEG q{args.quality} 4:2:0 (strength {g.strength:g}), guard threads {n}")

    variants = {"reference (whole image)": lambda: reference_project(dec, blended, tables),
                "project, 1 thread": lambda: project(dec, blended, tables, workers=1),
                f"project, {n} threads": lambda: project(dec, blended, tables, workers=n),
                "keep_uniform, 1 thread": lambda: guard.keep_uniform(dec, blended.copy(), planar=True, workers=1),
                f"keep_uniform, {n} threads": lambda: guard.keep_uniform(dec, blended.copy(), planar=True, workers=n)}
    if args.network:
        import fastreshuffle
        variants["restore(), guard off"] = lambda: fastreshuffle.restore(im, guard=False)
        variants["restore()"] = lambda: fastreshuffle.restore(im)

    want = variants["reference (whole image)"]()
    bad = [k for k in variants if k.startswith("project") and not np.array_equal(variants[k](), want)]
    if bad:
        print(f"FAILED: {', '.join(bad)} differ from the reference")
        return 1
    ku = variants["keep_uniform, 1 thread"]()
    if not np.array_equal(variants[f"keep_uniform, {n} threads"](), ku):
        print(f"FAILED: keep_uniform on {n} threads differs from 1 thread")
        return 1
    print(f"keep_uniform keeps {100 * (ku != blended).any(axis=2).mean():.1f}% of the pixels as decoded")
    for k in variants:    # warm-up (the projection's were the checks above)
        if not k.startswith(("project", "keep_uniform", "reference")):
            variants[k]()
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for k, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    base = summarize(times["reference (whole image)"])["median"]
    print(f"{'variant':32s} {'median':>9s} {'p20':>9s} {'p80':>9s}  vs reference")
    for k, ts in times.items():
        s = summarize(ts)
        print(f"{k:32s} {s['median']:8.3f}s {s['p20']:8.3f}s {s['p80']:8.3f}s  {base / s['median']:.2f}x")
    return 0


def _restore_only(width: int, height: int, quality: int, rounds: int) -> int:
    import os
    import platform
    import statistics
    import time

    import torch

    import fastreshuffle
    im, _ = phone_jpeg(width, height, quality)
    print(f"fastreshuffle from {os.path.dirname(fastreshuffle.__file__)}; torch {torch.__version__}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"photo {width}x{height}, JPEG q{quality} 4:2:0")
    times = {False: [], True: []}
    for g in times:                     # warm-up: the model loaded, the kernels' weights packed
        fastreshuffle.restore(im, guard=g)
    for _ in range(rounds):
        for g in times:
            t0 = time.perf_counter()
            fastreshuffle.restore(im, guard=g)
            times[g].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"restore(), guard off {off:.3f} s; restore() {on:.3f} s (medians of {rounds}): the guard adds {on - off:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
