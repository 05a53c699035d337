"""Codec + model evaluation: codec and restored PSNR / SSIM / PSNR-B / bpp over a set of images.

For every (codec, quality) the JSON holds ``images``, ``bpp`` (mean over images),
``psnr_codec`` / ``psnr_restored`` (dataset-level, as in the paper: one MSE over all RGB values of
all pixels of the whole set, then PSNR), ``psnr_codec_mean`` / ``psnr_restored_mean`` (mean of
per-image PSNRs), ``ssim_codec`` / ``ssim_restored`` (mean over images of RGB SSIM),
``psnrb_codec`` / ``psnrb_restored`` (mean over images of luma PSNR-B), ``gain`` (restored minus
codec, set-level PSNR), ``gain_mean`` (mean of per-image gains; README's headline figure),
``gain_worst`` (the smallest per-image gain) and ``per_image`` rows.
Metric definitions: ``fastreshuffle.metrics`` and ``docs/codecs.md``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..errors import UserError

METRIC_NOTES = {
    "psnr": "RGB PSNR, peak 255; psnr_* = dataset-level (one MSE over all values of the set), "
            "psnr_*_mean = mean of per-image PSNRs",
    "ssim": "Gaussian window 11x11 sigma 1.5, K1=0.01, K2=0.03, per RGB channel then averaged; "
            "mean over images",
    "psnrb": "PSNR-B (Yim & Bovik 2011) on BT.601 luma, 8x8 blocks; mean over images",
    "bpp": "8 * compressed file bytes / (H * W), mean over images (HEVC: whole .heic file)",
    "non-finite": "an infinite PSNR (an exact reconstruction) or gain is the string \"Infinity\" or "
                  "\"-Infinity\" (strict JSON has no such number; float() and JavaScript's Number() read it)",
}


def json_ready(obj):
    """``obj`` (the results document) with every non-finite float as the string "Infinity" /
    "-Infinity" / "NaN", so that ``json.dumps(..., allow_nan=False)`` writes strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def load_eval_images(folder: Path, skip_bad: bool = False, limit: Optional[int] = None, warn=None,
                     recursive: bool = False):
    """Images of ``folder`` (sub-folders too with ``recursive``, or if it has none itself) ->
    (images, names, skipped)."""
    from ..errors import ImageReadError
    from ..io.images import list_images, load_image_file

    if not folder.exists():
        from ..io.datasets import missing_folder_message
        raise UserError(missing_folder_message(folder, "evaluation image"))
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    paths = list_images(folder, recursive=recursive)
    subs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if paths and subs and warn and not recursive:
        warn(f"{len(subs)} sub-folder(s) of {folder} not searched (it has images of its own; -r includes them)")
    paths = paths or list_images(folder, recursive=True)
    from ..io.output import is_restored_output
    ours = {p for p in paths if is_restored_output(p)}    # restore's outputs are not originals
    if ours:
        paths = [p for p in paths if p not in ours]
        if warn:
            warn(f"skipped {len(ours)} file(s) that are fastreshuffle outputs (restored images or eval plots, not originals)")
    if not paths:
        raise UserError(f"no image files in {folder}" + (" other than fastreshuffle outputs" if ours else ""))
    images, names, bad = [], [], []
    transparent, decoded = [], []    # what the scores do not see: said once each
    for p in paths:
        if limit and len(images) >= limit:     # the first ``limit`` readable images (unreadable skipped)
            break
        try:
            f = load_image_file(p)
            images.append(f.rgb)
            names.append(str(p.relative_to(folder)))
            if f.alpha is not None:
                transparent.append(names[-1])
            decoded += [f"{names[-1]}: {n}" for n in f.notes if "decoded at 8 bits" in n]
            if f.rgb16 is not None:
                decoded.append(f"{names[-1]}: 16-bit samples decoded at 8 bits")
        except ImageReadError as e:
            if not skip_bad:
                raise UserError(f"cannot read {e.path}: {e.reason} (use --skip-bad to skip such files)") from None
            if warn:
                warn(f"skipping {e.path}: {e.reason}")
            bad.append({"file": str(p), "reason": e.reason})
    if not images:
        raise UserError(f"no readable images in {folder}")
    if warn and transparent:
        warn(f"{len(transparent)} of the {len(names)} images have transparency ({', '.join(transparent[:3])}"
             + (", ..." if len(transparent) > 3 else "") + "): coded and scored on their RGB values as stored, "
             "the alpha channel left out")
    if warn:
        for n in decoded[:3]:
            warn(n + " (scored at 8 bits)")
    return images, names, bad


def decoded_jpegs(images: List[np.ndarray], names: List[str]) -> List[str]:
    """"NAME (~qQ)" for each 8-bit RGB original whose pixels hold a decoded JPEG (the guard's
    detector, :func:`.jpeg_history.detect_jpeg`: none of Kodak24's 24 photos is claimed): a PNG
    saved from a JPEG.  Restoring removes those artifacts too, scored as a loss against them."""
    from .jpeg_history import detect_jpeg
    found = []
    for name, img in zip(names, images):
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
            h = detect_jpeg(np.ascontiguousarray(img))
            if h is not None:
                found.append(f"{name} (~q{h.quality})")
    return found


