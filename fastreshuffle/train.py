"""``fastreshuffle train``: L1 loss + Adam on (compressed, original) patch pairs.

Single process::

    fastreshuffle train --codec jpeg --quality 5-50 --preset small --steps 3000 --out runs/jpeg

Several processes (DDP; gloo on CPU, nccl on GPU); ``--batch-size`` is the *global* batch::

    torchrun --standalone --nproc_per_node 2 -m fastreshuffle.cli train ... --batch-size 16 --threads 1

Run folder: ``log.csv``, ``last.safetensors`` / ``best.safetensors`` (weights + config in the
metadata, loadable with ``weights_io.load_model``), ``state.safetensors`` (fp32 weights and Adam
moments, tensors only) + ``state.json`` (step, schedule, best PSNR, arguments).  ``--resume``
continues from them; the data pipeline is a pure function of (seed, sample index), so a resumed
run sees the same batches and ends in the same state as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .cli import UserError
from .config import PRESETS, ReshuffleNetConfig

STATE_VERSION = 1
LOG_FIELDS = ["step", "epoch_images", "lr", "loss", "val_psnr", "val_psnr_codec", "val_gain", "seconds",
              "images_per_s"]


# ------------------------------------------------------------------ arguments
def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder of training images (default: <data-root>/train/CBSD432)")
    g.add_argument("--val", help="folder of validation images (default: <data-root>/eval/Kodak24); "
                                 "'split': hold out the last --val-images training images (by name); "
                                 "'none': no validation")
    g.add_argument("--data-root", help="data root (default: $FASTRESHUFFLE_DATA or ../shared/data)")
    g.add_argument("--codec", default="jpeg", help="codec spec without quality: jpeg, jpeg:444, hevc, webp "
                                                   "(see fastreshuffle.codecs) [jpeg]")
    g.add_argument("--quality", default="10", help="quality per sample, drawn uniformly from: N, LO-HI, "
                                                   "or a list of them, A,B,C or 5-50,5-30 (overlaps "
                                                   "count twice) [10]")
    g.add_argument("--patch", type=int, default=96, help="patch size, multiple of 8 [96]")
    g.add_argument("--rot90", action="store_true", help="also augment with 90-degree rotations")
    g.add_argument("--small-images", choices=["pad", "skip"], default="pad",
                   help="what to do with images smaller than the patch [pad]")
    g.add_argument("--workers", type=int, default=None, help="DataLoader worker processes [min(2, cpus)]")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default="small", choices=sorted(PRESETS), help="architecture [small]")
    g.add_argument("--config", help="architecture as JSON (overrides --preset)")
    g.add_argument("--init", help="start from these weights (safetensors)")
    g.add_argument("--no-zero-tail", dest="zero_tail", action="store_false",
                   help="keep PyTorch's random init of the last conv (default: zero it, so a residual "
                        "model starts as the identity)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=2000, help="total optimisation steps [2000]")
    g.add_argument("--batch-size", type=int, default=16, help="global batch size [16]")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate [1e-3]")
    g.add_argument("--min-lr", type=float, default=None, help="final LR for cosine [lr/100]")
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], default="cosine", help="[cosine]")
    g.add_argument("--step-every", type=int, default=None, help="step schedule: decay every N steps [steps/3]")
    g.add_argument("--step-gamma", type=float, default=0.5, help="step schedule: LR factor [0.5]")
    g.add_argument("--stop-at", type=int, default=None,
                   help="stop (with a checkpoint) after this step, keeping the --steps schedule; "
                        "continue later with --resume")
    g.add_argument("--warmup", type=int, default=0, help="linear warmup steps [0]")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip gradient norm (0: off)")
    g.add_argument("--seed", type=int, default=0, help="seed for init and data [0]")
    g = p.add_argument_group("validation and output")
    g.add_argument("--out", required=True, help="run folder (created)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--val-every", type=int, default=250, help="validate and checkpoint every K steps [250]")
    g.add_argument("--val-quality", type=int, nargs="+", default=None,
                   help="validation quality/qualities [the lowest training quality]")
    g.add_argument("--val-images", type=int, default=8, help="number of validation images [8]")
    g.add_argument("--val-crop", type=int, default=256, help="center crop for validation, 0: full [256]")
    g.add_argument("--log-every", type=int, default=10, help="CSV loss row every N steps [10]")
    g = p.add_argument_group("runtime")
    g.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto]")
    g.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on GPU")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    g.add_argument("--deterministic", action="store_true", help="torch.use_deterministic_algorithms")


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


# ------------------------------------------------------------------ distributed
class Dist:
    def __init__(self, device_arg: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "auto":
            dev = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif device_arg == "cuda" and self.world > 1:
            dev = f"cuda:{self.local_rank}"
        else:
            dev = device_arg
        self.device = torch.device(dev)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.detach().clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return value

    def broadcast_obj(self, obj):
        if not self.enabled:
            return obj
        lst = [obj]
        torch.distributed.broadcast_object_list(lst, src=0)
        return lst[0]

    def close(self):
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ------------------------------------------------------------------ checkpoints
def _optimizer_tensors(opt: torch.optim.Optimizer, names: Dict[int, str]) -> Dict[str, torch.Tensor]:
    out = {}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        name = names[idx]
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            out[f"optim.{k}.{name}"] = t.detach().cpu().contiguous()
    return out


def save_state(run: Path, model, opt, step: int, extra: Dict) -> None:
    from safetensors.torch import save_file

    names = {i: n for i, (n, _) in enumerate(model.named_parameters())}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt, names))
    meta = {"step": step, "version": STATE_VERSION, "param_groups": opt.state_dict()["param_groups"], **extra}
    tmp = run / f".state.safetensors.tmp{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "fastreshuffle-train-state/1"})
    os.replace(tmp, run / "state.safetensors")
    tmpj = run / f".state.json.tmp{os.getpid()}"
    tmpj.write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmpj, run / "state.json")


def load_state(run: Path, model, opt) -> Dict:
    from safetensors.torch import load_file

    sj, st = run / "state.json", run / "state.safetensors"
    if not sj.is_file() or not st.is_file():
        raise UserError(f"--resume: no training state in {run} (state.json / state.safetensors missing)")
    try:
        meta = json.loads(sj.read_text())
        tensors = load_file(str(st))
    except Exception as e:
        raise UserError(f"--resume: cannot read training state in {run}: {e}") from None
    from .weights_io import WeightsError, load_state_checked
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        load_state_checked(model, model_sd, source=str(st))
    except WeightsError as e:
        raise UserError(f"--resume: {e}") from None
    names = [n for n, _ in model.named_parameters()]
    state = {}
    for i, n in enumerate(names):
        entry = {}
        for k, v in tensors.items():
            if k.startswith("optim.") and k.endswith("." + n) and k.count(".") >= 2:
                key = k[len("optim."):-(len(n) + 1)]
                if "." not in key:
                    entry[key] = v
        if entry:
            state[i] = entry
    groups = meta["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})
    return meta


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(model, valset, device, amp: bool) -> Dict[str, float]:
    from .data import to_tensor, to_uint8
    from .metrics import PSNRAccumulator

    was_training = model.training
    model.eval()
    acc, acc_c = PSNRAccumulator(), PSNRAccumulator()
    for _q, comp, orig in valset.items:
        x = to_tensor(comp)[None].to(device)
        with _autocast(device, amp):
            y = model(x)
        out = to_uint8(y[0].float())
        acc.add(out, orig)
        acc_c.add(comp, orig)
    model.train(was_training)
    return {"val_psnr": acc.psnr(), "val_psnr_codec": acc_c.psnr()}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ CSV log
def _read_log(path: Path, upto: int) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= upto]


class CsvLog:
    def __init__(self, path: Path, keep_upto: Optional[int]):
        rows = _read_log(path, keep_upto) if keep_upto is not None else []
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        self.w.writeheader()
        for r in rows:
            self.w.writerow(r)
        self.f.flush()

    def row(self, **kw):
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in kw.items()})
        self.f.flush()

    def close(self):
        self.f.close()


# ------------------------------------------------------------------ main
def _resolve_config(args) -> ReshuffleNetConfig:
    if args.config:
        try:
            return ReshuffleNetConfig.from_json(args.config)
        except (ValueError, TypeError) as e:
            raise UserError(f"--config: {e}") from None
    return ReshuffleNetConfig.preset(args.preset)


def _check_args(args) -> None:
    if args.patch <= 0 or args.patch % 8:
        raise UserError(f"--patch must be a positive multiple of 8, got {args.patch}")
    if args.steps <= 0:
        raise UserError("--steps must be positive")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    if args.lr <= 0:
        raise UserError("--lr must be positive")
    if args.val_every <= 0 or args.log_every <= 0:
        raise UserError("--val-every and --log-every must be positive")


def run(args) -> int:
    from .codecs import CodecError, parse_spec
    from .data import (DataError, PatchPairs, StepBatchSampler, ValidationSet, load_folder,
                       parse_quality_range, worker_init)
    from .fast_model import FastReshuffleNet
    from .models import ReshuffleNet
    from .paths import eval_dir, train_dir
    from .weights_io import WeightsError, read_weights, load_state_checked, save_weights

    _check_args(args)
    try:
        qualities = parse_quality_range(args.quality)
        spec = parse_spec(args.codec)
        if spec.quality is not None:  # "jpeg:10" given as codec: that is the quality
            if args.quality == "10":
                qualities = [spec.quality]
        for q in qualities:
            parse_spec(spec, q)
    except (ValueError, CodecError) as e:
        raise UserError(str(e)) from None
    val_qualities = args.val_quality or [min(qualities)]
    cfg = _resolve_config(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    dist = Dist(args.device)
    device = dist.device
    if args.batch_size % dist.world:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the {dist.world} processes")
    run_dir = Path(args.out)
    if dist.main:
        if run_dir.exists() and not args.resume and (run_dir / "state.json").exists():
            raise UserError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    say = (lambda m: print(m, file=sys.stderr, flush=True)) if dist.main else (lambda m: None)
    warn = (lambda m: print(f"warning: {m}", file=sys.stderr, flush=True)) if dist.main else (lambda m: None)

    # data
    data_dir = Path(args.data) if args.data else train_dir(args.data_root)
    try:
        images, _names, rep = load_folder(data_dir, min_size=args.patch, small=args.small_images, warn=warn)
    except DataError as e:
        raise UserError(str(e)) from None
    say(f"train data: {rep.summary(data_dir)}")
    valset = None
    val_mode = (args.val or "").lower()
    if val_mode == "split":
        if len(images) <= args.val_images:
            raise UserError(f"--val split needs more than --val-images {args.val_images} training images, "
                            f"{data_dir} has {len(images)}")
        held = images[-args.val_images:]
        images = images[:-args.val_images]
        say(f"held out the last {len(held)} images (by name) of {data_dir} for validation; "
            f"training on {len(images)}")
        if dist.main:
            valset = ValidationSet(held, spec, val_qualities, crop=args.val_crop or None)
            say(f"validation: {len(held)} held-out images, {spec.name} quality {val_qualities}, "
                f"crop {args.val_crop or 'full'}")
    elif dist.main and val_mode != "none":
        val_dir = Path(args.val) if args.val else eval_dir(args.data_root)
        try:
            vimgs, _, vrep = load_folder(val_dir, warn=warn, limit=args.val_images)
        except DataError as e:
            raise UserError(f"validation: {e}") from None
        valset = ValidationSet(vimgs, spec, val_qualities, crop=args.val_crop or None)
        say(f"validation: {vrep.summary(val_dir)}, {spec.name} quality {val_qualities}, "
            f"crop {args.val_crop or 'full'}")

    # model + optimiser
    torch.manual_seed(args.seed)
    # On CPU the drop-in FastReshuffleNet (same parameters and state_dict, gradients equal to
    # 1e-4): its dense blocks run on the extension's CPU kernel, a training step of the small
    # preset (batch 16, 96x96) 1.27x faster.  Elsewhere the plain reference.
    model = (FastReshuffleNet if device.type == "cpu" else ReshuffleNet)(cfg)
    if args.zero_tail and cfg.residual:
        with torch.no_grad():
            model.tail.weight.zero_()
            model.tail.bias.zero_()
    if args.init and not args.resume:
        try:
            icfg, istate, _ = read_weights(args.init)
            if icfg is not None and icfg != cfg:
                raise UserError(f"--init {args.init}: architecture {icfg.to_dict()} differs from {cfg.to_dict()}; "
                                "use the matching --preset/--config")
            load_state_checked(model, istate, source=args.init)
        except WeightsError as e:
            raise UserError(str(e)) from None
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start, best = 0, -float("inf")
    loss_acc = (0.0, 0)
    if args.resume:
        meta = load_state(run_dir, model, opt)
        start = int(meta["step"])
        best = float(meta.get("best_psnr", -float("inf")))
        loss_acc = tuple(meta.get("loss_acc") or (0.0, 0))
        saved_cfg = meta.get("config")
        if saved_cfg and ReshuffleNetConfig.from_dict(saved_cfg) != cfg:
            raise UserError(f"--resume: the run was trained with {saved_cfg}, not {cfg.to_dict()}; "
                            "pass the same --preset/--config")
        say(f"resuming {run_dir} at step {start}")
        for key, now in (("codec", str(spec)), ("quality", args.quality), ("seed", args.seed),
                         ("batch_size", args.batch_size), ("patch", args.patch), ("lr", args.lr),
                         ("schedule", args.schedule), ("steps", args.steps)):
            if key in meta and meta[key] != now:
                warn(f"--resume: {key} was {meta[key]!r} in the saved run, now {now!r}; "
                     "the result will differ from an uninterrupted run")
        if start >= args.steps:
            say(f"nothing to do: the run is already at step {start} >= --steps {args.steps}")
            dist.close()
            return 0
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()

    dataset = PatchPairs(images, patch=args.patch, codec=spec, qualities=qualities, seed=args.seed,
                         rot90=args.rot90)
    end = min(args.steps, args.stop_at) if args.stop_at else args.steps
    if end <= start:
        say(f"nothing to do: the run is at step {start}, --stop-at {args.stop_at}")
        dist.close()
        return 0
    sampler = StepBatchSampler(start, end, args.batch_size, dist.rank, dist.world)
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=worker_init if workers else None,
        pin_memory=device.type == "cuda", persistent_workers=False, prefetch_factor=4 if workers else None)

    log = CsvLog(run_dir / "log.csv", keep_upto=start if args.resume else None) if dist.main else None
    extra_meta = {"codec": str(spec), "quality": args.quality, "preset": args.preset,
                  "config": cfg.to_dict(), "seed": args.seed, "batch_size": args.batch_size,
                  "patch": args.patch, "lr": args.lr, "schedule": args.schedule, "steps": args.steps}

    def checkpoint(step: int, is_best: bool) -> None:
        wmeta = {"step": str(step), "codec": spec.name, "quality": str(args.quality),
                 "val_psnr": f"{best:.4f}" if math.isfinite(best) else "", "preset": args.preset}
        save_weights(model, run_dir / "last.safetensors", metadata=wmeta)
        if is_best:
            save_weights(model, run_dir / "best.safetensors", metadata=wmeta)
        save_state(run_dir, model, opt, step, {**extra_meta, "best_psnr": best, "args": vars(args),
                                               "loss_acc": [loss_sum, loss_n]})

    bar = None
    if dist.main and args.progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=args.steps, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    step = start
    t0 = time.time()
    t_last, step_last = t0, start
    loss_sum, loss_n = float(loss_acc[0]), int(loss_acc[1])  # partial log interval carried over a resume
    last_val = None
    interrupted = False
    try:
        for comp, orig, _q in loader:
            lr = lr_at(step, args)
            for g in opt.param_groups:
                g["lr"] = lr
            comp = comp.to(device, non_blocking=True)
            orig = orig.to(device, non_blocking=True)
            with _autocast(device, args.amp):
                out = net(comp)
            loss = F.l1_loss(out.float(), orig)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            step += 1
            lval = float(dist.mean(loss.detach()))
            if not math.isfinite(lval):
                raise RuntimeError(f"loss became {lval} at step {step}; lower --lr or use --grad-clip")
            loss_sum += lval
            loss_n += 1
            if dist.main:
                if step % args.log_every == 0 or step == args.steps:
                    now = time.time()
                    ips = (step - step_last) * args.batch_size / max(1e-9, now - t_last)
                    log.row(step=step, epoch_images=step * args.batch_size, lr=lr, loss=loss_sum / loss_n,
                            seconds=now - t0, images_per_s=ips)
                    t_last, step_last = now, step
                    if bar is not None:
                        post = {"loss": f"{loss_sum / loss_n:.4f}", "lr": f"{lr:.2e}"}
                        if last_val is not None:
                            post["psnr"] = f"{last_val:.2f}"
                        bar.set_postfix(post, refresh=False)
                    loss_sum, loss_n = 0.0, 0
                if bar is not None:
                    bar.update(1)
            if step % args.val_every == 0 or step == args.steps:
                if dist.main:
                    is_best = False
                    if valset is not None:
                        v = validate(model, valset, device, args.amp)
                        last_val = v["val_psnr"]
                        is_best = v["val_psnr"] > best
                        if is_best:
                            best = v["val_psnr"]
                        log.row(step=step, epoch_images=step * args.batch_size, lr=lr,
                                val_psnr=v["val_psnr"], val_psnr_codec=v["val_psnr_codec"],
                                val_gain=v["val_psnr"] - v["val_psnr_codec"], seconds=time.time() - t0)
                        if bar is not None:
                            bar.set_postfix({"loss": f"{lval:.4f}", "psnr": f"{last_val:.2f}"}, refresh=True)
                        else:
                            say(f"step {step}: val PSNR {v['val_psnr']:.3f} dB "
                                f"(codec {v['val_psnr_codec']:.3f}, gain {v['val_psnr'] - v['val_psnr_codec']:+.3f})")
                    checkpoint(step, is_best or valset is None)
                dist.barrier()
            elif step == end:
                if dist.main:
                    checkpoint(step, False)
                    say(f"stopped at step {step} (--stop-at); continue with --resume")
                dist.barrier()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    if interrupted:
        if dist.main and step > start:
            checkpoint(step, False)
            say(f"interrupted: saved step {step} to {run_dir}; continue with --resume")
        if log:
            log.close()
        dist.close()
        raise KeyboardInterrupt
    if log:
        log.close()
    if dist.main:
        best_txt = f"best val PSNR {best:.3f} dB; " if math.isfinite(best) else ""
        say(f"done: {step} steps in {time.time() - t0:.1f} s; {best_txt}weights in {run_dir / 'best.safetensors'}")
    dist.close()
    return 0
