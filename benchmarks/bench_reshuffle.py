"""Reshuffle ops vs torch pixel_(un)shuffle vs a plain copy of the same bytes, side by side.

    python -m benchmarks.bench_reshuffle [--device cpu|cuda] [--repeats 50] [--quick]

Prints median (20/80 percentiles) per implementation, ratios vs torch and vs the copy, and
(on CUDA) the effective bandwidth (bytes read + written / time).
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks.common import cpu_flags, fmt_time, machine_line, measure  # noqa: E402

import fastreshuffle  # noqa: E402

# (name, shape, direction, scale): shapes the network sees
CASES = [
    ("down2 1x3x2048x2048", (1, 3, 2048, 2048), "down", 2),
    ("down8 1x3x2048x2048", (1, 3, 2048, 2048), "down", 8),
    ("up2 1x1280x128x128", (1, 1280, 128, 128), "up", 2),
    ("up2 1x640x256x256", (1, 640, 256, 256), "up", 2),
]
QUICK = [
    ("down2 1x3x512x512", (1, 3, 512, 512), "down", 2),
    ("down8 1x3x512x512", (1, 3, 512, 512), "down", 8),
    ("up2 1x1280x32x32", (1, 1280, 32, 32), "up", 2),
]
TINY = [  # smoke test: every direction and scale of the table, small
    ("down2 1x3x16x24", (1, 3, 16, 24), "down", 2),
    ("down8 1x3x16x24", (1, 3, 16, 24), "down", 8),
    ("up2 1x40x4x6", (1, 40, 4, 6), "up", 2),
]


def make_input(shape, dtype, device, layout):
    if dtype.is_floating_point:
        x = torch.randn(shape, device=device, dtype=dtype)
    else:
        x = torch.randint(0, 255, shape, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def run(args):
    device = args.device
    cases = TINY if getattr(args, "tiny", False) else QUICK if args.quick else CASES
    print(f"# reshuffle benchmark — {machine_line()}; CPU flags: {cpu_flags()}")
    print(f"{'case':<22} {'layout':<13} {'dtype':<8} {'ours':>12} {'torch':>12} {'copy':>12} "
          f"{'ours/torch':>11} {'copy/ours':>10} {'ours out=':>12} {'copy_ out':>12} {'copy/ours':>10} "
          f"{'GB/s ours':>10} {'GB/s copy':>10}")
    rows = []
    for name, shape, direction, s in cases:
        for layout in ("contiguous", "channels_last"):
            for dtype in (torch.float32, torch.uint8):
                x = make_input(shape, dtype, device, layout)
                if direction == "down":
                    ours = lambda: fastreshuffle.reshuffle_down(x, s)  # noqa: E731
                    ref = lambda: F.pixel_unshuffle(x, s)  # noqa: E731
                else:
                    ours = lambda: fastreshuffle.reshuffle_up(x, s)  # noqa: E731
                    ref = lambda: F.pixel_shuffle(x, s)  # noqa: E731
                expect = ref()
                if not torch.equal(ours(), expect):
                    raise AssertionError(f"{name} {layout} {dtype}: reshuffle differs from torch")
                copy = lambda: x.clone()  # noqa: E731  same bytes read and written, allocation included
                out = ours().clone()
                dst = torch.empty_like(x)
                fn_out = fastreshuffle.reshuffle_down if direction == "down" else fastreshuffle.reshuffle_up
                ours_out = lambda: fn_out(x, s, out=out)  # noqa: E731  preallocated output
                copy_out = lambda: dst.copy_(x)  # noqa: E731  preallocated plain copy
                # interleave them so that machine noise hits them alike
                t = {"ours": [], "torch": [], "copy": [], "ours_out": [], "copy_out": []}
                for _ in range(args.rounds):
                    for key, fn in (("ours", ours), ("torch", ref), ("copy", copy),
                                    ("ours_out", ours_out), ("copy_out", copy_out)):
                        t[key].append(measure(fn, device=device, warmup=args.warmup, repeats=args.repeats))
                out.fill_(0)
                ours_out()
                if not torch.equal(out, expect):   # the out= variant timed above writes the right bits
                    raise AssertionError(f"{name} {layout} {dtype}: reshuffle with out= differs from torch")
                med = {k: sorted(r["median"] for r in v)[len(v) // 2] for k, v in t.items()}
                p20 = {k: min(r["p20"] for r in v) for k, v in t.items()}
                p80 = {k: max(r["p80"] for r in v) for k, v in t.items()}
                nbytes = 2 * x.numel() * x.element_size()
                row = dict(case=name, layout=layout, dtype=str(dtype).replace("torch.", ""),
                           ours=med["ours"], torch=med["torch"], copy=med["copy"],
                           ours_out=med["ours_out"], copy_out=med["copy_out"],
                           speedup=med["torch"] / med["ours"], copy_ratio=med["copy"] / med["ours"],
                           out_copy_ratio=med["copy_out"] / med["ours_out"],
                           gbs_ours=nbytes / med["ours_out"] / 1e9, gbs_copy=nbytes / med["copy_out"] / 1e9,
                           p20=p20, p80=p80)
                rows.append(row)
                print(f"{name:<22} {layout:<13} {row['dtype']:<8} {fmt_time(row['ours']):>12} "
                      f"{fmt_time(row['torch']):>12} {fmt_time(row['copy']):>12} {row['speedup']:>10.2f}x "
                      f"{row['copy_ratio']:>9.2f}x {fmt_time(row['ours_out']):>12} {fmt_time(row['copy_out']):>12} "
                      f"{row['out_copy_ratio']:>9.2f}x {row['gbs_ours']:>10.1f} {row['gbs_copy']:>10.1f}")
    print("ours, torch, copy (clone) allocate their output; 'ours out=' and 'copy_ out' write into a "
          "preallocated tensor.\nours/torch > 1: ours faster; copy/ours = share of plain-copy speed "
          "reached (1.0 = at the memory-bound limit); GB/s = bytes read+written / time of the out= "
          "variants; p20/p80 in --json")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of ours/torch/copy")
    p.add_argument("--quick", action="store_true", help="small shapes")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="write the rows as JSON here")
    args = p.parse_args(argv)
    try:
        rows = run(args)
    except AssertionError as e:   # a wrong result: no timing is worth printing
        print(f"FAILED: {e}")
        return 1
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