@torch.no_grad()
def _restore(model, img: np.ndarray, device) -> np.ndarray:
    from ..io.images import to_tensor, to_uint8
    from .tiling import restore_tensor

    # whole (no tiles), and as restore() runs it: under 8 px unchanged, a small image with context
    return to_uint8(restore_tensor(model, to_tensor(img)[None].to(device), tile=0)[0])


def _guarded_restore(model, coded, device, guard: bool, codec: str = "jpeg", pick=None,
                     model_codec: Optional[str] = "jpeg", asked=None) -> np.ndarray:
    """The restore of ``fastreshuffle restore`` (:mod:`.guard`) for an image coded by ``codec``
    with a model trained for ``model_codec``, by the same decision (:func:`.guard.route`);
    ``guard=False``: the raw network.  ``pick(quality=, qp=)``: the network for a JPEG of that
    quality or a HEIF file of that QP (the bands, :class:`.loading.Bands`); ``asked``: the model
    name they are the bands of (their strengths, :func:`.guard.guard_for`)."""
    from .guard import BLIND, HEIF_QP, TABLES, WEBP_Q, guard_pixels, hevc_guarded, route, webp_guarded

    def runner(net):
        return lambda img: _restore(net, img, device)
    run = runner(model)

    how = route(model_codec, guard=None if guard else False, jpeg_file=coded.tables is not None,
                tables=coded.tables is not None, heif=codec == "hevc",
                webp=codec == "webp" and coded.webp_index is not None)
    if how.kind == WEBP_Q:
        return webp_guarded(run, coded.image, coded.webp_index)[0]
    if how.kind == HEIF_QP:
        for_qp = (lambda qp: runner(pick(qp=qp))) if pick is not None else None
        return hevc_guarded(run, coded.image, coded.nbytes, coded.qp, for_qp)[0]
    if how.kind in (TABLES, BLIND):   # the file's tables; else JPEG looked for in the pixels (a WebP, ...)
        for_quality = (lambda q: runner(pick(quality=q))) if pick is not None else None
        return guard_pixels(run, coded.image, coded.tables if how.kind == TABLES else None,
                            for_quality=for_quality, model=asked)[0]
    return run(coded.image)


def _gain(restored: float, codec: float) -> float:
    """restored - codec PSNR in dB; 0 where both are infinite (an image decoded exactly and
    returned unchanged), -inf where the restore changed such an image."""
    return 0.0 if restored == codec else restored - codec


def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{nd}f}"


def evaluate(images: List[np.ndarray], names: List[str], spec, settings: List[Dict], model=None,
             device=torch.device("cpu"), progress=None, per_image: bool = True,
             ensemble: bool = False, guard: bool = True, bands=None) -> List[Dict]:
    """Run the codec (and model) over ``images`` for each setting (``{"quality": q}`` or ``{"qp": n}``).

    ``ensemble``: restore with the x8 geometric self-ensemble (``tiling.SelfEnsemble``).
    ``guard``: JPEG results go through :mod:`.guard` as ``fastreshuffle restore`` does (the
    strength for the file's quality, consistency with its tables); False: the raw network.
    ``bands`` (:class:`.loading.Bands`): a guarded JPEG or HEIF file is restored by the network of
    its quality band (as ``restore`` does with the shipped "jpeg" and "hevc"), ``model`` otherwise."""
    pick = bands.net if bands is not None else None
    from .loading import model_codec
    trained_for = model_codec(model) if model is not None else None
    if ensemble and model is not None:
        from .tiling import SelfEnsemble
        model = SelfEnsemble(model)
        if bands is not None:
            pick = lambda **key: SelfEnsemble(bands.net(**key))  # noqa: E731
    from ..metrics import SSIM_WINDOW, PSNRAccumulator, psnr_b, ssim

    def _ssim(a, b):        # None (left out of the mean) for an image smaller than SSIM's window
        return ssim(a, b) if min(a.shape[:2]) >= SSIM_WINDOW else None

    # a grey original (its channels equal: a grey PNG read as RGB) is coded as a grey JPEG, one
    # component, as grey benchmarks code it (in colour its bpp came out ~70% higher)
    grey = [bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()) for img in images]
    results = []
    for setting in settings:
        if "qp" in setting:
            import dataclasses
            s = dataclasses.replace(spec, quality=None, options=tuple(o for o in spec.options if o[0] != "qp")
                                    + (("qp", str(int(setting["qp"]))),))
            label = {"qp": setting["qp"]}
        else:
            s = spec.with_quality(setting["quality"])
            label = {"quality": setting["quality"]}
        acc_c, acc_r = PSNRAccumulator(), PSNRAccumulator()
        rows = []
        for i, (img, name) in enumerate(zip(images, names)):
            coded = s(img[..., 0] if grey[i] and s.name == "jpeg" else img)
            row = {"name": name, "height": img.shape[0], "width": img.shape[1], "bytes": coded.nbytes,
                   "bpp": coded.bpp,
                   "psnr_codec": acc_c.add(coded.image, img),
                   "ssim_codec": _ssim(img, coded.image),
                   "psnrb_codec": psnr_b(img, coded.image)}
            if model is not None:
                out = _guarded_restore(model, coded, device, guard, s.name, pick, trained_for,
                                       bands.model if bands is not None else None)
                row.update({"psnr_restored": acc_r.add(out, img), "ssim_restored": _ssim(img, out),
                            "psnrb_restored": psnr_b(img, out)})
            else:
                row.update({"psnr_restored": None, "ssim_restored": None, "psnrb_restored": None})
            rows.append(row)
            if progress:
                progress(f"{s}: {i + 1}/{len(images)}")

        def mean(key):
            vals = [r[key] for r in rows if r[key] is not None]
            return float(np.mean(vals)) if vals else None

        res = {"codec": s.name, "spec": str(s), **label, "images": len(rows), "bpp": mean("bpp"),
               "psnr_codec": acc_c.psnr(), "psnr_restored": acc_r.psnr() if model is not None else None,
               "psnr_codec_mean": mean("psnr_codec"), "psnr_restored_mean": mean("psnr_restored"),
               "ssim_codec": mean("ssim_codec"), "ssim_restored": mean("ssim_restored"),
               "psnrb_codec": mean("psnrb_codec"), "psnrb_restored": mean("psnrb_restored")}
        res["gain"] = _gain(res["psnr_restored"], res["psnr_codec"]) if model is not None else None
        per = [_gain(r["psnr_restored"], r["psnr_codec"]) for r in rows if r["psnr_restored"] is not None]
        res["gain_mean"] = float(np.mean(per)) if per else None
        res["gain_worst"] = float(np.min(per)) if per else None
        if per_image:
            res["per_image"] = rows
        results.append(res)
    return results


