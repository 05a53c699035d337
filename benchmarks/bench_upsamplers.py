"""Public super-resolution upsampling paths before and after ``fastreshuffle.replace_pixel_shuffle``.

    python -m benchmarks.bench_upsamplers                 # CPU (and CUDA when available)
    python -m benchmarks.bench_upsamplers --quick         # small shapes, one round
    python -m benchmarks.bench_upsamplers --devices cpu --threads 1

Models, built from their papers' descriptions (random weights; only speed and bit-equality matter):

* ESPCN (Shi et al., CVPR 2016), x3: conv5x5 3->64, tanh, conv3x3 64->32, tanh,
  conv3x3 32->3*r^2, PixelShuffle(r), on a 3-channel low-resolution image;
* EDSR x4 upsampler (Lim et al., CVPRW 2017): conv3x3 64->256, PixelShuffle(2),
  conv3x3 64->256, PixelShuffle(2), on the 64-channel body features, then conv3x3 64->3;
* Real-ESRGAN input (Wang et al., ICCVW 2021): the x2 / x1 models' PixelUnshuffle(2) / (4) of the
  RGB input, then conv_first (conv3x3 to 64 channels);
* the same pixel (un)shuffles alone at those shapes, to show the op's share.

"torch" is the model as built; "fast" a deep copy after ``replace_pixel_shuffle``.  Outputs are
asserted bit-identical before any timing; a variant that raises ends the run with exit code 1.
The variants take turns for ``--rounds`` rounds (machine noise hits both alike); median and
20/80 percentiles over all rounds, and the speedup torch/fast.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from benchmarks.common import call_times, cpu_flags, machine_line, summarize

import fastreshuffle


def espcn(r: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), nn.Tanh(),
                         nn.Conv2d(64, 32, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(32, 3 * r * r, 3, padding=1), nn.PixelShuffle(r))


def edsr_x4_upsampler(feats: int = 64) -> nn.Module:
    return nn.Sequential(nn.Conv2d(feats, 4 * feats, 3, padding=1), nn.PixelShuffle(2),
                         nn.Conv2d(feats, 4 * feats, 3, padding=1), nn.PixelShuffle(2),
                         nn.Conv2d(feats, 3, 3, padding=1))


def realesrgan_input(scale: int) -> nn.Module:
    """Real-ESRGAN's RRDBNet for output scale 2 (scale=2) or 1 (scale=4): pixel_unshuffle, conv_first."""
    return nn.Sequential(nn.PixelUnshuffle(scale), nn.Conv2d(3 * scale * scale, 64, 3, padding=1))


# (name, model factory, input shape (N, C, H, W) full / --quick / --tiny)
CASES: List[Tuple[str, Callable[[], nn.Module], Dict[str, Tuple[int, ...]]]] = [
    ("ESPCN x3", lambda: espcn(3),
     dict(full=(1, 3, 320, 240), quick=(1, 3, 96, 96), tiny=(1, 3, 8, 6))),
    ("EDSR x4 upsampler", edsr_x4_upsampler,
     dict(full=(1, 64, 128, 128), quick=(1, 64, 48, 48), tiny=(1, 64, 4, 6))),
    ("Real-ESRGAN x2 input (unshuffle 2)", lambda: realesrgan_input(2),
     dict(full=(1, 3, 512, 512), quick=(1, 3, 128, 128), tiny=(1, 3, 8, 8))),
    ("Real-ESRGAN x1 input (unshuffle 4)", lambda: realesrgan_input(4),
     dict(full=(1, 3, 512, 512), quick=(1, 3, 128, 128), tiny=(1, 3, 8, 8))),
    ("PixelShuffle(2) alone, EDSR shape", lambda: nn.Sequential(nn.PixelShuffle(2)),
     dict(full=(1, 256, 128, 128), quick=(1, 256, 48, 48), tiny=(1, 256, 4, 6))),
    ("PixelShuffle(3) alone, ESPCN shape", lambda: nn.Sequential(nn.PixelShuffle(3)),
     dict(full=(1, 27, 320, 240), quick=(1, 27, 96, 96), tiny=(1, 27, 8, 6))),
    ("PixelUnshuffle(4) alone, 512x512", lambda: nn.Sequential(nn.PixelUnshuffle(4)),
     dict(full=(1, 3, 512, 512), quick=(1, 3, 128, 128), tiny=(1, 3, 8, 8))),
]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = a.detach().contiguous().cpu(), b.detach().contiguous().cpu()
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.numel() else True


def run_case(name, factory, shape, device, args) -> Dict[str, Dict[str, float]]:
    torch.manual_seed(0)
    ref = factory().to(device).eval()
    fast = copy.deepcopy(ref)
    changes = fastreshuffle.replace_pixel_shuffle(fast)
    if not changes:
        raise RuntimeError(f"{name}: nothing was replaced")
    x = torch.rand(shape, device=device)
    with torch.inference_mode():
        a, b = ref(x), fast(x)
    if not same_bits(a, b):
        raise AssertionError(f"{name} on {device}: outputs differ after replace_pixel_shuffle")
    variants = {"torch": ref, "fast": fast}
    times: Dict[str, List[float]] = {v: [] for v in variants}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for v, m in variants.items():
                times[v] += call_times(lambda: m(x), device=device, warmup=args.warmup,
                                       repeats=args.repeats)
    return {v: summarize(t, scale=1e3) for v, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default=None, help="comma list, default cpu (+cuda when available)")
    ap.add_argument("--quick", action="store_true", help="smaller shapes, one round, fewer repeats")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # smoke test: tiny shapes
    ap.add_argument("--rounds", type=int, default=None, help="rounds of taking turns (default 3, quick 1)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cases", default=None, help="substring filter on the case names")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    args.rounds = args.rounds or (1 if size != "full" else 3)
    args.repeats = args.repeats or {"tiny": 2, "quick": 10, "full": 30}[size]
    args.warmup = args.warmup if args.warmup is not None else (1 if size == "tiny" else 3)
    devices = (args.devices.split(",") if args.devices
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(machine_line())
    print(f"CPU flags: {cpu_flags()}")
    print(f"shapes={size} rounds={args.rounds} repeats={args.repeats} warmup={args.warmup}")
    failed = False
    for device in devices:
        print(f"\n{device}")
        hdr = f"{'case':<38} {'input':<18} {'torch ms':>9} {'fast ms':>9} {'p20-p80 fast':>15} {'speedup':>8}"
        print(hdr)
        print("-" * len(hdr))
        for name, factory, shapes in CASES:
            if args.cases and args.cases not in name:
                continue
            shape = shapes[size]
            try:
                r = run_case(name, factory, shape, device, args)
            except Exception as e:   # report, keep going, exit non-zero at the end
                print(f"{name:<38} FAILED: {type(e).__name__}: {str(e)[:300]}")
                failed = True
                continue
            t, f = r["torch"], r["fast"]
            print(f"{name:<38} {'x'.join(map(str, shape)):<18} {t['median']:>9.3f} {f['median']:>9.3f} "
                  f"{f['p20']:>7.3f}-{f['p80']:<7.3f} {t['median'] / f['median']:>8.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
