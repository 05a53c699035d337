"""Compile the fused dense-layer Triton kernel for an sm_90 GPU on a machine without one.

The Triton interpreter (``TRITON_INTERPRET=1``) runs the kernel's Python semantics on CPU but
skips the compiler front end's rules (e.g. a ``tl.constexpr`` reassigned inside
``tl.static_range``), so a kernel that passes every interpreter test can still fail to compile
on a GPU.  This script runs the real compiler (front end, TTGIR, LLVM, ptxas) for
``GPUTarget("cuda", 90, 32)``; no GPU is needed.

    python -m tools.check_triton_compile            # each autotune config in fp32 (IEEE), fp16, bf16
    python -m tools.check_triton_compile --all      # every config x dtype (+ fp32 TF32) x RESHUFFLE x i32/i64 ints

The default run compiles every autotune config once per buffer dtype the launcher accepts:
float32 with IEEE dots (``PREC="ieee"``, the default for fp32 buffers), float16 and bfloat16
(tensor-core dots); RESHUFFLE alternates so that both modes are compiled for every dtype.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import os
import sys
import time


# (buffer dtype, PREC): what launch_dense_layer passes (fp32: IEEE unless allow_tf32)
DTYPES = (("fp32", "ieee"), ("fp16", "tf32"), ("bf16", "tf32"))
CONSTEXPRS = ("RESHUFFLE", "PREC", "TILE_H", "TILE_W", "BLOCK_HP", "BLOCK_M", "BLOCK_K", "BLOCK_N")


def signature(fn, dtype: str, ints: str = "i32") -> dict:
    """What a launch passes: every pointer of the buffer's dtype (the op requires the weights and
    biases in it), every size and stride a Python int, which Triton types i32 (i64 for a value
    of 2**31 or more: ``--all`` compiles that too)."""
    sig = {}
    for p in inspect.signature(fn.fn).parameters:
        if p in CONSTEXPRS:
            sig[p] = "constexpr"
        elif p.endswith("_ptr"):
            sig[p] = f"*{dtype}"
        else:
            sig[p] = ints
    return sig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true",
                    help="every config x dtype (+ fp32 TF32) x RESHUFFLE x i32/i64 ints")
    ap.add_argument("--arch", type=int, default=90, help="the GPU's compute capability, as in sm_90 [90]")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastreshuffle.kernels import dense_layer as dl

    target = GPUTarget("cuda", args.arch, 32)
    fn = dl._dense_layer_kernel
    n = len(dl.AUTOTUNE_CONFIGS)
    if args.all:
        jobs = [(i, dt, prec, r, ints) for i, (dt, prec), r, ints in
                itertools.product(range(n), DTYPES + (("fp32", "tf32"),), (False, True), ("i32", "i64"))]
    else:
        jobs = [(i, dt, prec, bool((i + j) % 2), "i32") for i in range(n) for j, (dt, prec) in enumerate(DTYPES)]
    failed = 0
    for i, dtype, prec, reshuffle, ints in jobs:
        cfg = dl.AUTOTUNE_CONFIGS[i]
        const = dict(cfg.kwargs, RESHUFFLE=reshuffle, PREC=prec)
        t0 = time.time()
        try:
            k = triton.compile(ASTSource(fn=fn, signature=signature(fn, dtype, ints), constexprs=const),
                               target=target,
                               options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
            info = f"ok  {time.time() - t0:5.1f}s  shared {k.metadata.shared} B"
        except Exception as e:  # noqa: BLE001  report every failing combination
            failed += 1
            info = f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
        print(f"config {i} {cfg.kwargs} warps={cfg.num_warps} ints={ints} {dtype} PREC={prec} RESHUFFLE={reshuffle}: {info}",
              flush=True)
    print(f"{len(jobs) - failed}/{len(jobs)} compiled for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
