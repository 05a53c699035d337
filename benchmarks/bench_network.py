"""Whole-network benchmark: FastReshuffleNet (float32, and bfloat16 on the AVX512-BF16 kernel)
vs ReshuffleNet eager (NCHW and channels_last) vs torch.compile(ReshuffleNet) vs the same network
exported to ONNX and run in ONNX Runtime (fp32) and OpenVINO (fp32, bf16) -- the peers are
skipped when not installed -- inference under ``torch.inference_mode``.

    python -m benchmarks.bench_network                       # CPU, paper preset, 768x512
    python -m benchmarks.bench_network --preset small --sizes 1920x1080   # the shipped models' preset
    python -m benchmarks.bench_network --device cuda --sizes 768x512,1920x1080

On CPU it also reports GFLOP/s (2 x the multiply-adds of the direct convolutions,
``ReshuffleNetConfig.macs_per_pixel``) and its share of this machine's measured peak for the
variant's precision (the best of a large square ``torch.mm`` in float32 / bfloat16; bfloat16
only on a CPU that computes it natively), and the
ratio of ours at its best precision to the fastest peer.

Time: median and 20th/80th percentiles.  Peak memory: on CUDA ``max_memory_allocated`` minus
the memory allocated before the call; on CPU each variant runs in its own subprocess that
reports its peak-RSS increase over the RSS after building model and input (first call
included, so the fast model's buffer allocation counts).

Correctness is asserted: each variant's output is compared with a float32 ``ReshuffleNet`` on
the same weights and input (TF32 off; clipped to [0, 1] for the ONNX peers, whose graph clips)
and the run exits with code 1 when one is off by more than ``ABS_TOL`` or when a variant, or a
memory-measuring subprocess, fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch


from benchmarks import peers  # noqa: E402
from benchmarks.common import call_times, cpu_flags, summarize  # noqa: E402
from fastreshuffle import FastReshuffleNet, ReshuffleNet, ReshuffleNetConfig, backends  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ["eager", "eager_cl", "compile", "ort", "ov", "ov_bf16", "fast", "fast_bf16", "fast_bf16_kernel"]
OURS = ("fast", "fast_bf16", "fast_bf16_kernel", "fast_triton")
# variants that compute in bfloat16 whatever --dtype says (float32 in and out)
BF16_VARIANTS = ("fast_bf16", "fast_bf16_kernel", "ov_bf16")
# fast_bf16_kernel: bf16 dense layers on the extension's AVX512-BF16 kernel, asked for by name
# (FASTRESHUFFLE_CPU_KERNEL=avx512); timed only on CPUs with AMX, where fast_bf16 runs them on
# the torch composition instead, its 1x1 on our AMX kernel (backends.cpu_bf16_uses_kernel,
# cpu_amx_gemm) -- elsewhere the two are the same
# CUDA also times FastReshuffleNet with its dense layers on the fused Triton kernel (FASTRESHUFFLE_TRITON=1;
# the default runs them on cuBLAS/cuDNN on the same buffers)
CUDA_VARIANTS = ["eager", "eager_cl", "compile", "fast", "fast_triton"]  # Triton last: a kernel fault ends the process


# max |variant - reference| (outputs in [0, 1]-ish, random weights), by the precision a variant
# computes in: tests/nn/test_fast_model.py's tolerances for FastReshuffleNet vs ReshuffleNet
# (CPU float32 1e-4; CUDA float32 IEEE 2e-3, float16 3e-2); TF32 (CUDA float32 while
# torch.backends.cudnn.allow_tf32, torch's default, which the fused op follows too) has fp16's
# mantissa, so fp16's; bfloat16 has 3 mantissa bits fewer than fp16: 8 x fp16's.
ABS_TOL = {"cpu-float32": 1e-4, "cuda-float32": 2e-3, "tf32": 3e-2, "float16": 3e-2, "bfloat16": 0.24}
# fast_bf16 / ov_bf16 (bf16 inside, float32 image in and out, residual in float32): measured
# 0.002-0.006 with random weights at 768x512 (paper) and 1920x1080 (small) on this kind of VM
MIXED_BF16_TOL = 0.02
_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def tolerance(device, dtype) -> float:
    if dtype == torch.float32:
        if device.type == "cuda":
            return ABS_TOL["tf32" if torch.backends.cudnn.allow_tf32 else "cuda-float32"]
        return ABS_TOL["cpu-float32"]
    return ABS_TOL[str(dtype).replace("torch.", "")]


def reference_output(preset, device, x, as_restore=False):
    """float32 ReshuffleNet (seed 0, as build()) on ``x`` upcast, TF32 off.  ``as_restore``: as
    ``restore()`` and the exported graph the peers run compute it (clipped to [0, 1]; a side under
    ``tiling.MIN_CONTEXT`` inside mirrored context, which only the smoke test's sizes have)."""
    from fastreshuffle.inference.tiling import restore_tensor
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model, _ = build("eager", preset, device, torch.float32)
        return (restore_tensor(model, x.float(), tile=0) if as_restore else model(x.float())).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


class _WithBackends(torch.nn.Module):
    """The model under ``backends.override(**switches)``: CUDA dense layers on the fused Triton
    kernel (``triton=True``), CPU bf16 ones on the extension's kernel (``cpu_kernel="avx512"``)."""
    def __init__(self, inner, **switches):
        super().__init__()
        self.inner = inner
        self.switches = switches

    def forward(self, x):
        with backends.override(**self.switches):
            return self.inner(x)


def build(variant, preset, device, dtype, shape=None):
    """(callable, memory format of its input) for ``variant``; ``shape`` (N, 3, H, W): the input
    shape the ONNX peers are compiled for."""
    torch.manual_seed(0)
    cfg = ReshuffleNetConfig.preset(preset)
    if variant in peers.PEERS:
        base = FastReshuffleNet(cfg).eval()             # same weights (seed 0), exported to ONNX
        return peers.make_peer(variant, base, shape, torch.get_num_threads()), torch.contiguous_format
    fast = variant in ("fast", "fast_triton", "fast_bf16", "fast_bf16_kernel")
    model = (FastReshuffleNet if fast else ReshuffleNet)(cfg).to(device, dtype).eval()
    if variant in ("fast_bf16", "fast_bf16_kernel"):
        model = model.to(torch.bfloat16)               # takes the float32 input (mixed precision)
    if variant == "fast_bf16_kernel":
        model = _WithBackends(model, cpu_kernel="avx512")
    if variant == "fast_triton":
        model = _WithBackends(model, triton=True)
    fmt = torch.contiguous_format
    if variant == "eager_cl":
        fmt = torch.channels_last
        model = model.to(memory_format=fmt)
    if variant == "compile":
        model = torch.compile(model)
    return model, fmt


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def mem_child(args):
    """Subprocess: peak RSS increase of one forward (CPU)."""
    device = torch.device("cpu")
    dtype = getattr(torch, args.dtype)
    w, h = args.size
    with torch.inference_mode():
        model, fmt = build(args.mem_child, args.preset, device, dtype, (args.batch, 3, h, w))
        x = torch.rand(args.batch, 3, h, w, dtype=dtype).contiguous(memory_format=fmt)
        # warm up on a small image first: loads the BLAS/oneDNN code pages and JIT kernels
        # (and compiles, for torch.compile) so that only the activations of this size count
        # (torch.compile: warm up at the measured size only, a second size would recompile)
        ws, hs = (w, h) if args.mem_child in ("compile",) + peers.PEERS else (64, 64)
        model(torch.rand(args.batch, 3, hs, ws, dtype=dtype).contiguous(memory_format=fmt))
        base = rss_mib()
        reset = reset_peak_rss()
        model(x)
        peak = read_peak_rss() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak - base}))


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux: write 5 to /proc/self/clear_refs), so that
    transient peaks before the measured call (imports, model build) do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return read_peak_rss() is not None
    except OSError:
        return False


