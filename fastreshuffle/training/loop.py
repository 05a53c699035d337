"""Training: L1 (or, by option, MSE) loss + Adam on (compressed, original) patch pairs (``fastreshuffle train``).

Single process::

    fastreshuffle train --codec jpeg --quality 5-50 --preset small --steps 3000 --out runs/jpeg

Several processes (DDP; gloo on CPU, nccl on GPU); ``--batch-size`` is the *global* batch::

    torchrun --standalone --nproc_per_node 2 -m fastreshuffle.cli train ... --batch-size 16 --threads 1

Run folder: ``log.csv``, ``last.safetensors`` / ``best.safetensors`` (weights + config in the
metadata, loadable with ``fastreshuffle.load_model``), ``state.safetensors`` (fp32 weights and Adam
moments; in its metadata the step, schedule, best PSNR and arguments, copied to ``state.json``).  ``--resume``
continues from them; the data pipeline is a pure function of (seed, sample index), so a resumed
run sees the same batches and ends in the same state as an uninterrupted one (in float32 and in
bf16 alike).

Precision (``--precision``, decided once by :func:`fastreshuffle.backends.training_precision`):
``bf16`` runs forward and backward under ``torch.autocast`` to bfloat16 with float32 master
weights and Adam state (default on CUDA and on CPUs with AVX512-BF16 / AMX); the network class
and its layout for training come from :func:`fastreshuffle.inference.loading.model_class` and
:func:`~fastreshuffle.inference.loading.training_memory_format`.  Validation always runs the
float32 weights in float32: it measures the model as it is exported.

Wall-time limits: ``--time-budget S`` stops (with a checkpoint, keeping the ``--steps``
schedule) once S seconds of training have passed; ``--checkpoint-every S`` also writes the
checkpoint every S seconds.  Both are decided collectively under DDP.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import cpu_has_bf16, training_precision
from ..errors import CodecError, DataError, UserError, WeightsError
from ..nn.config import PRESETS, ReshuffleNetConfig
from .config import DEFAULT_QUALITY, RUN_OPTIONS, TrainConfig
from .checkpoint import CsvLog, load_state, read_state_meta, save_state
from .dist import Dist

__all__ = ["train", "lr_at", "validate"]


# ------------------------------------------------------------------ schedule
def lr_at(step: int, args) -> float:
    """Learning rate for optimisation step ``step`` (0-based): a pure function of the step."""
    base = args.lr
    if args.warmup and step < args.warmup:
        return base * (step + 1) / args.warmup
    if args.schedule == "constant":
        return base
    if args.schedule == "step":
        every = args.step_every or max(1, args.steps // 3)
        return base * (args.step_gamma ** ((step - args.warmup) // every))
    min_lr = args.min_lr if args.min_lr is not None else base / 100.0
    span = max(1, args.steps - args.warmup)
    t = min(1.0, (step - args.warmup) / span)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * t))


# ------------------------------------------------------------------ interrupts
@contextlib.contextmanager
def _signals_held():
    """Hold Ctrl-C (and SIGTERM / SIGHUP where, as under the CLI, they raise an interrupt) back
    while the run's state changes as one piece -- an Adam step with its step count, a checkpoint's
    files -- and deliver it when the block ends.  Otherwise a signal in the middle of
    ``opt.step()`` (a Python loop over the parameters on CPU) saved half a step under the old step
    number, and ``--resume`` then differed from the uninterrupted run.  Signals whose handler is
    not a Python function (default, ignored) are left as they are; outside the main thread
    nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and callable(signal.getsignal(sig)):
            old[sig] = signal.signal(sig, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(got):     # only when the block ended well: else its error is reported
        signal.raise_signal(sig)


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(model, valset, device) -> Dict[str, float]:
    """PSNR of ``model`` (float32, no autocast) on ``valset``, and of the codec alone."""
    from ..io.images import to_tensor, to_uint8
    from ..metrics import PSNRAccumulator

    was_training = model.training
    model.eval()
    acc, acc_c = PSNRAccumulator(), PSNRAccumulator()
    for _q, comp, orig in valset.items:
        x = to_tensor(comp)[None].to(device)
        y = model(x)
        out = to_uint8(y[0].float())
        acc.add(out, orig)
        acc_c.add(comp, orig)
    model.train(was_training)
    return {"val_psnr": acc.psnr(), "val_psnr_codec": acc_c.psnr()}


def _autocast(device: torch.device, precision: str):
    """The forward's context for a resolved ``precision`` ("fp32" or "bf16")."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _resolve_config(args) -> ReshuffleNetConfig:
    if args.config:
        try:
            return ReshuffleNetConfig.from_json(args.config)
        except (ValueError, TypeError) as e:
            hint = ""
            if not args.config.lstrip().startswith("{"):
                hint = (" (--config takes the architecture as JSON text, e.g. "
                        "'{\"growth\": [16, 8, 4], \"layers\": [2, 3, 2]}', not a file name; "
                        "a preset is --preset)")
            raise UserError(f"--config: {e}{hint}") from None
    return ReshuffleNetConfig.preset(args.preset)


def _preset_name(args, cfg: ReshuffleNetConfig) -> str:
    """What the weights' metadata call the architecture: --preset's name, or under --config the
    preset it equals, else "custom" (it said --preset's default whatever --config gave)."""
    if not args.config:
        return args.preset
    return next((name for name, c in sorted(PRESETS.items()) if c == cfg), "custom")



# What a run writes into --out: a folder holding any of them is not written into without --resume.
RUN_FILES = ("state.json", "state.safetensors", "log.csv", "last.safetensors", "best.safetensors")


def _check_args(args) -> None:
    if not str(args.out).strip():
        raise UserError("--out is empty: name the run's folder")
    init = getattr(args, "init", None)
    if init is not None and not str(init).strip():    # (else taken as no --init: trained from scratch)
        raise UserError("--init is empty: name a .safetensors file or a shipped model (jpeg, hevc, ...), "
                        "or leave --init out to train from scratch")
    if args.patch <= 0 or args.patch % 8:
        raise UserError(f"--patch must be a positive multiple of 8, got {args.patch}")
    if args.steps <= 0:
        raise UserError("--steps must be positive")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    min_lr = getattr(args, "min_lr", None)
    if min_lr is not None and not (math.isfinite(min_lr) and 0 <= min_lr <= args.lr):
        raise UserError(f"--min-lr must be in [0, --lr], got {min_lr}")
    for name, least in (("warmup", 0), ("workers", 0), ("stop_at", 1), ("val_crop", 0)):
        v = getattr(args, name, None)
        if v is not None and v < least:
            raise UserError(f"--{name.replace('_', '-')} must be at least {least}, got {v}")
    if getattr(args, "threads", None) is not None:
        from ..backends import check_threads
        check_threads(args.threads)      # (as restore's: 100000 crashed torch's thread pool)
    if args.val_every <= 0 or args.log_every <= 0:
        raise UserError("--val-every and --log-every must be positive")
    wd = getattr(args, "weight_decay", 0.0)
    if not (math.isfinite(wd) and wd >= 0):
        raise UserError(f"--weight-decay must be 0 or a positive number, got {wd}")
    if not 0 <= args.seed < 2 ** 63:
        raise UserError(f"--seed must be in 0..2^63-1, got {args.seed}")
    if getattr(args, "step_every", None) is not None and args.step_every < 1:
        raise UserError(f"--step-every must be at least 1, got {args.step_every}")
    gamma = getattr(args, "step_gamma", 0.5)
    if not (math.isfinite(gamma) and 0 < gamma <= 1):
        raise UserError(f"--step-gamma must be in (0, 1] (the LR is multiplied by it), got {gamma}")
    if not 1 <= getattr(args, "reduce", 1) <= 8:
        raise UserError(f"--reduce must be 1 (photos as they are) to 8, got {args.reduce}")
    if not 0 <= getattr(args, "also_shrunk", 0) <= 8 or getattr(args, "also_shrunk", 0) == 1:
        raise UserError(f"--also-shrunk must be 0 (off) or 2 to 8, got {args.also_shrunk}")
    if getattr(args, "val_images", 1) < 1:
        raise UserError(f"--val-images must be at least 1, got {args.val_images}")
    crop = getattr(args, "val_crop", 0)
    if crop is not None and 0 < crop < 8:
        raise UserError(f"--val-crop must be 0 (the whole image) or at least 8 (cropped to a multiple of 8), got {crop}")
    if not math.isfinite(args.grad_clip) or args.grad_clip < 0:
        raise UserError(f"--grad-clip must be a positive norm, or 0 for no clipping, got {args.grad_clip}")
    from .data import parse_mix
    try:
        mix = parse_mix(getattr(args, "mix", None))
    except ValueError as e:
        raise UserError(str(e)) from None
    if getattr(args, "encode", "patch") == "whole" and mix.active:
        raise UserError("--mix is for --encode patch (its variations code each patch on its own)")
    cache = getattr(args, "coded_cache", None)
    if cache is not None:
        if getattr(args, "encode", "patch") != "whole":
            raise UserError("--coded-cache is for --encode whole")
        if Path(cache).exists() and not Path(cache).is_dir():
            raise UserError(f"--coded-cache {cache} exists and is not a folder")
        _check_folder("--coded-cache", cache)
    if getattr(args, "encode", "patch") == "whole" and getattr(args, "versions", 1) < 1:
        raise UserError(f"--versions must be at least 1, got {args.versions}")
    for name in ("time_budget", "checkpoint_every"):
        v = getattr(args, name, None)
        if v is not None and not v > 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v}")


def _check_folder(option: str, folder) -> None:
    """A folder the run will write in: it can be made and written, else a one-line error."""
    from ..io.safe_write import check_output_folder
    try:
        check_output_folder(folder)
    except OSError as e:
        raise UserError(f"{option} {folder}: cannot write there: {e.strerror or e}"
                        + (f" ({e.filename})" if e.filename and str(e.filename) != str(folder) else "")) from None


def _codec_and_qualities(args):
    from ..io.codecs import check_encoder, fixed_qp, parse_spec, with_threads
    from .data import parse_quality_range

    given = args.quality is not None
    try:
        qualities = parse_quality_range(args.quality if given else DEFAULT_QUALITY)
        # a run is named by what is coded; x265's thread count changes the cost, not the bytes
        spec = with_threads(parse_spec(args.codec), None)
        if fixed_qp(spec) is not None:   # every sample coded at that QP: a quality would be a false label
            if given or spec.quality is not None:
                raise ValueError(f"--codec {args.codec} fixes the QP: give no --quality beside it")
            if getattr(args, "val_quality", None):
                raise ValueError(f"--codec {args.codec} fixes the QP: give no --val-quality beside it")
        elif spec.quality is not None:  # "jpeg:10" given as codec: that is the quality
            if given:
                raise ValueError(f"--codec {args.codec} names the quality; give no --quality beside it")
            qualities = [spec.quality]
        if not given and spec.quality is None and fixed_qp(spec) is None:
            args.quality = DEFAULT_QUALITY   # (left None where the codec names it: a resume takes the run's None)
        for q in sorted(set(qualities)):
            try:
                parse_spec(spec, q)
            except CodecError as e:    # (named as typed: "5-150", not only the first value out of range)
                raise ValueError(f"--quality {args.quality}: {e}" if given else str(e)) from None
        # one patch-sized picture coded before anything is made: a value only the encoder refuses
        # fails here, with the codec named, not in a data worker at the first sample (x265's
        # placebo preset cannot code 16 px, so not smaller than what the workers code)
        check_encoder(spec, qualities[0], f"--codec {args.codec}", side=max(args.patch, 32))
    except (ValueError, CodecError) as e:
        raise UserError(str(e)) from None
    return spec, qualities


def _data_dir(args) -> Path:
    from ..io.datasets import train_dir
    return Path(args.data) if args.data else train_dir(args.data_root)


def _val_dir(args) -> Path:
    """The validation folder (``--val`` other than split / none)."""
    from ..io.datasets import eval_dir
    return Path(args.val) if args.val else eval_dir(args.data_root)


def _load_data(args, spec, val_qualities, main: bool, say, warn):
    """-> (training images, validation set or None, the files they came from: :func:`_files_record`)."""
    from .data import ValidationSet, load_folder, with_shrunk

    from ..io.codecs import fixed_qp
    # the codec and the validation qualities ("jpeg:444 quality [10]"); a fixed QP has none to show
    shown = str(dataclasses.replace(spec, quality=None))
    if fixed_qp(spec) is None:
        shown += f" quality {val_qualities}"
    data_dir = _data_dir(args)
    reduce = getattr(args, "reduce", 1)
    vnames: List[str] = []
    vimgs: list = []
    try:
        images, names, rep = load_folder(data_dir, min_size=args.patch, small=args.small_images, warn=warn,
                                         reduce=reduce)
    except DataError as e:
        raise UserError(str(e)) from None
    say(f"train data: {rep.summary(data_dir)}" + (f", each shrunk {reduce}x" if reduce > 1 else ""))
    valset = None
    val_mode = (args.val or "").lower()
    if val_mode == "split":
        if len(images) <= args.val_images:
            raise UserError(f"--val split needs more than --val-images {args.val_images} training images, "
                            f"{data_dir} has {len(images)}")
        held, vnames = images[-args.val_images:], names[-args.val_images:]
        vimgs = held
        images, names = images[:-args.val_images], names[:-args.val_images]
        say(f"held out the last {len(held)} images (by name) of {data_dir} for validation; "
            f"training on {len(images)}")
        if main:
            valset = ValidationSet(held, spec, val_qualities, crop=args.val_crop or None)
            say(f"validation: {len(held)} held-out images, {shown}, "
                f"crop {args.val_crop or 'full'}")
    elif main and val_mode != "none":
        val_dir = _val_dir(args)
        if not args.val and not val_dir.is_dir():
            raise UserError(f"validation: the default set {val_dir} is not there; pass --val FOLDER (originals "
                            "never compressed), --val split (hold out the last --val-images of --data) or --val none")
        if args.val and not val_dir.is_dir():   # (said as missing training data before)
            raise UserError(f"--val {args.val}: " + ("not a folder" if val_dir.exists() else "no such folder")
                            + "; give a folder of originals, split (hold out the last --val-images of --data) "
                            "or none")
        try:
            vimgs, vnames, vrep = load_folder(val_dir, warn=warn, limit=args.val_images, reduce=reduce)
        except DataError as e:
            raise UserError(f"validation: {e}") from None
        if args.data and not args.val:
            say(f"validation on the data root's {val_dir.name} (--val FOLDER or --val split to validate on "
                "your own photos)")
        valset = ValidationSet(vimgs, spec, val_qualities, crop=args.val_crop or None)
        say(f"validation: {vrep.summary(val_dir)}, {shown}, "
            f"crop {args.val_crop or 'full'}")
        if len(vimgs) < args.val_images:
            warn(f"validation: {len(vimgs)} image(s) in {val_dir}, fewer than --val-images {args.val_images}")
        if os.path.realpath(val_dir) == os.path.realpath(data_dir):
            warn("validation: --val is the training folder: the best step is chosen on images it trains on "
                 "(--val split holds some out)")
    extra = getattr(args, "also_shrunk", 0)
    if extra:
        images, names = with_shrunk(images, names, extra, args.patch, args.small_images, warn)
        say(f"train data: each training photo also shrunk {extra}x: {len(images)} images")
    return images, valset, _files_record(names, vnames if valset is not None else [], images,
                                         vimgs if valset is not None else [])


def _files_record(train: List[str], val: List[str], train_pixels=(), val_pixels=()) -> Dict:
    """What a run was trained and validated on, as saved in its state: the training files' count
    and a digest of their names, the validation files' names, and a digest of each set's decoded
    pixels (a resume compares them: a photo changed under the same name counts)."""
    def pixels(images) -> str:
        h = hashlib.sha256()
        for a in images:
            h.update(repr((a.shape, str(a.dtype))).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]
    digest = hashlib.sha256("\n".join(sorted(str(n) for n in train)).encode()).hexdigest()[:16]
    return {"train_count": len(train), "train_digest": digest, "val": [str(n) for n in val],
            "train_pixels": pixels(train_pixels), "val_pixels": pixels(val_pixels)}


def _build_model(args, cfg, device, precision: str, init_state=None):
    """Fresh model from the package's factory (zero tail, optional --init: ``init_state`` when
    already read by :func:`_check_init`)."""
    from ..inference.loading import build_model
    from ..io.weights import load_state_checked

    torch.manual_seed(args.seed)
    model = build_model(cfg, device, training=True, precision=precision)
    if args.zero_tail and cfg.residual:
        with torch.no_grad():
            model.tail.weight.zero_()
            model.tail.bias.zero_()
    if args.init and not args.resume:
        try:
            state = init_state if init_state is not None else _check_init(args, cfg)
            load_state_checked(model, state, source=args.init)
        except WeightsError as e:
            raise UserError(str(e)) from None
    return model


def validation_setup(args, spec, val_qualities) -> Optional[Dict]:
    """What the run validates on, as it is (folders resolved, the qualities the codec runs at):
    best.safetensors and the best PSNR were judged on it (and ``--val split`` holds its images out
    of training).  None: no validation."""
    mode = (args.val or "").lower()
    if mode == "none":
        return None
    where = (f"the last images of {_data_dir(args).resolve()}" if mode == "split"
             else str(_val_dir(args).resolve()))
    return {"images": where, "count": args.val_images, "crop": args.val_crop or 0, "codec": str(spec),
            "qualities": [int(q) for q in val_qualities]}


def _check_resumable(args, run_dir: Path, cfg, setup: Optional[Dict]) -> None:
    """Refuse, before anything is loaded, a resume whose architecture differs, or whose validation
    differs from the one the run's best was chosen on (runs saved before it was recorded: not
    checked)."""
    meta = read_state_meta(run_dir)
    saved_cfg = meta.get("config")
    if saved_cfg and ReshuffleNetConfig.from_dict(saved_cfg) != cfg:
        raise UserError(f"--resume: the run was trained with {saved_cfg}, not {cfg.to_dict()}; "
                        "pass the same --preset/--config")
    saved = meta.get("validation", setup)
    if saved is not None and saved != setup:
        changed = ([f"{k} {saved[k]!r} -> {setup[k]!r}" for k in saved if saved[k] != setup.get(k)]
                   if setup is not None else ["validation -> none"])
        raise UserError(f"--resume: the run's validation was set up otherwise ({'; '.join(changed)}), and its "
                        f"best.safetensors was chosen on it; resume with the same options, or start a new run "
                        f"from {run_dir / 'last.safetensors'} with --init and another --out")


def _resume(args, run_dir: Path, model, opt, spec, say, warn, files=None,
            world: int = 1) -> Tuple[int, float, tuple, float, bool]:
    """-> (start step, best PSNR, partial loss accumulator, CPU seconds so far, whether the last
    step's validation and checkpoint were interrupted) of the saved run (checked by
    :func:`_check_resumable` before anything was created; the files it was trained and validated
    on, :func:`_files_record`, here: other validation files are refused, other training files said)."""
    meta = load_state(run_dir, model, opt)
    saved_files = meta.get("files")
    saved_args = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    if isinstance(saved_files, dict) and files is not None:
        if saved_files.get("val") and saved_files["val"] != files["val"]:   # (a run without
            # validation may be resumed with it: nothing was chosen on any images)
            gone = sorted(set(saved_files["val"]) - set(files["val"]))
            new = sorted(set(files["val"]) - set(saved_files["val"]))
            raise UserError(f"--resume: the validation images changed since the run was saved (no longer: "
                            f"{gone[:3]}, new: {new[:3]}), and its best.safetensors was chosen on them; restore "
                            f"the folder, or start a new run from {run_dir / 'last.safetensors'} with --init")
        if (saved_files.get("val") and saved_files.get("val_pixels")
                and saved_files["val_pixels"] != files["val_pixels"]):
            was, now = saved_args.get("reduce", 1), getattr(args, "reduce", 1)
            why, fix = ((f"--reduce was {was} in the saved run, now {now}: the validation photos would be other "
                         "pixels", "resume without --reduce") if was != now else
                        ("the validation images changed since the run was saved (the same names, other pixels)",
                         "restore them"))
            raise UserError(f"--resume: {why}, and its best.safetensors was chosen on them; {fix}, or start a new "
                            f"run from {run_dir / 'last.safetensors'} with --init")
        if (saved_files.get("train_count"), saved_files.get("train_digest")) != (files["train_count"],
                                                                               files["train_digest"]):
            warn(f"--resume: the training images changed since the run was saved ({saved_files.get('train_count')} "
                 f"-> {files['train_count']} files); the result will differ from an uninterrupted run")
        elif saved_files.get("train_pixels") and saved_files["train_pixels"] != files["train_pixels"]:
            warn("--resume: the training images changed since the run was saved (the same names, other pixels); "
                 "the result will differ from an uninterrupted run")
    start, best = meta["step"], meta["best_psnr"]         # (numbers: read_state_meta checked them)
    loss_acc = tuple(meta.get("loss_acc") or (0.0, 0))     # (sum, count[, largest gradient norm])
    cpu_seconds = meta["cpu_seconds"]
    say(f"resuming {run_dir} at step {start}")
    saved_wd = meta["param_groups"][0].get("weight_decay") if meta["param_groups"] else None
    if saved_wd is not None and saved_wd != args.weight_decay:
        warn(f"--resume: --weight-decay {args.weight_decay} is not used: the saved optimizer's {saved_wd} is kept")
    changed = [(key, meta[key], now) for key, now in (
        ("codec", str(spec)), ("quality", args.quality), ("seed", args.seed), ("batch_size", args.batch_size),
        ("patch", args.patch), ("lr", args.lr), ("schedule", args.schedule), ("steps", args.steps),
        ("precision", args.precision_used), ("encode", getattr(args, "encode", "patch"))) if key in meta]
    def same_folder(key, was, now):   # the same --data spelled otherwise (absolute, trailing slash)
        return (key == "data" and isinstance(was, str) and isinstance(now, str)
                and os.path.realpath(was) == os.path.realpath(now))
    changed += [(f"--{key.replace('_', '-')}", saved_args[key], getattr(args, key)) for key in (
        "loss", "mix", "rot90", "flips", "data", "grad_clip", "warmup", "min_lr", "versions",
        "small_images", "reduce", "also_shrunk", "step_gamma", "step_every") if key in saved_args and hasattr(args, key)
        and not same_folder(key, saved_args[key], getattr(args, key))]
    for key, was, now in changed:
        if was != now:
            warn(f"--resume: {key} was {was!r} in the saved run, now {now!r}; "
                 "the result will differ from an uninterrupted run")
    # the thread count is this process's (another machine may resume the run), but it splits the
    # sums differently: with another one the result differs in its last bits
    threads = meta.get("threads")
    if isinstance(threads, int) and threads != torch.get_num_threads():
        warn(f"--resume: the run was saved with {threads} thread(s) per process, this one has "
             f"{torch.get_num_threads()}; the sums split otherwise, so the result will differ slightly from an "
             f"uninterrupted run (give --threads {threads} to continue it exactly)")
    # so does the number of processes (torchrun): each takes another share of the same global batch
    saved_world = meta.get("world")     # (not recorded by runs saved before 2026-12-07: not said)
    if isinstance(saved_world, int) and saved_world != world:
        warn(f"--resume: the run was saved by {saved_world} training process(es), this one has {world}; each "
             f"step's batch is split and summed otherwise, so the result will differ slightly from an "
             f"uninterrupted run (resume it with {saved_world} to continue it exactly)")
    return start, best, loss_acc, cpu_seconds, bool(meta.get("val_pending"))


def _codec_names_quality(codec) -> bool:
    """Whether a codec spec names the quality ("jpeg:90") or fixes the QP ("hevc:qp=30")."""
    from ..io.codecs import fixed_qp, parse_spec
    try:
        spec = parse_spec(codec)
    except (CodecError, ValueError, TypeError):
        return False
    return spec.quality is not None or fixed_qp(spec) is not None


def _the_runs_options(args: TrainConfig) -> TrainConfig:
    """--resume: what defines the run (:data:`.config.RUN_OPTIONS`) and was not given again is
    the saved run's, said in one line (``fastreshuffle train --out RUN --resume`` continues RUN as
    it was started; an option given anew is used, and a change is warned of or refused later)."""
    if int(os.environ.get("RANK", "0") or 0) == 0 and Path(args.out).is_dir():
        _refuse_if_in_use(Path(args.out))   # (a live run's state, or none yet, is not judged as a dead one's)
    meta = read_state_meta(Path(args.out))
    saved = meta.get("args")
    if not isinstance(saved, dict):
        return args
    taken = {k: saved[k] for k in RUN_OPTIONS
             if not args.was_given(k) and k in saved and saved[k] != getattr(args, k)}
    # a segment stopped before its --stop-at (Ctrl-C, --time-budget) goes on to it, as it would have
    # uninterrupted (it trained on to --steps: a helper's probe); one that reached it goes on to --steps
    stop = saved.get("stop_at")
    if not args.was_given("stop_at") and isinstance(stop, int) and meta["step"] < stop and stop != args.stop_at:
        taken["stop_at"] = stop
    if "quality" in taken and not args.was_given("codec") and _codec_names_quality(saved.get("codec")):
        del taken["quality"]    # (runs saved before 2026-12-07 kept the default 10 beside "jpeg:90")
    if taken and int(os.environ.get("RANK", "0") or 0) == 0:
        print("--resume: the run's own " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in taken.items()),
              file=sys.stderr, flush=True)
    return dataclasses.replace(args, **taken) if taken else args


