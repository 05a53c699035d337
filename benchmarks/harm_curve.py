"""Gain (or harm) of restoration against JPEG quality, raw network vs the do-no-harm guard.

    python -m benchmarks.harm_curve                                # Kodak24, shipped jpeg model
    python -m benchmarks.harm_curve --qualities 10 50 90 --limit 4 # quicker
    python -m benchmarks.harm_curve --data DIR --strengths         # fixed strengths (how the
                                                                   # guard's schedule was chosen)
    python -m benchmarks.harm_curve --plot docs/harm_curve.png --json harm.json
    python -m benchmarks.harm_curve --codec hevc --model hevc       # HEIF: raw vs guarded (QP)
    python -m benchmarks.harm_curve --exposure 0.05                 # dark photos (x 0.05 first)
    python -m benchmarks.harm_curve --sharpen 1:150                 # sharpened photos (unsharp mask first)
    python -m benchmarks.harm_curve --first 94 --qualities 90 94    # re-saved JPEGs (q94, then q90 / q94)

For each JPEG quality (Pillow, ``--subsampling``), per image: PSNR(original, decoded) and the
change in RGB PSNR after

* ``raw``: the network's output as is (``restore --no-guard``);
* ``guarded``: ``fastreshuffle restore`` on the JPEG file (strength from the file's tables +
  projection onto its quantisation intervals);
* ``blind``: ``fastreshuffle.restore`` on the decoded pixels as an array (JPEG detected in the
  pixels, no file), and the same on a crop off the 8x8 grid (``--crop``, default 3,5);

mean and worst image.  Then what each does to the never-compressed originals (PSNR of the output
against the input; "inf" = unchanged), and the guarded restore's time per megapixel.
``--first Q``: a re-saved JPEG -- each photo coded as a JPEG of quality Q (``--subsampling``) first,
its decoded pixels then coded at each quality; the gains are against the photo (``--against
photo``, what a user whose photo was re-saved gets) or against the first decode (``--against
first``: what a benchmark whose "originals" are decoded JPEGs measures, the network's correction of
the first coding counted as harm); no never-compressed or timing line.
``--strengths`` instead prints, per quality, the guarded result at fixed strengths 1 / 0.75 /
0.5 / 0.25 (each then projected): the guard's schedule takes, at each breakpoint, the strength
with the best worst-image gain on CBSD432 photos.  Exit 1 if a restore fails.

``--codec hevc`` (with ``--model hevc``): per HEVC quality (pillow-heif/x265, 4:2:0), ``raw`` and
``guarded`` -- what ``fastreshuffle restore`` does with the HEIF file: the strength of the QP read
from it (:func:`fastreshuffle.inference.guard.hevc_guarded`), by the network of its QP's band
(``hevc-low`` from QP ``loading.HEVC_LOW_MIN_QP`` for the shipped ``hevc``) -- and the mean QP read.  ``raw`` is the
model asked for, as ``--no-guard``.  Then the never-compressed originals given as pixels, which
have no QP: PSNR of the network's output against its input, and the guarded restore's time per
megapixel of a HEIF file of quality 15.  With ``--strengths``: per quality,
the raw output blended at fixed strengths 1 / 0.75 / 0.5 / 0.25 (how the QP schedule of
:mod:`fastreshuffle.inference.guard` was chosen).

``--codec webp`` (with ``--model webp``): the same per WebP quality (Pillow/libwebp, method 4),
the guard being the share of the file's quantiser index (:func:`fastreshuffle.inference.guard.webp_guarded`).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from typing import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import SUBSAMPLING, cpu_flags
from fastreshuffle.metrics import psnr as _psnr

DEFAULT_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95)
DEFAULT_HEVC_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80)
DEFAULT_WEBP_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100)


def _sharpening(text):
    """``"R:P"`` -> (radius R > 0, percent P > 0), or None."""
    if text is None:
        return None
    r, sep, pc = str(text).partition(":")
    try:
        radius, percent = float(r), int(pc)
    except ValueError:
        raise ValueError(f"--sharpen takes R:P (radius, percent), e.g. 1:150, got {text!r}") from None
    if not sep or not math.isfinite(radius) or radius <= 0 or percent <= 0:
        raise ValueError(f"--sharpen takes R:P with R > 0 and P > 0, e.g. 1:150, got {text!r}")
    return radius, percent


def _encode(a, q, sub):
    from fastreshuffle.io.codecs import jpeg_file
    data = jpeg_file(a, q, SUBSAMPLING[sub])
    im = Image.open(io.BytesIO(data))
    im.load()
    return im, np.asarray(im.convert("RGB")), len(data)


def _stats(v, names=None):
    out = {"mean": float(np.mean(v)), "worst": float(np.min(v))}
    if names is not None:   # which image is the worst, and every image's value
        out["worst_image"] = names[int(np.argmin(v))]
        out["per_image"] = dict(zip(names, map(float, v)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="folder of photos (default: the eval set, Kodak24)")
    ap.add_argument("--model", default="jpeg")
    ap.add_argument("--codec", default="jpeg", choices=("jpeg", "hevc", "webp"))
    ap.add_argument("--qualities", type=int, nargs="+", default=None,
                    help=f"[JPEG: {' '.join(map(str, DEFAULT_QUALITIES))}; HEVC: "
                         f"{' '.join(map(str, DEFAULT_HEVC_QUALITIES))}]")
    ap.add_argument("--subsampling", type=int, default=2, choices=(0, 1, 2), help="Pillow: 2 = 4:2:0")
    ap.add_argument("--crop", default="3,5", help="off-grid crop offset dy,dx for the blind check")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--every", type=int, default=1, help="take every N-th image")
    ap.add_argument("--reduce", type=int, default=1,
                    help="shrink each photo N times (mean of N x N pixels) first: originals that are "
                         "JPEGs themselves (CBSD432: q95) lose their own coding noise")
    ap.add_argument("--exposure", type=float, default=1.0,
                    help="darken each photo first, every value times F (0 < F < 1; training.data.expose, "
                         "as train --mix dark): an underexposed or night photo")
    ap.add_argument("--bright", action="store_true", help="with --exposure: move the photos towards white instead")
    ap.add_argument("--sharpen", default=None, metavar="R:P",
                    help="sharpen each photo first (after --reduce / --exposure): Pillow's UnsharpMask of "
                         "radius R and percent P, threshold 0, as an editor or a phone's pipeline does; "
                         "the sharpened photo is the original measured against.  With --first: the first "
                         "decode is sharpened (a camera's JPEG edited, then saved again; use --against first)")
    ap.add_argument("--first", type=int, default=None,
                    help="code each photo as a JPEG of this quality first (a re-saved JPEG)")
    ap.add_argument("--against", default="photo", choices=("photo", "first"),
                    help="with --first: measure against the photo, or against its first decode")
    ap.add_argument("--strengths", action="store_true", help="fixed strengths instead of the schedule")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG plot of mean gain vs quality")
    args = ap.parse_args(argv)
    if args.reduce < 1:
        ap.error(f"--reduce must be 1 (photos as they are) or more, got {args.reduce}")
    if not 0 < args.exposure <= 1:
        ap.error(f"--exposure must be in (0, 1] (1: photos as they are), got {args.exposure}")
    if args.first is not None and not (1 <= args.first <= 100 and args.codec == "jpeg"):
        ap.error(f"--first takes a JPEG quality in 1..100 (JPEG only), got {args.first}")
    if args.against != "photo" and args.first is None:
        ap.error("--against first needs --first Q")
    if args.bright and args.exposure == 1:
        ap.error("--bright needs --exposure F < 1")
    try:
        args.sharpen = _sharpening(args.sharpen)
    except ValueError as e:
        ap.error(str(e))
    if args.sharpen is not None and args.first is not None and args.against != "first":
        ap.error("--sharpen with --first sharpens the first decode: measure against it (--against first)")

    import torch

    import fastreshuffle as fr
    from fastreshuffle.inference.evaluate import load_eval_images
    from fastreshuffle.inference.guard import Guard, apply_guard, guard_for
    from fastreshuffle.inference.loading import get_model
    from fastreshuffle.inference.tiling import restore_uint8
    from fastreshuffle.io.datasets import eval_dir
    from fastreshuffle.io.codecs import jpeg_file
    from fastreshuffle.io.jpeg_tables import tables_from_pil
    from fastreshuffle.training.data import sharpen

    folder = Path(args.data) if args.data else eval_dir()
    images, names, _ = load_eval_images(folder)
    images = images[::args.every][:args.limit]
    names = list(names)[::args.every][:args.limit]
    if args.reduce > 1:
        from fastreshuffle.training.data import shrink
        images = [shrink(a, args.reduce) for a in images]
    if args.exposure < 1:
        from fastreshuffle.training.data import expose
        images = [expose(a, args.exposure, bright=args.bright) for a in images]
    if args.sharpen is not None and args.first is None:
        images = [sharpen(a, *args.sharpen) for a in images]
    net = get_model(args.model, "cpu")
    dy, dx = (int(v) for v in args.crop.split(","))

    def raw(x):
        return restore_uint8(net, x, tile=0)

    if args.codec in ("hevc", "webp"):
        return _coded_file_curve(args, folder, images, names, raw)
    args.qualities = args.qualities or list(DEFAULT_QUALITIES)
    sources = images          # what is coded at each quality; ``images`` are what it is measured against
    if args.first is not None:
        sources = [_encode(a, args.first, args.subsampling)[1] for a in images]
        if args.sharpen is not None:   # a camera's JPEG sharpened in an editor, then saved again
            sources = [sharpen(a, *args.sharpen) for a in sources]
        if args.against == "first":
            images = sources

    print(f"# harm curve: {_data_label(folder, images, args.reduce, args.exposure, args.bright, args.sharpen)}, model {args.model}, JPEG subsampling "
          f"{ {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}[args.subsampling]}"
          + (f"; re-saved: coded at q{args.first} first, measured against the "
             + ("photo" if args.against == "photo" else "first decode") if args.first is not None else ""))
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; CPU flags: {cpu_flags()}")
    rows = []
    for q in args.qualities:
        rec = {"quality": q, "bpp": [], "codec": [], "raw": [], "guarded": [], "blind": [], "blind_crop": [],
               "raw_crop": []}
        strengths = {s: [] for s in (1.0, 0.75, 0.5, 0.25)} if args.strengths else {}
        for a, src in zip(images, sources):
            im, dec, nbytes = _encode(src, q, args.subsampling)
            base = _psnr(a, dec)
            rec["bpp"].append(8 * nbytes / (a.shape[0] * a.shape[1]))
            rec["codec"].append(base)
            out_raw = raw(dec)
            rec["raw"].append(_psnr(a, out_raw) - base)
            if args.strengths:
                g = guard_for(tables_from_pil(im))
                for s in strengths:
                    strengths[s].append(_psnr(a, apply_guard(dec, out_raw, Guard(g.tables, g.quality, s))) - base)
                continue
            rec["guarded"].append(_psnr(a, np.asarray(fr.restore(im, args.model, device="cpu"))) - base)
            rec["blind"].append(_psnr(a, fr.restore(dec, args.model, device="cpu")) - base)
            ca, cd = a[dy:, dx:], np.ascontiguousarray(dec[dy:, dx:])
            cbase = _psnr(ca, cd)
            rec["blind_crop"].append(_psnr(ca, fr.restore(cd, args.model, device="cpu")) - cbase)
            rec["raw_crop"].append(_psnr(ca, raw(cd)) - cbase)
        if args.strengths:
            _say_strengths(q, strengths, rows, names)
            continue
        row = {"quality": q, "bpp": float(np.mean(rec["bpp"])), "codec_psnr_mean": float(np.mean(rec["codec"])),
               "codec_psnr": dict(zip(names, map(float, rec["codec"])))}
        row.update({k: _stats(rec[k], names) for k in ("raw", "guarded", "blind", "blind_crop", "raw_crop")})
        rows.append(row)
        if len(rows) == 1:
            print(f"{'q':>4} {'bpp':>6} {'codec':>6} | {'raw':>15} | {'guarded (file)':>15} | "
                  f"{'blind (array)':>15} | {'crop raw':>15} | {'crop blind':>15}   gains in dB: mean/worst")
        print(f"{q:4d} {row['bpp']:6.3f} {row['codec_psnr_mean']:6.2f} | "
              + " | ".join(f"{row[k]['mean']:+7.3f}/{row[k]['worst']:+7.3f}"
                           for k in ("raw", "guarded", "blind", "raw_crop", "blind_crop")), flush=True)
        _say_harmed(q, row, ("guarded", "blind", "blind_crop"))
    doc = {**_doc_head(args, folder, images), "subsampling": args.subsampling, "cpu_flags": cpu_flags(), "rows": rows}
    if args.first is not None:
        doc.update(first=args.first, against=args.against)
    elif not args.strengths:
        never_raw = [_psnr(a, raw(a)) for a in images]
        never_guarded = [_psnr(a, fr.restore(a, args.model, device="cpu")) for a in images]
        print(f"never compressed (output vs input PSNR): raw mean {np.mean(never_raw):.2f} dB, worst "
              f"{np.min(never_raw):.2f} dB; guarded worst {np.min(never_guarded):.2f} dB "
              f"({sum(np.isinf(never_guarded))}/{len(images)} unchanged)")
        doc["never_compressed"] = {"raw": _stats(never_raw), "guarded_worst": float(np.min(never_guarded)),
                                   "guarded_unchanged": int(sum(np.isinf(never_guarded)))}
        doc["seconds_per_megapixel"] = _seconds_per_megapixel(
            images, args.model, "JPEG q30", lambda a: jpeg_file(a, 30, SUBSAMPLING[args.subsampling]))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.plot and not args.strengths:
        _plot(args.plot, rows, (("raw", "network as is (--no-guard)"), ("guarded", "restore (guarded)"),
                                ("blind_crop", "decoded pixels, off-grid crop")),
              "JPEG quality (Pillow, 4:2:0)", f"{folder.name}: gain vs JPEG quality, model {args.model}")
    return 0


def _seconds_per_megapixel(images, model, label: str, data: Callable[[np.ndarray], bytes]) -> float:
    """Median time of 3 guarded restores (after a warm-up) of the file ``data(a)`` coded from the
    first image tiled to about 1 megapixel, each opened afresh as restore gets it; in seconds per
    megapixel."""
    import torch

    import fastreshuffle as fr
    big = np.tile(images[0], (2, 2, 1))[:1024, :1024]
    coded = data(big)
    times = []
    for _ in range(4):   # the first is a warm-up
        im = Image.open(io.BytesIO(coded))
        t0 = time.perf_counter()
        fr.restore(im, model, device="cpu")
        times.append(time.perf_counter() - t0)
    per_mp = float(np.median(times[1:])) / (big.shape[0] * big.shape[1] / 1e6)
    print(f"guarded restore, {label} {big.shape[1]}x{big.shape[0]}: {per_mp:.2f} s per megapixel "
          f"(median of 3, {torch.get_num_threads()} threads)", flush=True)
    return per_mp


def _doc_head(args, folder, images) -> dict:
    """What a JSON record says of the photos and the model."""
    return {"data": str(folder), "images": len(images), "reduce": args.reduce, "exposure": args.exposure,
            "bright": args.bright, "sharpen": args.sharpen, "model": args.model}


def _data_label(folder, images, reduce: int, exposure: float = 1.0, bright: bool = False, sharpened=None) -> str:
    shown = ([f"shrunk {reduce}x"] if reduce > 1 else []) + (
        [f"{'towards white' if bright else 'darkened'}: exposure x {exposure:g}"] if exposure < 1 else []) + (
        [f"sharpened: unsharp mask radius {sharpened[0]:g}, {sharpened[1]}%"] if sharpened else [])
    return f"{folder} ({len(images)} images" + "".join(", " + t for t in shown) + ")"


def _say_strengths(q, strengths, rows, names=None) -> None:
    """Print and keep (in ``rows``, with each image's gain when ``names`` are given) one quality's
    mean / worst gain at each fixed strength."""
    print(f"q{q:3d}  " + "  ".join(f"s={s:.2f} {np.mean(v):+.3f}/{np.min(v):+.3f}"
                                  for s, v in strengths.items()) + "   (mean/worst dB)", flush=True)
    rows.append({"quality": q, **{f"strength_{s}": _stats(v, names) for s, v in strengths.items()}})


def _say_harmed(q, row, keys) -> None:
    """A line naming the worst image of each of ``keys`` that made some image worse, if any."""
    harmed = [f"{k} {row[k]['worst_image']} {row[k]['worst']:+.3f}" for k in keys if row[k]["worst"] < 0]
    if harmed:
        print(f"     worse at q{q}: " + "; ".join(harmed), flush=True)


def _plot(path, rows, series, xlabel: str, title: str) -> None:
    """Mean gain per quality of each ``(key, label)`` series, the guarded worst image dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    qs = [r["quality"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=120)
    for k, lab in series:
        ax.plot(qs, [r[k]["mean"] for r in rows], "o-", label=lab)
    ax.plot(qs, [r["guarded"]["worst"] for r in rows], ":", color="C1", label="restore, worst image")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(max(-5, min(r["raw"]["mean"] for r in rows) - 0.3), None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR change (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def _coded_file_curve(args, folder, images, names, raw) -> int:
    """The HEVC (or WebP) curve: raw network vs the HEIF guard (the lossy WebP guard), per quality."""
    import torch

    from fastreshuffle.inference.guard import blend, hevc_guarded, webp_guarded
    from fastreshuffle.inference.loading import Bands, get_model
    from fastreshuffle.inference.tiling import restore_uint8
    from fastreshuffle.io import codecs

    webp = args.codec == "webp"
    bands = Bands(args.model, lambda m: get_model(m, "cpu"))   # the network of the file's QP, as restore picks it

    def for_qp(qp):
        net = bands.net(qp=qp)
        return lambda x: restore_uint8(net, x, tile=0)

    what = "WebP (Pillow/libwebp, method 4)" if webp else "HEVC (pillow-heif/x265, 4:2:0)"
    key = "index" if webp else "QP"
    print(f"# harm curve: {_data_label(folder, images, args.reduce, args.exposure, args.bright, args.sharpen)}, model {args.model}, {what}")
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; CPU flags: {cpu_flags()}")
    if not args.strengths:
        print(f"{'q':>4} {key:>5} {'bpp':>6} {'codec':>6} | {'raw':>15} | {'guarded (file)':>15}   gains in dB: mean/worst")
    rows = []
    for q in args.qualities or (DEFAULT_WEBP_QUALITIES if webp else DEFAULT_HEVC_QUALITIES):
        rec = {"bpp": [], "codec": [], "raw": [], "guarded": [], "qp": []}
        strengths = {st: [] for st in (1.0, 0.75, 0.5, 0.25)} if args.strengths else {}
        for a in images:
            c = codecs.webp(a, q) if webp else codecs.hevc(a, q)
            k = c.webp_index if webp else c.qp
            base = _psnr(a, c.image)
            rec["bpp"].append(c.bpp)
            rec["codec"].append(base)
            rec["qp"].append(np.nan if k is None else k)
            out = raw(c.image)
            rec["raw"].append(_psnr(a, out) - base)
            for st in strengths:
                strengths[st].append(_psnr(a, blend(c.image, out, st)) - base)
            if args.strengths:
                continue
            if webp:
                rec["guarded"].append(_psnr(a, webp_guarded(lambda x: out, c.image, k)[0]) - base)
                continue
            same = bands.name(qp=c.qp) == bands.model   # no band of its own: reuse the raw output
            rec["guarded"].append(_psnr(a, hevc_guarded(lambda x: out, c.image, c.nbytes, c.qp,
                                                        None if same else for_qp)[0]) - base)
        if args.strengths:
            _say_strengths(q, strengths, rows, names)
            continue
        row = {"quality": q, "qp_mean": float(np.mean(rec["qp"])), "bpp": float(np.mean(rec["bpp"])),
               "codec_psnr_mean": float(np.mean(rec["codec"])),
               **{k: _stats(rec[k], names) for k in ("raw", "guarded")}}
        rows.append(row)
        print(f"{q:4d} {row['qp_mean']:5.1f} {row['bpp']:6.3f} {row['codec_psnr_mean']:6.2f} | "
              + " | ".join(f"{row[k]['mean']:+7.3f}/{row[k]['worst']:+7.3f}" for k in ("raw", "guarded")), flush=True)
        _say_harmed(q, row, ("guarded",))
    if args.strengths:
        if args.json:
            Path(args.json).write_text(json.dumps({**_doc_head(args, folder, images), "codec": args.codec,
                                                   "cpu_flags": cpu_flags(), "rows": rows}, indent=1))
        return 0
    # A never-compressed photo given as pixels (a PNG, an array): no file, so no quantiser to guard
    # by -- what ``restore --model hevc`` (or ``webp``) does to it is the raw network's full correction.
    never = [_psnr(a, raw(a)) for a in images]
    print(f"never compressed, as pixels (no {key}: the full correction): output vs input PSNR mean "
          f"{np.mean(never):.2f} dB, worst {np.min(never):.2f} dB")
    if webp:
        per_mp = _seconds_per_megapixel(images, args.model, "WebP quality 30", lambda a: codecs.webp_file(a, 30))
    else:
        import pillow_heif
        pillow_heif.register_heif_opener()   # the timed files are opened with Pillow, as restore gets them
        per_mp = _seconds_per_megapixel(images, args.model, "HEIF quality 15", lambda a: codecs.hevc_file(a, 15))
    if args.json:
        Path(args.json).write_text(json.dumps({**_doc_head(args, folder, images), "codec": args.codec,
                                               "cpu_flags": cpu_flags(), "rows": rows,
                                               "never_compressed_pixels": _stats(never, names),
                                               "seconds_per_megapixel": per_mp}, indent=1))
    if args.plot:
        _plot(args.plot, rows, (("raw", "network as is (--no-guard)"),
                                ("guarded", f"restore (guarded by the file's {key})")),
              what.replace("(", "quality (", 1) if not webp else "WebP quality (Pillow/libwebp)",
              f"{folder.name}: gain vs {'WebP' if webp else 'HEVC'} quality, model {args.model}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