def read_peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def cpu_peak(variant, args, size):
    cmd = [sys.executable, "-m", "benchmarks.bench_network", "--mem-child", variant, "--preset", args.preset,
           "--dtype", args.dtype, "--batch", str(args.batch), "--sizes", f"{size[0]}x{size[1]}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"memory subprocess for {variant} failed (exit {r.returncode}): "
                           f"{(r.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


def cuda_peak(model, x, device):
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model(x)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_precisions(dtype: str, variants, native_bf16: bool):
    """The precisions whose peak :func:`measured_peaks` takes for a run: the run's ``--dtype`` and
    bfloat16 where a variant computes in it, each only if :data:`PEAK_DTYPES` has it.  bfloat16
    only on a CPU that computes it natively (``backends.cpu_has_bf16``): elsewhere torch emulates
    it, the 2048^3 ``torch.mm`` takes about a minute (0.27 GFLOP/s, measured on a 2-core AVX2-only
    VM), and a share of an emulated "peak" would mean nothing."""
    wanted = [dtype] + ["bfloat16"] * any(v in BF16_VARIANTS for v in variants)
    return [p for p in dict.fromkeys(wanted) if p in PEAK_DTYPES and (p != "bfloat16" or native_bf16)]


def measured_peaks(precisions=tuple(PEAK_DTYPES), repeats=10, rounds=3, warmup=2):
    """This machine's practical peak per precision at the current thread count: the best GFLOP/s
    over ``rounds`` rounds of a 2048^3 ``torch.mm`` and of a 1024 -> 1024 channel 1x1 convolution
    on a channels-last 64x64 image (oneDNN; MKL's GEMM, which torch.mm uses in float32, runs AVX2
    code on AMD CPUs; single samples of the convolution on this shared VM read 108-212 GFLOP/s
    float32, hence the rounds).  ``repeats`` / ``warmup``: timed and untimed calls per round."""
    import torch.nn.functional as F

    out = {}
    for name in precisions:
        dt = PEAK_DTYPES[name]
        n, c, hw = 2048, 1024, 64
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        x = torch.randn(1, c, hw, hw, dtype=dt).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 1, 1, dtype=dt).contiguous(memory_format=torch.channels_last)
        best = 0.0
        for _ in range(rounds):
            best = max(best, 2 * n ** 3 / min(call_times(lambda: torch.mm(a, b), warmup=warmup, repeats=repeats)))
            with torch.inference_mode():
                t = min(call_times(lambda: F.conv2d(x, w), warmup=warmup, repeats=repeats))
            best = max(best, 2 * c * c * hw * hw / t)
        out[name] = best / 1e9
    return out