def train(config: TrainConfig) -> int:
    """Train as ``fastreshuffle train`` does, with ``config`` (:class:`.config.TrainConfig`: the
    command's options, e.g. ``TrainConfig(out="runs/a", steps=500, quality="5-50")``; an
    ``argparse.Namespace`` of them is taken too).  Returns 0; a problem with the options or the
    data raises :class:`fastreshuffle.errors.UserError` saying what (naming the command's option)."""
    args = config if isinstance(config, TrainConfig) else TrainConfig(**vars(config))
    if args.resume:
        args = _the_runs_options(args)
    else:   # the run's folders as absolute paths: a resume from another folder finds the same ones
        folder = lambda p: (os.path.abspath(p) if p and os.fspath(p).lower() not in ("split", "none")  # noqa: E731
                            else p)
        args = dataclasses.replace(args, data=folder(args.data), val=folder(args.val),
                                   data_root=folder(args.data_root))
    if args.coded_cache:    # so is the cache (given again on a resume too): else one from elsewhere codes anew
        args = dataclasses.replace(args, coded_cache=os.path.abspath(args.coded_cache))
    _check_args(args)
    spec, qualities = _codec_and_qualities(args)
    val_qualities = args.val_quality or [min(qualities)]
    from ..io.codecs import parse_spec
    for q in val_qualities:
        try:
            parse_spec(spec, q)
        except CodecError as e:
            raise UserError(f"--val-quality: {e}") from None
    cfg = _resolve_config(args)
    setup = validation_setup(args, spec, val_qualities)
    from .data import parse_mix
    if parse_mix(getattr(args, "mix", None)).s444 > 0 and spec.name != "jpeg":
        raise UserError(f"--mix 444 is for JPEG (the codec is {spec.name})")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        dist = Dist(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    device = dist.device
    try:
        args.precision_used = training_precision(getattr(args, "precision", "auto"), device)
    except ValueError as e:
        raise UserError(f"--precision: {e}") from None
    if args.batch_size % dist.world:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the {dist.world} processes")
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if dist.main else (lambda m: None)
    warn = (lambda m: print(f"warning: {m}", file=sys.stderr, flush=True)) if dist.main else (lambda m: None)
    run_dir = Path(args.out)
    created, lock, init_state = False, None, None
    if dist.main:
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--out {run_dir} exists and is not a folder")
        # a run in progress there first: its files (or the lack of a state before its first
        # checkpoint) would be judged as a finished run's, with advice to remove them or --resume
        _refuse_if_in_use(run_dir)
        if args.resume:
            _check_resumable(args, run_dir, cfg, setup)     # a clear error before anything is created
            if args.init:
                warn(f"--init {args.init} is not used: --resume continues from the run's own state")
        else:
            _refuse_a_run(run_dir)
        if args.init and not args.resume:
            init_state = _check_init(args, cfg)             # before the data is read
        _check_folder("--out", run_dir)
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {run_dir}: cannot create the folder: {e.strerror or e}") from None
        try:
            lock = _lock_run(run_dir)        # one run at a time in a folder
            if not args.resume:
                _refuse_a_run(run_dir)       # (one started meanwhile)
            _check_folder("--out", run_dir)  # a resume into a folder it cannot write: said now, not later
        except UserError:
            _forget(run_dir, created, lock)
            raise
    dist.barrier()

    try:
        images, valset, files = _load_data(args, spec, val_qualities, dist.main, say, warn)
        return _train(args, dist, cfg, device, spec, qualities, images, valset, run_dir, say, warn, setup, files,
                      init_state)
    finally:
        # its lock released; the folder it made goes if the run wrote nothing there (it failed, or
        # was interrupted, before its first file: while reading the data, too)
        _forget(run_dir, created, lock)


def _refuse_a_run(run_dir: Path) -> None:
    if any((run_dir / n).exists() for n in RUN_FILES):
        stateless = not (run_dir / "state.safetensors").exists()
        raise UserError(f"{run_dir} already holds a run (or files named like one: {', '.join(RUN_FILES)}); "
                        + ("it has no training state (it stopped before its first checkpoint): remove "
                           "those files or choose another --out" if stateless else
                           "use --resume to continue it or choose another --out"))


LOCK_FILE = ".fastreshuffle-train.lock"


def _lock_run(run_dir: Path):
    """An exclusive lock on the run folder, held while the run lives (a file handle; the file is
    removed when the run ends, :func:`_unlock`); a second run on the same --out is refused
    instead of mixing its files with the first's."""
    path = run_dir / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (not POSIX: no lock)
        return open(path, "a")
    for _ in range(2):      # the file removed by the run that held it, between open and lock: once more
        f = open(path, "a")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise _in_use(run_dir) from None
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                return f
        except OSError:
            pass
        f.close()
    raise UserError(f"--out {run_dir}: another training run is starting or ending there; try again")


def _in_use(run_dir: Path) -> UserError:
    return UserError(f"--out {run_dir} is in use by another training run (it holds {LOCK_FILE}); "
                     "wait for it to end, or choose another --out")


def _refuse_if_in_use(run_dir: Path) -> None:
    """Refuse a folder whose lock (:func:`_lock_run`) another run holds, without making or taking
    anything: the checks before the folder is locked must not mistake a live run for a dead one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (not POSIX: no lock)
        return
    try:
        with open(run_dir / LOCK_FILE, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise _in_use(run_dir) from None
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)  # (a lock file left by a killed run: not in use)
    except OSError:     # no lock file there: no run holds the folder
        return


def _unlock(run_dir: Path, lock) -> None:
    """Release :func:`_lock_run`'s lock: the file removed while still held, then closed."""
    if lock is None:
        return
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
    except OSError:
        pass
    lock.close()


def _forget(run_dir: Path, created: bool, lock) -> None:
    """A run that ended: its lock released, and the folder it made removed if the run wrote nothing
    in it (it failed or was stopped before its first file)."""
    _unlock(run_dir, lock)
    if created:
        try:
            run_dir.rmdir()
        except OSError:
            pass


def _check_init(args, cfg):
    """--init: a weights file of this architecture -> its tensors (read before the data, to say
    what is wrong at once)."""
    from ..inference.loading import resolve_weights
    from ..io.weights import read_weights
    try:
        icfg, istate, _ = read_weights(resolve_weights(args.init))   # a path, or a shipped model's name
    except WeightsError as e:
        raise UserError(str(e)) from None
    if icfg is not None and icfg != cfg:
        raise UserError(f"--init {args.init}: architecture {icfg.to_dict()} differs from {cfg.to_dict()}; "
                        "use the matching --preset/--config")
    from ..io.weights import check_state
    from ..nn.reference import ReshuffleNet
    with torch.device("meta"):      # (the tensors' names and shapes, before the data is read)
        shapes = ReshuffleNet(cfg).state_dict()
    try:
        check_state(shapes, istate, source=f"--init {args.init}")
    except WeightsError as e:
        raise UserError(str(e)) from None
    return istate


def _train(args, dist, cfg, device, spec, qualities, images, valset, run_dir, say, warn, setup, files,
           init_state=None) -> int:
    model = _build_model(args, cfg, device, args.precision_used, init_state)
    say(_precision_line(args.precision_used, model, device))
    if args.precision_used == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        warn("--precision bf16 on a CPU without AVX512-BF16 / AMX: bf16 is emulated there, slower than fp32")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start, best, loss_acc, cpu_seconds, val_pending = 0, -float("inf"), (0.0, 0), 0.0, False
    if args.resume:
        start, best, loss_acc, cpu_seconds, val_pending = _resume(args, run_dir, model, opt, spec, say, warn,
                                                                   files if dist.main else None, dist.world)
    end = min(args.steps, args.stop_at) if args.stop_at else args.steps
    if end <= start and not val_pending:     # (a pending validation is done even so)
        say(f"nothing to do: the run is already at step {start}"
            + (f", --stop-at {args.stop_at}" if args.stop_at and args.stop_at < args.steps else
               f" >= --steps {args.steps}"))
        dist.close()
        return 0
    init_val = None
    if args.init and not args.resume:
        if not args.was_given("lr"):
            warn(f"--init with --lr {args.lr} (the default, for training from scratch): fine-tuning usually wants "
                 "less (the shipped models' later phases used 1.5e-4 to 2e-4)")
        if valset is not None and start == 0:   # where the fine-tuning starts from, to compare with
            init_val = validate(model, valset, device)
            say(f"validation of the --init weights before training: {init_val['val_psnr']:.3f} dB "
                f"(codec {init_val['val_psnr_codec']:.3f} dB)")
    loop = _Loop(args, dist, model, opt, spec, cfg, qualities, images, valset, run_dir, say, setup, files)
    return loop.run(start, max(start, end), best, loss_acc, cpu_seconds, val_pending, init_val)


def _precision_line(precision: str, model, device) -> str:
    from ..inference.loading import training_memory_format

    cl = training_memory_format(model, device) == torch.channels_last
    what = ("bf16 (autocast, float32 master weights and Adam state)" if precision == "bf16" else "fp32")
    return f"precision: {what}; network {type(model).__name__}{', channels-last' if cl else ''} on {device}"


class _TimedBatches:
    """Iterate ``loader`` and time both sides: ``waited``, the seconds spent waiting for batches
    (the DataLoader's start-up included), and ``busy``, the seconds from receiving a batch to
    :meth:`stepped` (the training step, which ends in a host sync: the loss is read).
    Validation and checkpoints count in neither.  :meth:`share` is the data's part of the time."""

    def __init__(self, loader):
        self.loader, self.waited, self.busy, self._got = loader, 0.0, 0.0, None

    def __iter__(self):
        t = time.perf_counter()
        for batch in self.loader:
            self._got = time.perf_counter()
            self.waited += self._got - t
            yield batch
            t = time.perf_counter()

    def stepped(self) -> None:
        self.busy += time.perf_counter() - self._got

    def share(self) -> float:
        """waited / (waited + busy) since the last call, which starts a new count."""
        total = self.waited + self.busy
        out = self.waited / total if total > 0 else 0.0
        self.waited = self.busy = 0.0
        return out


def _saved_step(path: Path) -> Optional[int]:
    """The training step a run's weights file was saved at (its metadata), None if unreadable."""
    from ..io.weights import read_metadata
    try:
        return int(read_metadata(path).get("step", ""))
    except (WeightsError, ValueError):
        return None


class _Loop:
    """The optimisation loop of one run, with its log, checkpoints and progress bar."""

    def __init__(self, args, dist, model, opt, spec, cfg, qualities, images, valset, run_dir, say, setup=None,
                 files=None):
        self.args, self.dist, self.model, self.opt, self.spec = args, dist, model, opt, spec
        self.valset, self.run_dir, self.say = valset, run_dir, say
        self.qualities, self.images = qualities, images
        self.extra_meta = {"codec": str(spec), "quality": args.quality, "preset": _preset_name(args, cfg),
                           "config": cfg.to_dict(), "seed": args.seed, "batch_size": args.batch_size,
                           "patch": args.patch, "lr": args.lr, "schedule": args.schedule, "steps": args.steps,
                           "precision": args.precision_used, "encode": getattr(args, "encode", "patch"),
                           "validation": setup, "files": files, "threads": torch.get_num_threads(),
                           "world": dist.world}
        self.best = -float("inf")
        # the step's validation and checkpoint are due but not done: an interrupt saves them as to do
        self.val_pending = False
        self.val_codec = None     # the codec's PSNR on the validation set, once validated (the last line)
        self.loss_sum, self.loss_n, self.grad_max = 0.0, 0, 0.0
        self.whole = None

    def _loader(self, start: int, end: int):
        from .data import PatchPairs, StepBatchSampler, WholeImagePairs, encoder_threads, parse_mix, worker_init

        args, dist = self.args, self.dist
        workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
        try:
            if getattr(args, "encode", "patch") == "whole":
                if self.whole is None:      # coded once per run (the loader is rebuilt after validation)
                    self.whole = WholeImagePairs(
                        self.images, patch=args.patch, codec=self.spec, qualities=self.qualities, seed=args.seed,
                        versions=args.versions, rot90=args.rot90, cache_dir=args.coded_cache,
                        processes=max(1, workers), say=self.say, threads=encoder_threads(max(1, workers)))
                dataset = self.whole
            else:
                dataset = PatchPairs(self.images, patch=args.patch, codec=self.spec, qualities=self.qualities,
                                     seed=args.seed, rot90=args.rot90, mix=parse_mix(getattr(args, "mix", None)),
                                     threads=encoder_threads(workers))
        except ValueError as e:
            raise UserError(str(e)) from None
        sampler = StepBatchSampler(start, end, args.batch_size, dist.rank, dist.world)
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=worker_init if workers else None,
            pin_memory=dist.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if workers else None)

    def checkpoint(self, step: int, is_best: bool, val_psnr: Optional[float] = None) -> None:
        """last.safetensors (with ``val_psnr``: this step's own validation, if it had one),
        best.safetensors if ``is_best``, and the training state; all or nothing for a signal."""
        from ..io.weights import save_weights

        args, best = self.args, self.best
        # with no validation set every checkpoint is the best there is (a resume cannot drop the
        # validation of a run that had one: _check_resumable): best.safetensors is never older
        # than last.safetensors, whichever path saved it (validation step, --stop-at, budget, Ctrl-C)
        is_best = is_best or self.valset is None
        psnr = lambda v: f"{v:.4f}" if v is not None and math.isfinite(v) else ""  # noqa: E731
        # the quality trained on: a codec spec that names one ("jpeg:90") trains at it alone, one
        # that fixes the QP ("hevc:qp=30") at that QP
        from ..io.codecs import fixed_qp
        qp = fixed_qp(self.spec)
        quality = (f"qp={qp}" if qp is not None else
                   str(self.spec.quality) if self.spec.quality is not None else str(args.quality))
        wmeta = {"step": str(step), "codec": self.spec.name, "quality": quality,
                 "val_psnr": psnr(val_psnr), "preset": self.extra_meta["preset"]}
        try:
            with _signals_held():
                save_weights(self.model, self.run_dir / "last.safetensors", metadata=wmeta)
                if is_best:
                    save_weights(self.model, self.run_dir / "best.safetensors",
                                 metadata={**wmeta, "val_psnr": psnr(best)})
                save_state(self.run_dir, self.model, self.opt, step,
                           {**self.extra_meta, "best_psnr": best, "val_pending": self.val_pending,
                            "args": {k: v for k, v in vars(args).items() if k != "given"},   # (a run's options)
                            "loss_acc": [self.loss_sum, self.loss_n, self.grad_max], "cpu_seconds": self.cpu_total()})
        except OSError as e:   # a full disk, a quota, a folder gone: said in one line, not a traceback
            raise self._write_failed(f"cannot save the checkpoint of step {step} in {self.run_dir}", e) from None

    def _write_failed(self, what: str, e: OSError) -> UserError:
        """The one-line error for a file of the run that could not be written: what, why, and the
        last checkpoint saved (what a --resume continues from)."""
        try:
            saved = read_state_meta(self.run_dir)["step"]
        except (UserError, OSError, KeyError, ValueError):
            saved = None
        return UserError(f"{what}: {e.strerror or e}; "
                         + (f"the last one saved is step {saved}: free space, then --resume"
                            if saved is not None else "no checkpoint was saved: free space, then run again "
                            f"into an empty --out (remove {self.run_dir}'s files first)"))

    def _log(self, log, step: int, **row) -> None:
        """A row of log.csv (of step ``step``), a failure to write it said as a checkpoint's is."""
        try:
            log.row(step=step, **row)
        except OSError as e:
            raise self._write_failed(f"cannot write the log of step {step} to {log.path}", e) from None

    def _close_log(self, log, step: int) -> None:
        try:
            log.close()     # (a resumed run that logged nothing writes its kept rows here)
        except OSError as e:
            raise self._write_failed(f"cannot write the log of step {step} to {log.path}", e) from None

    def _validate_and_save(self, step: int, lr: float, lval: float, t0: float, log, bar) -> Optional[float]:
        v = None
        if self.valset is not None:
            self.val_pending = True
            v = validate(self.model, self.valset, self.dist.device)
            self.val_codec = v["val_psnr_codec"]     # (the same set each time)
        with _signals_held():       # the best, its log row and its files change together
            self.val_pending = False
            return self._record_validation(step, lr, lval, t0, log, bar, v)

    def _record_validation(self, step: int, lr: float, lval: float, t0: float, log, bar, v) -> Optional[float]:
        is_best, last_val = False, None
        if v is not None:
            last_val = v["val_psnr"]
            is_best = v["val_psnr"] > self.best
            if is_best:
                self.best = v["val_psnr"]
            self._log_validation(log, step, lr, v, time.time() - t0)
            if bar is not None:
                bar.set_postfix({"loss": f"{lval:.4f}", "psnr": f"{last_val:.2f}"}, refresh=True)
            else:
                self.say(f"step {step}: val PSNR {v['val_psnr']:.3f} dB "
                         f"(codec {v['val_psnr_codec']:.3f}, gain {v['val_psnr'] - v['val_psnr_codec']:+.3f})")
        self.checkpoint(step, is_best, last_val)    # (without a validation set: the best, checkpoint())
        return last_val

    def _log_validation(self, log, step: int, lr: float, v: Dict[str, float], seconds: float) -> None:
        self._log(log, step, epoch_images=step * self.args.batch_size, lr=lr, val_psnr=v["val_psnr"],
                  val_psnr_codec=v["val_psnr_codec"], val_gain=v["val_psnr"] - v["val_psnr_codec"],
                  seconds=seconds, cpu_seconds=self.cpu_total())

    def cpu_total(self) -> float:
        """CPU seconds of this process's training so far, plus those of the runs it resumed."""
        return self.cpu_base + time.process_time() - self.cpu0

    def run(self, start: int, end: int, best: float, loss_acc, cpu_base: float = 0.0,
            val_pending: bool = False, init_val: Optional[Dict] = None) -> int:
        """Steps ``start`` to ``end``; ``init_val``: the validation of the --init weights before
        training, which count as the run's first best (checkpointed at ``start``): best.safetensors
        is never worse than the weights the run started from."""
        args, dist, model, opt, say = self.args, self.dist, self.model, self.opt, self.say
        device = dist.device
        self.best = best
        net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.train()
        loader = _TimedBatches(self._loader(start, end))
        log = CsvLog(self.run_dir / "log.csv", keep_upto=start if args.resume else None) if dist.main else None
        if log is not None and log.dropped:
            print(f"warning: --resume: {log.dropped} damaged row(s) of {self.run_dir / 'log.csv'} left out "
                  "(the training state is in state.safetensors)", file=sys.stderr, flush=True)
        bar = None
        if dist.main and args.progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=args.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
            except ImportError:  # pragma: no cover
                bar = None
        step = start
        t0, self.cpu0, self.cpu_base = time.time(), time.process_time(), float(cpu_base)
        t_last, step_last = t0, start
        # partial log interval carried over a resume
        self.loss_sum, self.loss_n = float(loss_acc[0]), int(loss_acc[1])
        self.grad_max = float(loss_acc[2]) if len(loss_acc) > 2 else 0.0
        last_val = None
        interrupted = None          # the KeyboardInterrupt (Ctrl-C, or SIGTERM / SIGHUP from the CLI)
        from ..inference.loading import training_memory_format
        fmt = training_memory_format(model, device)
        budget, every = getattr(args, "time_budget", None), getattr(args, "checkpoint_every", None)
        # --budget-clock cpu: the budget counts this process's CPU time, so a run paused (SIGSTOP)
        # or slowed by other work on the machine still gets its full share (the preset study).
        cpu_clock = getattr(args, "budget_clock", "wall") == "cpu"
        t_ckpt = t0
        loss_fn = F.mse_loss if getattr(args, "loss", "l1") == "mse" else F.l1_loss
        try:
            if init_val is not None and dist.main:   # the --init weights: the run's first best, logged
                self.val_codec = init_val["val_psnr_codec"]
                with _signals_held():
                    self.best = init_val["val_psnr"]
                    self._log_validation(log, start, lr_at(start, args), init_val, 0.0)
                    self.checkpoint(start, True, init_val["val_psnr"])
            if val_pending:         # the saved step's validation (and checkpoint) was interrupted
                if dist.main:
                    if self.valset is not None:
                        say(f"validating step {start}, whose validation was interrupted")
                    last_val = self._validate_and_save(start, lr_at(start - 1, args), float("nan"), t0, log, bar)
                dist.barrier()
            for comp, orig, _q in loader:
                lr = lr_at(step, args)
                for g in opt.param_groups:
                    g["lr"] = lr
                comp = comp.to(device, non_blocking=True).contiguous(memory_format=fmt)
                orig = orig.to(device, non_blocking=True)
                with _autocast(device, args.precision_used):
                    out = net(comp)
                loss = loss_fn(out.float(), orig)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                # the global gradient norm before clipping: the log keeps the largest of each interval,
                # so a spike that precedes a divergence shows
                if args.grad_clip > 0:
                    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
                else:
                    gnorm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
                # held: a checkpoint never holds half a step, nor a step without its log row
                with _signals_held():
                    opt.step()
                    step += 1
                    lval = float(dist.mean(loss.detach()))
                    loader.stepped()
                    if not math.isfinite(lval):
                        raise UserError(f"loss became {lval} at step {step}; lower --lr "
                                        "(the log's grad_norm shows the spike)")
                    self.loss_sum += lval
                    self.loss_n += 1
                    self.grad_max = max(self.grad_max, float(gnorm))
                    log_now = step % args.log_every == 0 or step == args.steps
                    # every rank counts its own wait; the log takes the most starved one
                    data_wait = dist.max(loader.share()) if log_now else None
                    if dist.main:
                        if log_now:
                            now = time.time()
                            ips = (step - step_last) * args.batch_size / max(1e-9, now - t_last)
                            self._log(log, step, epoch_images=step * args.batch_size, lr=lr,
                                      loss=self.loss_sum / self.loss_n, seconds=now - t0,
                                      cpu_seconds=self.cpu_total(), images_per_s=ips, grad_norm=self.grad_max,
                                      data_wait=data_wait)
                            t_last, step_last = now, step
                            if bar is not None:
                                post = {"loss": f"{self.loss_sum / self.loss_n:.4f}", "lr": f"{lr:.2e}"}
                                if last_val is not None:
                                    post["psnr"] = f"{last_val:.2f}"
                                bar.set_postfix(post, refresh=False)
                            self.loss_sum, self.loss_n, self.grad_max = 0.0, 0, 0.0
                        if bar is not None:
                            bar.update(1)
                    # the step's validation and checkpoint are due from here: an interrupt before
                    # they are done leaves them to the resume
                    due = step % args.val_every == 0 or step == args.steps
                    self.val_pending = due
                saved = True
                if due:
                    if dist.main:
                        v = self._validate_and_save(step, lr, lval, t0, log, bar)
                        last_val = v if v is not None else last_val
                        if step == end < args.steps:     # --stop-at on a validation step: said too
                            say(f"stopped at step {step} (--stop-at); continue with --resume")
                    dist.barrier()
                elif step == end:
                    if dist.main:
                        self.checkpoint(step, False)
                        say(f"stopped at step {step} (--stop-at); continue with --resume")
                    dist.barrier()
                else:
                    saved = False
                if (budget or every) and step < end:
                    now = time.time()
                    spent = time.process_time() - self.cpu0 if cpu_clock else now - t0
                    over = dist.any(budget is not None and spent >= budget)
                    due = dist.any(every is not None and now - t_ckpt >= every)
                    if (over or due) and not saved:
                        if dist.main:
                            self.checkpoint(step, False)
                            say(f"checkpoint: step {step} after {now - t0:.0f} s")
                        dist.barrier()
                    if over:
                        say(f"stopped at step {step} (--time-budget {budget:g} s"
                            f"{' of CPU time' if cpu_clock else ''}); continue with --resume")
                        break
                    if due or saved:
                        t_ckpt = now
        except KeyboardInterrupt as e:
            interrupted = e
        finally:
            if bar is not None:
                bar.close()
        if interrupted is not None:
            if dist.main and step > start:
                self.checkpoint(step, False)
                say(f"interrupted: saved step {step} to {self.run_dir}; continue with --resume")
            elif dist.main and init_val is not None and (self.run_dir / "state.safetensors").is_file():
                say(f"interrupted at step {start}, the --init weights saved as its best in {self.run_dir}; "
                    "continue with --resume")
            if log:
                self._close_log(log, step)
            dist.close()
            raise interrupted           # its exit code (130, or 128 + the signal) goes with it
        if log:
            self._close_log(log, step)
        if dist.main:
            best_txt = f"best val PSNR {self.best:.3f} dB" if math.isfinite(self.best) else ""
            if best_txt and self.val_codec is not None:
                best_txt += f" (codec {self.val_codec:.3f} dB, gain {self.best - self.val_codec:+.3f})"
            best_txt += "; " if best_txt else ""
            best_file = self.run_dir / "best.safetensors"
            weights = best_file if best_file.is_file() else self.run_dir / "last.safetensors"
            if best_file.is_file() and _saved_step(best_file) == 0:   # (only --init validates at step 0)
                best_txt += "the --init weights, as no trained step validated better; "
            ran = f"{step} steps" if start == 0 else f"step {step} ({step - start} in this segment)"
            say(f"done: {ran} in {time.time() - t0:.1f} s; {best_txt}weights in {weights}")
        dist.close()
        return 0
