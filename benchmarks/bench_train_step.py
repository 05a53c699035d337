"""One training step (forward, L1 loss, backward, Adam), per preset and precision / layout, CPU.

    python -m benchmarks.bench_train_step                    # small and paper, batch 16 of 96x96, 2 threads
    python -m benchmarks.bench_train_step --presets small --rounds 5 --json step.json

Variants (all from the same initial weights, on the same batch):

``fp32``       FastReshuffleNet, float32, NCHW input: the train path before ``--precision``
``fp32_cl``    ReshuffleNet (plain torch ops), float32, channels-last weights and input
``bf16_cl``    ReshuffleNet, channels-last, ``torch.autocast("cpu", bfloat16)``, float32 master weights
``bf16_fast``  FastReshuffleNet under the same autocast (its fused dense blocks cast explicitly)

Correctness first, on the initial weights: every variant's loss against ``fp32``'s (relative
difference within ``LOSS_RTOL``: 1e-5 in float32, 1e-2 in bfloat16) and the cosine similarity of
its whole gradient (at least ``GRAD_COS``), and a dtype audit: every convolution / GEMM that
runs in the step (forward and backward, fused dense-layer ops included) is counted by dtype, and a
bf16 variant must run all of them in bfloat16, a float32 one all in float32.  A variant that fails
a check or raises makes the script exit with 1.

Timing: the variants take turns (``--rounds`` rounds of ``--repeats`` steps each, after
``--warmup`` steps each); median and 20th/80th percentiles per variant, ratios to ``fp32``.
The first line gives the CPU's SIMD flags (bf16 needs ``avx512_bf16`` or AMX to be fast) and
which variant ``fastreshuffle train --precision auto`` runs on this machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import call_times, cpu_flags, machine_line, summarize
from fastreshuffle import FastReshuffleNet, ReshuffleNet, ReshuffleNetConfig

VARIANTS = ["fp32", "fp32_cl", "bf16_cl", "bf16_fast"]
BASELINE = "fp32"
# |loss - fp32 loss| / fp32 loss at the initial weights; bf16 keeps 8 mantissa bits (rel. 2^-8 per
# rounding) but the L1 loss averages them over the batch: measured 1e-4..3e-3 here
LOSS_RTOL = {"fp32": 1e-5, "bf16": 1e-2}
# cosine similarity of the flattened gradient with fp32's
GRAD_COS = {"fp32": 0.9999, "bf16": 0.98}

# ops that do a layer's arithmetic (convolutions, GEMMs, the fused dense layer ops)
_HEAVY = ("convolution", "convolution_backward", "mm", "addmm", "bmm", "dense_layer", "dense_layer_",
          "dense_layer_cpu_", "dense_layer_reshuffle_", "mkldnn_convolution")


class DtypeAudit(TorchDispatchMode):
    """Counts the convolution / GEMM calls that run, by the dtype of their first tensor input."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _HEAVY:
            t = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if t is not None:
                self.counts[str(t.dtype).replace("torch.", "")] += 1
        return func(*args, **(kwargs or {}))


def precision_of(variant: str) -> str:
    return "bf16" if variant.startswith("bf16") else "fp32"


class Step:
    """One variant: its model (from ``state``), Adam, and the step on a fixed batch."""

    def __init__(self, variant: str, cfg: ReshuffleNetConfig, state, x, target, lr=1e-4):
        self.variant = variant
        fast = variant in ("fp32", "bf16_fast")
        model = (FastReshuffleNet if fast else ReshuffleNet)(cfg)
        model.load_state_dict(state)
        self.cl = variant.endswith("_cl")
        if self.cl:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.model, self.x, self.target = model.train(), x, target
        self.bf16 = precision_of(variant) == "bf16"
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss(self):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            out = self.model(self.x)
        return F.l1_loss(out.float(), self.target)

    def __call__(self):
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def grad_at_start(self):
        """(loss, flattened gradient, dtype audit) at the current weights, no optimizer step."""
        self.opt.zero_grad(set_to_none=True)
        with DtypeAudit() as audit:
            loss = self.loss()
            loss.backward()
        g = torch.cat([p.grad.reshape(-1).double() for p in self.model.parameters()])
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), g, dict(audit.counts)