def parse_sizes(s):
    out = []
    for item in s.split(","):
        w, h = item.lower().split("x")
        out.append((int(w), int(h)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--sizes", default=None, help="WxH list, default 768x512 (+1920x1080 on CUDA)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--variants", default=None, help=f"default {','.join(VARIANTS)} (on CUDA: eager, eager_cl, compile, fast, fast_triton)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds in which the variants take turns (default 3 on CPU, 1 on CUDA)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.sizes is None:
        args.sizes = "768x512,1920x1080" if device.type == "cuda" else "768x512"
    sizes = parse_sizes(args.sizes)
    if args.mem_child:
        args.size = sizes[0]
        mem_child(args)
        return 0
    dtype = getattr(torch, args.dtype)
    repeats = args.repeats or (30 if device.type == "cuda" else 5)
    warmup = args.warmup or (5 if device.type == "cuda" else 1)
    args.rounds = args.rounds or (1 if device.type == "cuda" else 3)
    if args.variants is None:
        args.variants = ",".join(CUDA_VARIANTS if device.type == "cuda" else VARIANTS)
    variants = [v for v in args.variants.split(",") if not (args.no_compile and v == "compile")]
    for v in [v for v in variants if v in peers.PEERS]:
        if device.type != "cpu" or not peers.available(v):
            print(f"skipped {v}: {'CPU only' if device.type != 'cpu' else 'not installed'}")
            variants.remove(v)
    if "fast_bf16_kernel" in variants and not (device.type == "cpu" and backends.cpu_bf16_kernel()
                                               and not backends.cpu_bf16_uses_kernel()):
        print("skipped fast_bf16_kernel: the same as fast_bf16 here (timed on CPUs with AMX and the bf16 kernel)")
        variants.remove("fast_bf16_kernel")
    if "fast_triton" in variants and (device.type != "cuda" or not backends.triton_available()):
        print(f"skipped fast_triton: {'CUDA only' if device.type != 'cuda' else 'Triton not installed'}")
        variants.remove("fast_triton")
    print(f"device={device} dtype={args.dtype} preset={args.preset} batch={args.batch} "
          f"threads={torch.get_num_threads()} repeats={repeats}")
    if device.type == "cpu":
        print(f"cpu flags: {cpu_flags()}; bf16 dense layers: "
              f"{'our AVX512-BF16 kernel' if backends.cpu_bf16_uses_kernel() else 'the torch composition'}"
              f"{' (1x1 on our AMX kernel)' if backends.cpu_amx_gemm() else ''}")
    peaks = {}
    if device.type == "cpu":
        precs = peak_precisions(args.dtype, variants, backends.cpu_has_bf16())
        # the peak's own defaults (10 calls after 2 warm-ups per round) unless the run asks for fewer
        peaks = measured_peaks(precs, repeats=min(args.repeats or 10, 10), rounds=args.rounds,
                               warmup=min(args.warmup or 2, 2))
        if "bfloat16" in peak_precisions(args.dtype, variants, True) and "bfloat16" not in peaks:
            print("bfloat16: no peak measured (this CPU has no AVX512-BF16 / AMX: torch emulates bfloat16), "
                  "so no share of peak in bfloat16")
    if peaks:
        print("measured peak (best of torch.mm and a 1x1 conv): " +
              ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    macs_px = ReshuffleNetConfig.preset(args.preset).macs_per_pixel()
    tol = tolerance(device, dtype)
    failures = []
    all_rows = []
    for (w, h) in sizes:
        rows = {}
        built = {}
        torch.manual_seed(1)
        x0 = torch.rand(args.batch, 3, h, w, dtype=dtype)
        with torch.inference_mode():
            ref_out = reference_output(args.preset, device, x0.to(device))
            peer_out = reference_output(args.preset, device, x0.to(device), as_restore=True)
        for v in variants:
            with torch.inference_mode():
                try:
                    model, fmt = build(v, args.preset, device, dtype, tuple(x0.shape))
                    x = x0.to(device).contiguous(memory_format=fmt)
                    out = model(x)
                    want = peer_out if v in peers.PEERS else ref_out
                    err = (out.float().cpu() - want).abs().max().item()
                    del out
                except Exception as e:  # a variant that cannot run is a failed benchmark
                    failures.append(f"{v} at {w}x{h}: raised {type(e).__name__}: {str(e)[:300]}")
                    print(f"  FAILED: {failures[-1]}")
                    continue
                vtol = MIXED_BF16_TOL if v in BF16_VARIANTS and dtype == torch.float32 else tol
                if not err <= vtol:   # also NaN
                    failures.append(f"{v} at {w}x{h}: max abs error vs float32 reference {err:.2e} > {vtol:.0e}")
                    print(f"  FAILED: {failures[-1]}")
                    continue
                built[v] = (model, x, err)
        # Timing: the variants take turns for --rounds rounds, so that machine noise (a shared
        # VM, other processes) hits them alike; median / percentiles over all rounds' repeats.
        times = {v: [] for v in built}
        for _ in range(args.rounds):
            for v, (model, x, _) in built.items():
                with torch.inference_mode():
                    times[v] += call_times(lambda: model(x), device=device, warmup=warmup, repeats=repeats)
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
        gflop = 2 * macs_px * hp * wp * args.batch / 1e9
        for v, (model, x, err) in built.items():
            r = summarize(times[v], scale=1e3)  # ms
            r["max_abs_err_vs_reference"] = err
            r["gflops"] = gflop / (r["median"] / 1e3)
            prec = "bfloat16" if v in BF16_VARIANTS else args.dtype
            r["precision"] = prec
            r["peak_share"] = r["gflops"] / peaks[prec] if prec in peaks else None
            if not args.no_memory:
                with torch.inference_mode():
                    r["peak_mib"] = cuda_peak(model, x, device) if device.type == "cuda" else None
            rows[v] = r
        del built
        for v in rows:
            if not args.no_memory and device.type == "cpu":
                try:
                    rows[v]["peak_mib"] = cpu_peak(v, args, (w, h))
                except RuntimeError as e:
                    failures.append(f"{v} at {w}x{h}: {e}")
                    print(f"  FAILED: {failures[-1]}")
                    rows[v]["peak_mib"] = None
        eager_best = min((rows[v]["median"] for v in ("eager", "eager_cl") if v in rows), default=None)
        eager_mem = None
        if not args.no_memory:
            cands = [rows[v] for v in ("eager", "eager_cl") if v in rows]
            if cands:
                eager_mem = min(cands, key=lambda r: r["median"]).get("peak_mib")
        print(f"\n{w}x{h}  (ratios vs best eager: time {eager_best and round(eager_best, 2)} ms; "
              f"max|err| vs float32 reference, tolerance {tol:.0e})")
        hdr = (f"{'variant':<16} {'median ms':>10} {'p20':>9} {'p80':>9} {'speedup':>8} {'GFLOP/s':>8} "
               f"{'of peak':>8} {'peak MiB':>9} {'mem ratio':>9} {'max|err|':>9}")
        print(hdr)
        print("-" * len(hdr))
        for v, r in rows.items():
            sp = eager_best / r["median"] if eager_best else float("nan")
            pk = r.get("peak_mib")
            mr = (pk / eager_mem) if (pk is not None and eager_mem) else None
            r["speedup_vs_best_eager"] = sp
            r["mem_ratio_vs_best_eager"] = mr
            share = r["peak_share"]
            print(f"{v:<16} {r['median']:>10.2f} {r['p20']:>9.2f} {r['p80']:>9.2f} {sp:>8.2f} {r['gflops']:>8.0f} "
                  f"{'' if share is None else f'{100 * share:.0f}% ' + _SHORT[r['precision']]:>8} "
                  f"{'' if pk is None else f'{pk:.1f}':>9} {'' if mr is None else f'{mr:.2f}':>9} "
                  f"{r['max_abs_err_vs_reference']:>9.2e}")
        ours = [v for v in OURS if v in rows]
        theirs = [v for v in peers.PEERS if v in rows]
        summary = {}
        if ours and theirs:
            best = min(ours, key=lambda v: rows[v]["median"])
            peer = min(theirs, key=lambda v: rows[v]["median"])
            summary = {"ours_best": best, "fastest_peer": peer,
                       "ratio_vs_fastest_peer": rows[peer]["median"] / rows[best]["median"]}
            print(f"ours at its best ({best}) vs the fastest peer ({peer}): "
                  f"{summary['ratio_vs_fastest_peer']:.2f}x")
        if "fast" in rows and eager_best:
            print(f"fast (float32) vs best eager: {eager_best / rows['fast']['median']:.2f}x")
        all_rows.append(dict(width=w, height=h, variants=rows, **summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), dtype=args.dtype, preset=args.preset, batch=args.batch,
                           cpu_flags=cpu_flags() if device.type == "cpu" else None, peaks=peaks,
                           results=all_rows, failures=failures), f, indent=1)
    if failures:
        print(f"{len(failures)} FAILED:", *failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
