"""``fastreshuffle eval``: codec and restored PSNR / SSIM / PSNR-B / bpp on a folder of images
(the computation is :func:`fastreshuffle.inference.evaluate.evaluate`; JSON fields described there)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import List

from ..backends import PRECISIONS
from ..errors import UserError
from ._common import (add_device_argument, add_threads_argument, apply_threads,
                      check_output_arg, device_from_args, printable)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder of test images (default: <data-root>/eval/Kodak24)")
    p.add_argument("--data-root", help="data root (default: $FASTRESHUFFLE_DATA or ../shared/data)")
    p.add_argument("--codec", default="jpeg", help="codec spec: jpeg, jpeg:444, hevc, hevc:10bit, webp [jpeg]")
    p.add_argument("--quality", type=int, nargs="+", default=None,
                   help="one or more qualities [10] (HEVC: libheif qualities; --qp instead gives QPs)")
    p.add_argument("--qp", type=int, nargs="+", default=None, help="HEVC: fixed QPs instead of --quality")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--weights", help="model weights (safetensors) to restore with")
    m.add_argument("--model", help="shipped model name (jpeg, hevc, hevc-paper, ...) or weights file")
    m.add_argument("--no-model", action="store_true", help="codec only (the default without --weights/--model)")
    f = p.add_mutually_exclusive_group()
    f.add_argument("--fast", dest="fast", action="store_true", default=None,
                   help="use FastReshuffleNet (default: when available)")
    f.add_argument("--no-fast", dest="fast", action="store_false", help="use the reference ReshuffleNet")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="arithmetic of the network (default: fp32, the reference figures; auto = what "
                        "restore picks: bf16 on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="restore with the x8 flip/rotation self-ensemble (8x slower)")
    p.add_argument("--recursive", "-r", action="store_true", help="also the images in --data's sub-folders")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="evaluate the raw network: without the strength from the JPEG tables, the HEIF QP or the WebP "
                        "quantiser, "
                        "the consistency with the quantisation and the pixel search for JPEG compression that "
                        "restore applies")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--plot", help="write a rate-distortion plot (PNG) here (one point per quality: give several for a curve)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json / --plot files")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images instead of stopping")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--no-per-image", dest="per_image", action="store_false", help="leave per_image out of the JSON")
    add_device_argument(p)
    add_threads_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _lossless_webp(path: Path) -> bool:
    """Whether ``path`` is a lossless WebP file (a never-compressed original, though ``.webp``)."""
    if path.suffix.lower() != ".webp":
        return False
    from ..io.webp_quant import webp_lossless
    try:
        with open(path, "rb") as f:
            return webp_lossless(f.read())
    except OSError:
        return False


def _weights_files(args) -> List[Path]:
    """The weights files ``--weights`` / ``--model`` reads: a shipped model's file too, and those of
    its bands where the guard may pick them."""
    from ..errors import WeightsError
    from ..inference.loading import bands_of, resolve_weights
    if args.no_model or not (args.weights or args.model):
        return []
    names = [args.weights or args.model]
    if not args.weights and args.guard:
        names += list(bands_of(args.model))
    found = []
    for name in names:
        try:
            found.append(resolve_weights(name))
        except (WeightsError, OSError, ValueError):   # (said when the model is loaded)
            pass
    return found


def _resolve_model(args, device):
    """-> (model or None, its quality bands or None, description dict), through the package's
    model factory."""
    from ..errors import WeightsError
    from ..inference.loading import Bands, bands_of, load_model

    if args.no_model or (not args.weights and not args.model):
        return None, None, None
    if args.weights and not Path(args.weights).is_file():
        raise UserError(f"weights file not found: {args.weights}")
    try:
        model = load_model(args.weights or args.model, device, fast=args.fast, precision=args.precision)
    except WeightsError as e:
        raise UserError(str(e) if args.weights else f"--model {args.model}: {e}") from None
    except ValueError as e:   # resolve_precision: fp16 on CPU
        raise UserError(f"--precision: {e}") from None
    desc = {"weights": str(args.weights)} if args.weights else {"model": args.model}
    cfg = model.config
    desc.update({"class": type(model).__name__, "fast": type(model).__name__ == "FastReshuffleNet",
                 "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                 "config": cfg.to_dict()})
    bands = None
    if not args.weights and args.guard:   # (the bands are picked by the guard: unguarded, the named network runs)
        bands = Bands(args.model, lambda m: model if m == args.model else
                      load_model(m, device, fast=args.fast, precision=args.precision))
        found = bands_of(args.model)
        if found:
            desc["bands"] = found
    return model, bands, desc


def run(args) -> int:
    from ..errors import CodecError
    from ..inference.evaluate import (METRIC_NOTES, decoded_jpegs, evaluate, json_ready, load_eval_images, plot_rd,
                                      print_table)
    from ..io.codecs import check_encoder, check_qp, fixed_qp, parse_spec
    from ..io.datasets import eval_dir

    warn = lambda m: print(f"warning: {m}", file=sys.stderr, flush=True)  # noqa: E731
    for opt, value in (("--model", args.model), ("--weights", args.weights), ("--data", args.data),
                       ("--data-root", args.data_root)):
        if value is not None and not value.strip():   # (an unset shell variable: it had been taken as not given)
            raise UserError(f"{opt} names nothing (an empty name): give one, or leave {opt} out")
    try:
        spec = parse_spec(args.codec)
    except CodecError as e:
        raise UserError(str(e)) from None
    if fixed_qp(spec) is not None:   # "hevc:qp=45" is --qp 45: labelled by its QP, not by a quality
        if args.qp or args.quality or spec.quality is not None:
            raise UserError(f"--codec {args.codec} fixes the QP: give no quality and no --qp beside it")
        args.qp = [fixed_qp(spec)]
        spec = dataclasses.replace(spec, options=tuple(o for o in spec.options if o[0] != "qp"))
    if args.qp:
        if spec.name != "hevc":
            raise UserError("--qp is only for --codec hevc")
        if args.quality:
            raise UserError("give either --quality or --qp, not both")
        try:
            for q in args.qp:
                check_qp(q)
        except CodecError as e:
            raise UserError(str(e)) from None
        settings = [{"qp": q} for q in dict.fromkeys(args.qp)]      # each once, in the order given
    else:
        if args.quality and spec.quality is not None and args.quality != [spec.quality]:
            raise UserError(f"--codec {args.codec} gives the quality {spec.quality} and --quality gives "
                            f"{' '.join(map(str, args.quality))}: give it once")
        quals = args.quality or ([spec.quality] if spec.quality is not None else [10])
        try:
            for q in quals:
                parse_spec(spec, q)
        except CodecError as e:
            raise UserError(str(e)) from None
        settings = [{"quality": q} for q in dict.fromkeys(quals)]   # each once, in the order given
        spec = parse_spec(spec, quals[0])
    try:    # the encoder runs here (pillow-heif installed, x265 options it takes), before the images load
        check_encoder(spec, settings[0].get("quality"), f"--codec {args.codec}")
    except CodecError as e:
        raise UserError(str(e)) from None
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    for opt, path in (("--json", args.json), ("--plot", args.plot)):   # before the evaluation, not after
        if path is not None and not path.strip():
            raise UserError(f"{opt} names no file (an empty name): nothing would be written")
        if path:
            check_output_arg(opt, Path(path), args.overwrite)
    weights_files = _weights_files(args)
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if path and os.path.exists(path) and any(os.path.samefile(path, w) for w in weights_files):
            raise UserError(f"{opt} {path} is a weights file being evaluated: it would be replaced; name another "
                            "file")
    if args.json and args.plot and os.path.realpath(args.json) == os.path.realpath(args.plot):
        raise UserError(f"--json and --plot name the same file ({args.plot}); the plot would replace the results")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG: name it .png, got {args.plot}")
    if args.plot and len(settings) < 2:
        warn("--plot with a single quality draws a single point")
    apply_threads(args)
    device = device_from_args(args)
    folder = Path(args.data) if args.data else eval_dir(args.data_root)
    if (args.json or args.plot) and folder.is_dir():   # (--overwrite would let them replace an image)
        from ..io.images import list_images
        inputs = {os.path.realpath(p) for p in list_images(folder, recursive=True)}
        for opt, path in (("--json", args.json), ("--plot", args.plot)):
            if path and os.path.realpath(path) in inputs:
                raise UserError(f"{opt} {path} is one of the images in {folder}: it would be replaced; "
                                "name another file")
    images, names, bad = load_eval_images(folder, args.skip_bad, args.limit, warn, recursive=args.recursive)
    from ..io.images import LOSSY_EXTENSIONS
    lossy = [n for n in names if Path(n).suffix.lower() in LOSSY_EXTENSIONS and not _lossless_webp(folder / n)]
    if lossy:
        warn(f"{len(lossy)} of the {len(names)} images are in a lossy format ({', '.join(lossy[:3])}"
             f"{', ...' if len(lossy) > 3 else ''}): eval codes each image and measures against it, so it needs "
             "originals that were never compressed (PNG, TIFF); against a JPEG the figures are not those of "
             "restoring a photo (to restore your JPEGs: fastreshuffle restore)")
    kept = [(im, n) for im, n in zip(images, names) if n not in lossy]
    was_jpeg = decoded_jpegs([im for im, _ in kept], [n for _, n in kept])
    if was_jpeg:
        warn(f"{len(was_jpeg)} of the {len(names)} images hold a decoded JPEG in their pixels ({', '.join(was_jpeg[:3])}"
             f"{', ...' if len(was_jpeg) > 3 else ''}): the figures are measured against those artifacts (restoring "
             "removes them too, scored as a loss); use originals that were never compressed")
    model, bands, mdesc = _resolve_model(args, device)
    if model is None and not args.no_model:
        print("note: no --weights/--model given: codec only", file=sys.stderr)
    if model is not None and getattr(model, "codec", None) not in (None, spec.name):
        warn(f"the model was trained for {model.codec}, the images are coded with {spec.name}")
    if model is not None and not args.quiet:   # which networks made the figures (a name brings its bands)
        bands_said = "; ".join(f"{name} for {why}" for name, why in mdesc.get("bands", {}).items())
        print(f"note: {'--weights ' + args.weights if args.weights else 'model ' + args.model} ({mdesc['dtype']}, "
              + ("guarded as restore is" if args.guard else "unguarded: --no-guard") + ")"
              + (f"; its bands: {bands_said}" if bands_said else ""), file=sys.stderr)

    progress = None
    if not args.quiet and sys.stderr.isatty():
        def progress(msg):
            print(f"\r{msg}   ", end="", file=sys.stderr, flush=True)
    t0 = time.time()
    if "qp" in settings[0]:
        spec = dataclasses.replace(spec, quality=None)
    results = evaluate(images, names, spec, settings, model=model, device=device, progress=progress,
                       per_image=args.per_image, ensemble=args.self_ensemble, guard=args.guard, bands=bands)
    if mdesc is not None:
        mdesc["self_ensemble"] = bool(args.self_ensemble)
        mdesc["guard"] = bool(args.guard)
    if progress:
        print("", file=sys.stderr)
    print(f"{folder}: {len(images)} image{'s' if len(images) != 1 else ''}" + (f" ({len(bad)} unreadable skipped)" if bad else ""))
    print_table(results)
    doc = {"data": str(folder), "images": len(images), "skipped": bad, "model": mdesc,
           "metrics": METRIC_NOTES, "seconds": time.time() - t0, "results": results}
    from ..errors import OutputExistsError
    from ..io.safe_write import atomic_write_bytes, atomic_write_with
    outputs = []
    if args.json:
        outputs.append(("--json", Path(args.json),
                        lambda p: atomic_write_bytes(p, json.dumps(json_ready(doc), indent=1, allow_nan=False).encode(),
                                                     overwrite=args.overwrite)))
    if args.plot:
        title = f"{folder.name}: {spec.name.upper()}" + (" + restoration" if model is not None else "")
        endless = sum(1 for r in results for k in ("psnr_codec", "psnr_restored")
                      if r[k] is not None and not math.isfinite(r[k]))
        if endless:
            warn(f"--plot leaves out {endless} point(s) whose PSNR is infinite (coded or restored identical to "
                 "the originals)")
        outputs.append(("--plot", Path(args.plot),
                        lambda p: atomic_write_with(p, lambda f: plot_rd(results, f, title), overwrite=args.overwrite)))
    failed = False
    for opt, p, write in outputs:     # each output on its own: one that fails does not lose the other
        try:
            write(p)
            print(printable(f"wrote {p}"))
        except OutputExistsError:
            print(f"fastreshuffle eval: error: {opt} {p} appeared during the run; kept it, nothing written "
                  "(use --overwrite)", file=sys.stderr)
            failed = True
        except OSError as e:
            print(f"fastreshuffle eval: error: {opt} {p}: cannot write: {e.strerror or e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0