def check(variant, loss, grad, audit, ref_loss, ref_grad):
    """-> (row of figures, list of problems)."""
    prec = precision_of(variant)
    rel = abs(loss - ref_loss) / abs(ref_loss)
    cos = float(F.cosine_similarity(grad, ref_grad, dim=0))
    want = "bfloat16" if prec == "bf16" else "float32"
    problems = []
    if not rel <= LOSS_RTOL[prec]:
        problems.append(f"loss {loss:.6g} vs fp32 {ref_loss:.6g}: relative difference {rel:.2e} > {LOSS_RTOL[prec]:.0e}")
    if not cos >= GRAD_COS[prec]:
        problems.append(f"gradient cosine similarity with fp32 {cos:.6f} < {GRAD_COS[prec]}")
    if not audit or set(audit) != {want}:
        problems.append(f"convolutions / GEMMs ran in {audit or 'nothing'}, expected all in {want}")
    return {"loss": loss, "loss_rel_diff": rel, "grad_cos": cos, "op_dtypes": audit}, problems


def run_preset(preset, args, failures):
    cfg = ReshuffleNetConfig.preset(preset)
    torch.manual_seed(0)
    init = ReshuffleNet(cfg)
    # a non-trivial start: random tail (the train default zeroes it, which makes the first
    # gradients of everything but the tail zero)
    state = {k: v.clone() for k, v in init.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    target = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    x = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    print(f"\n== {preset} preset: batch {args.batch} of {args.patch}x{args.patch}, {torch.get_num_threads()} threads")
    steps, rows = {}, {}
    ref = None
    for v in args.variants:
        try:
            steps[v] = Step(v, cfg, state, x, target)
            loss, grad, audit = steps[v].grad_at_start()
        except Exception as e:  # a variant that raises is a failure, not a crash of the whole run
            failures.append(f"{preset} {v}: raised {type(e).__name__}: {e}")
            print(f"  {v:<10} FAILED: raised {type(e).__name__}: {e}")
            steps.pop(v, None)
            continue
        if ref is None:
            if v != BASELINE:
                raise SystemExit(f"the first variant must be {BASELINE}")
            ref = (loss, grad)
        row, problems = check(v, loss, grad, audit, *ref)
        rows[v] = row
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"  {v:<10} loss {loss:.6f} (rel. diff {row['loss_rel_diff']:.1e}), grad cos {row['grad_cos']:.6f}, "
              f"convs/GEMMs by dtype {audit}: {status}")
        if problems:
            failures.append(f"{preset} {v}: " + "; ".join(problems))
            steps.pop(v)
    times = {v: [] for v in steps}
    for v, fn in steps.items():
        for _ in range(args.warmup):
            fn()
    for _ in range(args.rounds):
        for v, fn in steps.items():
            times[v] += call_times(fn, warmup=0, repeats=args.repeats)
    base = summarize(times[BASELINE])["median"] if BASELINE in times else None
    print(f"  {'variant':<10} {'median':>10} {'p20':>10} {'p80':>10}  vs {BASELINE}")
    for v in steps:
        s = summarize(times[v])
        rows[v].update({k: s[k] for k in ("median", "p20", "p80", "n")})
        ratio = base / s["median"] if base else float("nan")
        rows[v]["speedup_vs_fp32"] = ratio
        print(f"  {v:<10} {s['median'] * 1e3:8.1f} ms {s['p20'] * 1e3:8.1f} ms {s['p80'] * 1e3:8.1f} ms  {ratio:5.2f}x")
    return {"preset": preset, "batch": args.batch, "patch": args.patch, "variants": rows}


def train_variant(device="cpu") -> str:
    """The variant ``fastreshuffle train --precision auto`` runs here."""
    from fastreshuffle.backends import training_precision
    from fastreshuffle.inference.loading import model_class

    prec = training_precision("auto", device)
    cls = model_class(device, training=True, precision=prec)
    return {("fp32", True): "fp32", ("fp32", False): "fp32_cl", ("bf16", False): "bf16_cl",
            ("bf16", True): "bf16_fast"}[(prec, issubclass(cls, FastReshuffleNet))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,paper")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"default {','.join(VARIANTS)}; {BASELINE} first")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="steps per variant before timing [2]")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of taking turns [3]")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per variant per round [3]")
    ap.add_argument("--tiny", action="store_true", help="tiny preset, batch 2 of 32x32 (smoke test)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.presets, args.batch, args.patch = "tiny", 2, 32
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants or args.variants[0] != BASELINE:
        ap.error(f"--variants: from {', '.join(VARIANTS)}, {BASELINE} first")
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    auto = train_variant()
    print(f"{machine_line()}\nCPU flags: {flags}\n`train --precision auto` here runs: {auto}")
    failures = []
    results = [run_preset(p.strip(), args, failures) for p in args.presets.split(",") if p.strip()]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "cpu_flags": flags, "train_auto": auto, "threads": args.threads,
                       "results": results, "failures": failures}, f, indent=1)
    if failures:
        print(f"\n{len(failures)} FAILED:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