def _signed(v) -> str:
    return ("+" if (v or 0) >= 0 else "") + _fmt(v)


def print_table(results: List[Dict], out=None) -> None:
    """The results as an aligned table: codec figures, restored figures, then the gains
    (set-level, mean of per-image, worst image), each labelled."""
    out = out if out is not None else sys.stdout
    restored = any(r["psnr_restored"] is not None for r in results)
    head = ["codec", "setting", "images", "bpp", "PSNR set", "PSNR mean", "SSIM", "PSNR-B"]
    if restored:
        head += ["|", "restored PSNR set", "PSNR mean", "SSIM", "PSNR-B", "|", "gain: set", "mean", "worst image"]
    rows = []
    for r in results:
        setting = f"qp={r['qp']}" if "qp" in r else f"q={r['quality']}"
        codec = r.get("spec", r["codec"]).split(":")    # jpeg:444, hevc:10bit: the spec without its quality
        codec = ":".join(codec[:1] + codec[2:] if len(codec) > 1 and codec[1].isdigit() else codec)
        row = [codec, setting, str(r["images"]), _fmt(r["bpp"], 3), _fmt(r["psnr_codec"]),
               _fmt(r["psnr_codec_mean"]), _fmt(r["ssim_codec"], 4), _fmt(r["psnrb_codec"])]
        if restored:
            row += ["|", _fmt(r["psnr_restored"]), _fmt(r["psnr_restored_mean"]), _fmt(r["ssim_restored"], 4),
                    _fmt(r["psnrb_restored"]), "|", _signed(r["gain"]), _signed(r.get("gain_mean")),
                    _signed(r.get("gain_worst"))]
        rows.append(row)
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)), file=out)
    for x in rows:
        print("  ".join(v.rjust(w) for v, w in zip(x, widths)), file=out)


def plot_rd(results: List[Dict], path, title: str = ""):
    """Rate-distortion plot of ``results`` as a PNG into ``path`` (a file name or a binary file
    object); returns ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not hasattr(path, "write"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    rs = sorted(results, key=lambda r: r["bpp"])
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    bpp = [r["bpp"] for r in rs]
    name = rs[0]["codec"].upper() if rs else "codec"
    codec = [r["psnr_codec"] if math.isfinite(r["psnr_codec"]) else math.nan for r in rs]   # (infinite: left out,
    ax.plot(bpp, codec, "o-", label=name)                                                  # said by the caller)
    for r, y in zip(rs, codec):
        lab = f"qp{r['qp']}" if "qp" in r else f"q{r['quality']}"
        if math.isfinite(y):
            ax.annotate(lab, (r["bpp"], y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if any(r["psnr_restored"] is not None for r in rs):
        ax.plot(bpp, [r["psnr_restored"] if math.isfinite(r["psnr_restored"]) else math.nan for r in rs], "s-",
                label=f"{name} + restoration")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB, RGB, one MSE over the set)")
    ax.set_title(title or "rate-distortion")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08)    # room for the last point's label inside the axes
    ax.legend()
    fig.tight_layout()
    from ..io.output import software_tag   # marked as ours: eval of its folder again does not take it for an image
    fig.savefig(path, format="png", metadata={"Software": software_tag()})
    plt.close(fig)
    return path


