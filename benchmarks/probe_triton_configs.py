"""Probe each fused dense-layer Triton config on a GPU, one process per (config, dtype).

A config whose compiled code faults (illegal memory access) poisons the whole CUDA context, so
each probe runs in its own process; the parent prints one line per probe: ok (with the error
vs a float64 reference and the median time), FAIL (wrong result) or CRASH (the fault).

    python -m benchmarks.probe_triton_configs                 # kernels.dense_layer.CANDIDATE_CONFIGS
    python -m benchmarks.probe_triton_configs --set autotune  # the configs autotuning uses
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))

# (B, M, N-from-config, K = 4N, H, W): the shape whose 16-bit autotuning faulted, N = BLOCK_N
SHAPE = dict(B=2, M=200, H=33, W=47)
TOL = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


def child(set_name: str, idx: int, dtype_name: str, channels_last: bool, device: str = "cuda") -> dict:
    import torch
    import triton.testing

    from fastreshuffle.ops import _dense_torch
    from fastreshuffle.kernels import dense_layer as dl

    cfg = (dl.CANDIDATE_CONFIGS if set_name == "candidates" else dl.AUTOTUNE_CONFIGS)[idx]
    meta = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    dtype = getattr(torch, dtype_name)
    n = max(16, cfg.kwargs["BLOCK_N"])
    b, m, h, w, k = SHAPE["B"], SHAPE["M"], SHAPE["H"], SHAPE["W"], 4 * n
    g = torch.Generator().manual_seed(idx)
    w1 = torch.randn(k, m, 1, 1, generator=g) / m ** 0.5
    b1 = torch.randn(k, generator=g) * 0.5
    w3 = torch.randn(n, k, 3, 3, generator=g) / (9 * k) ** 0.5
    b3 = torch.randn(n, generator=g) * 0.1
    x = torch.randn(b, m, h, w, generator=g)
    ref = _dense_torch.reference_dense_layer(*(t.double() for t in (x, w1, b1, w3, b3)))
    dev = [t.to(device, dtype) for t in (w1, b1, w3, b3)]
    buf = torch.full((b, m + n + 3, h, w), float("nan"), device=device, dtype=dtype)
    if channels_last:
        buf = buf.contiguous(memory_format=torch.channels_last)
    buf[:, :m] = x.to(device, dtype)

    def run():
        dl.launch_dense_layer(buf[:, :m], buf[:, m:m + n], *dev, config=meta)

    run()
    if device == "cuda":
        torch.cuda.synchronize()
    out = buf[:, m:m + n].double().cpu()
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    ok = bool(torch.isfinite(out).all()) and err <= TOL[dtype_name] and bool(torch.isnan(buf[:, m + n:]).all())
    ms = triton.testing.do_bench(run, warmup=5, rep=20, return_mode="median") if ok and device == "cuda" else None
    return dict(ok=ok, err=err, ms=ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=["candidates", "autotune"], default="candidates")
    ap.add_argument("--dtypes", default="float16,bfloat16,float32")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--child", nargs=4, metavar=("SET", "IDX", "DTYPE", "CL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        s, i, d, cl = args.child
        print(json.dumps(child(s, int(i), d, cl == "1")))
        return 0
    from fastreshuffle.kernels import dense_layer as dl
    configs = dl.CANDIDATE_CONFIGS if args.set == "candidates" else dl.AUTOTUNE_CONFIGS
    probes = [(i, d, cl) for i in range(len(configs)) for d in args.dtypes.split(",") for cl in (0, 1)]

    def run(p):
        i, d, cl = p
        cmd = [sys.executable, "-m", "benchmarks.probe_triton_configs", "--child", args.set, str(i), d, str(cl)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=os.path.dirname(HERE))
        except subprocess.TimeoutExpired:
            return p, "TIMEOUT", ""
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1]
            return p, "CRASH", tail[:160]
        res = json.loads(r.stdout.strip().splitlines()[-1])
        tag = "ok" if res["ok"] else "FAIL"
        ms = f"{res['ms']:.3f} ms" if res["ms"] is not None else ""
        return p, tag, f"rel err {res['err']:.1e} {ms}"

    bad = 0
    with ThreadPoolExecutor(args.jobs) as pool:    # printed as each finishes: a step cut off by its
        for fut in as_completed([pool.submit(run, p) for p in probes]):   # time box keeps what ran
            (i, d, cl), tag, info = fut.result()
            c = configs[i]
            bad += tag != "ok"
            print(f"{args.set}[{i}] {c.kwargs} warps={c.num_warps} stages={c.num_stages} {d:<8} "
                  f"{'CL  ' if cl else 'NCHW'}: {tag} {info}", flush=True)
    print(f"{len(probes) - bad}/{len(probes)} probes ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
