"""Benchmark one dense layer: fused op vs eager (conv, elu, conv, cat) vs preallocated unfused
vs torch.compile of eager.

Shapes are those of a 1024x1024 input to the paper network:
  M=160  at 512x512 (block 2: N=16, K=64), M=640 at 256x256 (block 1: N=32, K=128),
  M=1280 at 128x128 (block 0: N=64, K=256).
``--quick`` divides the spatial size by 4 (for CPUs).

    python -m benchmarks.bench_dense_layer --quick            # CPU
    python -m benchmarks.bench_dense_layer --device cuda      # GPU (Triton kernel)

Prints median and 20th/80th percentiles (ms) per variant and the ratio eager/variant
(>1 = faster than eager); on CUDA also the peak extra memory per call.

Correctness is asserted, not only printed: before timing, every variant's output is compared
with a float32 reference (eager on float32 copies of the inputs, TF32 off) and the run stops
with exit code 1 if one is off by more than ``REL_TOL`` of the reference's largest magnitude
or if a variant raises (``--no-compile`` leaves torch.compile out explicitly).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F


from benchmarks.common import call_times, cpu_flags, machine_line, summarize  # noqa: E402
from fastreshuffle import backends  # noqa: E402
from fastreshuffle.ops import dense_layer_  # noqa: E402

SHAPES = [  # M, N, K, H, W  (1024x1024 input)
    (160, 16, 64, 512, 512),
    (640, 32, 128, 256, 256),
    (1280, 64, 256, 128, 128),
]
TINY = [(24, 8, 16, 9, 13), (40, 16, 32, 6, 7)]   # --tiny: smoke test of every code path

# max |variant - reference| / max |reference|, by the precision the variant computes in: the
# fused kernel's test tolerances against float64 (tests/ops/test_dense_layer.py: fp32 1e-5 on
# CPU, 1e-4 on CUDA; fp16 5e-3; bf16 3e-2).  TF32 (CUDA float32 while
# torch.backends.cudnn.allow_tf32, torch's default; the fused op follows the same switch) has
# fp16's 10 mantissa bits, so fp16's tolerance.
REL_TOL = {"float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 3e-2}


def precision(device, dtype) -> str:
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return str(dtype).replace("torch.", "")


def reference(x, w1, b1, w3, b3):
    """float32, TF32 off, on float32 copies of the (possibly 16-bit) inputs."""
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        f = [t.float() for t in (x, w1, b1, w3, b3)]
        return F.conv2d(F.elu(F.conv2d(f[0], f[1], f[2])), f[3], f[4], padding=1)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_mem(fn, device):
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="spatial size / 4 (CPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds in which the variants take turns (machine noise hits them alike) [3]")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode of the compiled eager variant, e.g. max-autotune [default]")
    ap.add_argument("--channels-last", action="store_true", help="channels_last buffers")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (50 if device.type == "cuda" else 10)
    warmup = args.warmup or (10 if device.type == "cuda" else 2)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    div = 4 if args.quick else 1
    shapes = TINY if args.tiny else [(m, n, k, h // div, w // div) for (m, n, k, h, w) in SHAPES]
    tol = REL_TOL[precision(device, dtype)]
    failures = []
    results = []
    print(f"# {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"device={device} dtype={args.dtype} batch={args.batch} threads={torch.get_num_threads()} "
          f"repeats={repeats} {'channels_last' if args.channels_last else 'NCHW'}")
    hdr = f"{'M':>5} {'N':>3} {'K':>4} {'HxW':>9} | {'variant':<12} {'median':>9} {'p20':>9} {'p80':>9} {'eager/x':>8} {'peakMiB':>8}"
    print(hdr)
    print("-" * len(hdr))
    for (m, n, k, h, w) in shapes:
        g = torch.Generator().manual_seed(0)
        w1 = (torch.randn(k, m, 1, 1, generator=g) / m ** 0.5).to(device, dtype)
        b1 = torch.randn(k, generator=g).to(device, dtype)
        w3 = (torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5).to(device, dtype)
        b3 = torch.randn(n, generator=g).to(device, dtype)
        x = torch.randn(args.batch, m, h, w, generator=g).to(device, dtype).contiguous(memory_format=fmt)
        buf = torch.empty(args.batch, m + n, h, w, device=device, dtype=dtype, memory_format=fmt)
        buf[:, :m].copy_(x)

        def eager():
            return torch.cat([x, F.conv2d(F.elu(F.conv2d(x, w1, b1)), w3, b3, padding=1)], 1)

        def prealloc():
            buf[:, m:].copy_(F.conv2d(F.elu(F.conv2d(buf[:, :m], w1, b1)), w3, b3, padding=1))
            return buf

        def fused():     # on CUDA the fused Triton kernel (opt-in for users: FASTRESHUFFLE_TRITON=1)
            with backends.override(triton=True):
                dense_layer_(buf, m, w1, b1, w3, b3)
            return buf

        variants = [("eager", eager), ("prealloc", prealloc), ("fused", fused)]
        if not args.no_compile:
            variants.append(("compile", torch.compile(eager, mode=args.compile_mode)))
        with torch.inference_mode():
            # correctness guard: every variant against the float32 reference, before any timing
            ref = reference(x, w1, b1, w3, b3)
            errs, ok = {}, []
            for name, fn in variants:
                try:
                    buf[:, m:].fill_(float("nan"))
                    out = fn()[:, m:]
                    errs[name] = ((out.float() - ref).abs().max() / ref.abs().max()).item()
                except Exception as e:  # a variant that cannot run is a failed benchmark
                    failures.append(f"M={m} {name}: raised {type(e).__name__}: {str(e)[:300]}")
                    continue
                if not errs[name] <= tol:   # also NaN (an output slice left unwritten)
                    failures.append(f"M={m} {name}: max rel err {errs[name]:.2e} > {tol:.0e}")
                    continue
                ok.append((name, fn))
            err = errs.get("fused", float("nan"))
            for msg in failures:
                print(f"  FAILED: {msg}")
            times = {}
            for rnd in range(args.rounds):
                for name, fn in ok:
                    times.setdefault(name, []).extend(
                        call_times(fn, device=device, warmup=warmup, repeats=repeats))
            rows = {}
            for name, fn in ok:
                rows[name] = summarize(times[name], scale=1e3)  # ms
                rows[name]["peak_mib"] = peak_mem(fn, device)
                rows[name]["rel_err"] = errs[name]
        if "eager" not in rows:
            continue
        base = rows["eager"]["median"]
        for name, r in rows.items():
            r["speedup_vs_eager"] = base / r["median"]
            pk = "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
            print(f"{m:>5} {n:>3} {k:>4} {f'{h}x{w}':>9} | {name:<12} {r['median']:>9.3f} {r['p20']:>9.3f} "
                  f"{r['p80']:>9.3f} {r['speedup_vs_eager']:>8.2f} {pk:>8}")
        print(f"{'':>24} max rel err vs float32 reference: " +
              ", ".join(f"{name} {e:.2e}" for name, e in errs.items()) + f" (tolerance {tol:.0e})")
        results.append(dict(M=m, N=n, K=k, H=h, W=w, rel_err=err, variants=rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), dtype=args.dtype, batch=args.batch, results=results,
                           failures=failures), f, indent=1)
    if failures:
        print(f"{len(failures)} variant(s) FAILED:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
