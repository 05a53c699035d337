"""CPU figures quoted in README and docs/dense_layer.md that the other scripts do not print.

    python -m benchmarks.bench_cpu_details                  # all five parts
    python -m benchmarks.bench_cpu_details --parts gemm,layers --threads 2

Parts (each prints its own table; ``--json`` writes them all):

* ``gemm``: GFLOP/s of the 1x1 convolution read straight from the strided channel prefix of a
  channels-last block buffer, at the paper preset's shapes for a 768x512 input: the
  extension's kernel vs ``torch.mm`` (MKL) on the same strided view vs ``F.conv2d`` 1x1
  (oneDNN, which copies the prefix first).  The kernel has no 1x1-only entry point: it is timed
  as the whole fused op with N = 1 output channel, whose 3x3 part (one 16-column Winograd panel)
  adds 5-10% of the 1x1's work; only the 1x1's 2 M K flops per pixel are counted, so the
  figure is a lower bound of the GEMM's rate.
* ``layers``: one dense layer per block at 768x512 (block 0 M=704, block 1 M=464, block 2
  M=232: each block's middle layer), ms per call: the torch composition
  (``FASTRESHUFFLE_CPU_KERNEL=off``), the kernel with the direct 3x3 (algo 1), the kernel with
  Winograd (algo 0 = what runs by default).
* ``amx`` (CPUs with AMX): bf16 1x1 + bias + ELU from the strided prefix, per call, at each
  block's middle layer of ``small`` (1920x1080) and ``paper`` (768x512): the AMX kernel vs the
  composition it replaced (chunked copy + oneDNN GEMM + ``bias_elu_``) vs oneDNN's GEMM alone.
* ``pagefault``: a fresh 50 MB float32 tensor filled once (allocation + first touch: 4 KiB
  page faults unless transparent huge pages back it) vs filling the same tensor again vs a
  copy of 50 MB into a warm tensor.
* ``cache``: reshuffle_down of a uint8 1x3x256x256 image by 8 (NCHW) into a preallocated
  output, input and output in cache (384 KiB), GB/s = bytes read + written / time.

Times: median over ``--repeats`` calls after ``--warmup`` (20/80 percentiles in --json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.common import call_times, cpu_flags, machine_line, summarize

# paper preset at 768x512: (block, M, N, K, H, W) of each block's middle layer
LAYERS = [(0, 704, 64, 256, 64, 96), (1, 464, 32, 128, 128, 192), (2, 232, 16, 64, 256, 384)]
GEMMS = [(0, 704, 256, 64, 96), (0, 1216, 256, 64, 96), (1, 464, 128, 128, 192), (2, 232, 64, 256, 384)]
TINY_LAYERS = [(0, 40, 16, 32, 6, 10)]
TINY_GEMMS = [(0, 40, 32, 6, 10)]


def _weights(m, k, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(k, m, 1, 1, generator=g) / m ** 0.5, torch.randn(k, generator=g) * 0.1,
            torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5, torch.randn(n, generator=g) * 0.1)


def _buffer(c, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)


def part_gemm(args):
    from fastreshuffle import backends
    isa = backends.cpu_kernel_isa()
    print(f"\n1x1 GEMM from the strided prefix, GFLOP/s (2 M K per pixel), {torch.get_num_threads()} threads, "
          f"kernel ISA {isa} (2 = AVX-512, 1 = AVX2)")
    print("median (in brackets: at the 20th-percentile time, i.e. the less disturbed calls)")
    print(f"{'block':>5} {'M':>5} {'K':>4} {'HxW':>8} | {'kernel':>11} {'torch.mm':>11} {'conv2d':>11}")
    rows = []
    for blk, m, k, h, w in (TINY_GEMMS if args.tiny else GEMMS):
        w1, b1, _, _ = _weights(m, k, 1)
        w3, b3 = torch.randn(1, k, 3, 3) * 0.01, torch.zeros(1)
        buf = _buffer(m + 1, h, w)
        x, y = buf[:, :m], buf[:, m:]
        rows_view = x[0].permute(1, 2, 0).reshape(h * w, m)     # strided [HW, M] view, row stride M + 1
        assert rows_view.data_ptr() == x.data_ptr() and rows_view.stride() == (m + 1, 1)
        w1t = w1.reshape(k, m).t()
        flops = 2.0 * h * w * m * k
        fns = {}
        if isa:
            fns["kernel"] = lambda: torch.ops.fastreshuffle.dense_layer_cpu_(x, y, w1, b1, w3, b3)
        fns["torch.mm"] = lambda: torch.mm(rows_view, w1t)
        fns["conv2d"] = lambda: F.conv2d(x, w1, b1)
        times = {name: [] for name in fns}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name] += call_times(fn, warmup=args.warmup, repeats=args.repeats)
        row = dict(block=blk, M=m, K=k, H=h, W=w)
        for name, t in times.items():
            s = summarize(t)
            row[name] = dict(s, gflops=flops / s["median"] / 1e9, gflops_p20=flops / s["p20"] / 1e9)
        cells = [f"{row[n]['gflops']:.0f} ({row[n]['gflops_p20']:.0f})" if n in row else "-"
                 for n in ("kernel", "torch.mm", "conv2d")]
        print(f"{blk:>5} {m:>5} {k:>4} {f'{h}x{w}':>8} | {cells[0]:>11} {cells[1]:>11} {cells[2]:>11}")
        rows.append(row)
    return rows


def part_layers(args):
    from fastreshuffle import backends
    from fastreshuffle.ops import dense_layer_

    isa = backends.cpu_kernel_isa()
    print(f"\none dense layer, ms per call, {torch.get_num_threads()} threads (channels-last buffer)")
    print(f"{'block':>5} {'M':>5} {'N':>3} {'K':>4} {'HxW':>8} | {'torch':>8} {'direct':>8} {'Winograd':>9}")
    rows = []
    for blk, m, n, k, h, w in (TINY_LAYERS if args.tiny else LAYERS):
        wts = _weights(m, k, n)
        buf = _buffer(m + n, h, w)
        x, y = buf[:, :m], buf[:, m:]

        def torch_path():
            with backends.override(cpu_kernel="off"):
                dense_layer_(buf, m, *wts)

        fns = {"torch": torch_path}
        if isa:
            fns["direct"] = lambda: torch.ops.fastreshuffle.dense_layer_cpu_(x, y, *wts, isa, 1)
            fns["Winograd"] = lambda: torch.ops.fastreshuffle.dense_layer_cpu_(x, y, *wts, isa, 0)
        times = {name: [] for name in fns}
        with torch.inference_mode():
            outs = {}
            for name, fn in fns.items():        # the three give the same layer (float32 rounding)
                y.fill_(float("nan"))
                fn()
                outs[name] = y.clone()
            for name, o in outs.items():
                err = ((o - outs["torch"]).abs().max() / outs["torch"].abs().max()).item()
                if not err <= 1e-4:
                    raise AssertionError(f"block {blk}: {name} differs from the torch composition by {err:.1e}")
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name] += call_times(fn, warmup=args.warmup, repeats=args.repeats)
        row = dict(block=blk, M=m, N=n, K=k, H=h, W=w)
        row.update({name: summarize(t, scale=1e3) for name, t in times.items()})
        cells = [f"{row[c]['median']:>8.1f}" if c in row else f"{'-':>8}" for c in ("torch", "direct", "Winograd")]
        print(f"{blk:>5} {m:>5} {n:>3} {k:>4} {f'{h}x{w}':>8} | {cells[0]} {cells[1]} {cells[2]:>9}")
        rows.append(row)
    return rows


# bf16 1x1 + bias + ELU on AMX: each block's middle layer, (preset, block, M, K, H, W): `small`
# (the shipped jpeg / hevc networks) at 1920x1080, `paper` at 768x512
AMX_GEMMS = [("small", 0, 288, 128, 135, 240), ("small", 1, 136, 64, 270, 480), ("small", 2, 68, 32, 540, 960),
             ("paper", 0, 704, 256, 64, 96), ("paper", 1, 464, 128, 128, 192), ("paper", 2, 232, 64, 256, 384)]
TINY_AMX_GEMMS = [("tiny", 0, 40, 32, 6, 10)]


def part_amx(args):
    """bf16 ``elu(X W1^T + b1)`` from the strided channel prefix: our AMX kernel
    (``amx_gemm_bias_elu``, what runs on a CPU with AMX) vs the composition it replaced (the
    prefix copied in row chunks, oneDNN's GEMM, ``bias_elu_``) vs oneDNN's GEMM alone on a
    contiguous copy made beforehand (no bias, no ELU: a floor for the composition)."""
    from fastreshuffle import backends
    from fastreshuffle.ops import _dense_torch

    if not backends.cpu_amx_gemm():
        print("\namx: skipped (no AMX-BF16 tiles on this CPU, or the kernel capped)")
        return []
    print(f"\nbf16 1x1 + bias + ELU from the strided prefix, ms per call, {torch.get_num_threads()} threads")
    print(f"{'preset':>6} {'block':>5} {'M':>5} {'K':>4} {'HxW':>8} | {'AMX kernel':>10} {'composition':>11} "
          f"{'GEMM alone':>10} | {'composition / kernel':>20}")
    rows = []
    for preset, blk, m, k, h, w in (TINY_AMX_GEMMS if args.tiny else AMX_GEMMS):
        w1, b1, _, _ = _weights(m, k, 1)
        w1t, b1 = w1.reshape(k, m).t().to(torch.bfloat16), b1.to(torch.bfloat16)
        buf = _buffer(m + 1, h, w).to(torch.bfloat16)
        rows_view = buf[0, :m].permute(1, 2, 0).reshape(h * w, m)      # strided [HW, M], row stride M + 1
        assert rows_view.stride() == (m + 1, 1)
        dense = rows_view.contiguous()

        def composition():
            with backends.override(cpu_kernel="avx2"):     # (the AMX kernel off: the chunked composition)
                return _dense_torch._gemm_bias_elu(rows_view, w1t, b1)

        fns = {"AMX kernel": lambda: _dense_torch._gemm_bias_elu(rows_view, w1t, b1), "composition": composition,
               "GEMM alone": lambda: torch.mm(dense, w1t)}
        with torch.inference_mode():
            a, c = fns["AMX kernel"](), composition()
            err = (a.float() - c.float()).abs().max().item()
            if not err <= 2 ** -6 * max(1.0, c.float().abs().max().item()):
                raise AssertionError(f"{preset} block {blk}: the AMX kernel differs from the composition by {err:.2e}")
            times = {name: [] for name in fns}
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name] += call_times(fn, warmup=args.warmup, repeats=args.repeats)
        row = dict(preset=preset, block=blk, M=m, K=k, H=h, W=w)
        row.update({name: summarize(t, scale=1e3) for name, t in times.items()})
        ratio = row["composition"]["median"] / row["AMX kernel"]["median"]
        print(f"{preset:>6} {blk:>5} {m:>5} {k:>4} {f'{h}x{w}':>8} | {row['AMX kernel']['median']:>10.2f} "
              f"{row['composition']['median']:>11.2f} {row['GEMM alone']['median']:>10.2f} | {ratio:>19.2f}x")
        rows.append(row)
    return rows


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "unknown"


def part_pagefault(args):
    n = (2 ** 20 if args.tiny else 50_000_000) // 4
    mb = n * 4 / 1e6

    def fresh():
        a = torch.empty(n)
        a.fill_(1.0)
        return a

    warm = fresh()
    src, dst = fresh(), fresh()
    fns = {"fresh + fill": fresh, "fill again": lambda: warm.fill_(1.0), "copy_ (warm)": lambda: dst.copy_(src)}
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name] += call_times(fn, warmup=args.warmup, repeats=args.repeats)
    res = {name: summarize(t, scale=1e3) for name, t in times.items()}
    res["first_touch_ms"] = res["fresh + fill"]["median"] - res["fill again"]["median"]
    res["MB"] = mb
    res["thp"] = _thp_mode()
    print(f"\n{mb:.0f} MB float32 tensor, {torch.get_num_threads()} threads, transparent huge pages: {res['thp']}")
    for name in fns:
        print(f"  {name:<14} {res[name]['median']:8.2f} ms")
    print(f"  allocation + first touch (fresh + fill minus fill again): {res['first_touch_ms']:.1f} ms")
    return res


def part_cache(args):
    import fastreshuffle

    shape = (1, 3, 64, 64) if args.tiny else (1, 3, 256, 256)
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = fastreshuffle.reshuffle_down(x, 8)
    assert torch.equal(out, F.pixel_unshuffle(x, 8))
    t = []
    for _ in range(args.rounds):
        t += call_times(lambda: fastreshuffle.reshuffle_down(x, 8, out=out), warmup=args.warmup,
                        repeats=args.repeats * 20)
    s = summarize(t)
    nbytes = 2 * x.numel()
    s["gbs"] = nbytes / s["median"] / 1e9
    s["shape"] = list(shape)
    print(f"\nreshuffle_down uint8 {'x'.join(map(str, shape))} by 8, NCHW, out=, in cache "
          f"({nbytes // 1024} KiB moved), {torch.get_num_threads()} thread(s): {s['gbs']:.1f} GB/s "
          f"({s['median'] * 1e6:.1f} us)")
    return s


PARTS = {"gemm": part_gemm, "layers": part_layers, "amx": part_amx, "pagefault": part_pagefault, "cache": part_cache}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (cache part: 1 unless given)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # smoke test
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    n0 = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(), time.strftime("%Y-%m-%d"), f"CPU flags: {cpu_flags()}")
    doc = {"machine": machine_line(), "cpu_flags": cpu_flags()}
    try:
        for part in args.parts.split(","):
            if part == "cache" and not args.threads:
                torch.set_num_threads(1)
            doc[part] = PARTS[part](args)
            torch.set_num_threads(args.threads or n0)
    except AssertionError as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        torch.set_num_threads(n0)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
