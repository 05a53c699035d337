#!/usr/bin/env bash
# GPU check of the fused dense layer and FastReshuffleNet (H100, no internet; ~6-8 minutes).
#   bash benchmarks/gpu_check.sh            # results under $OUT (default ./out/gpu_check)
# Steps: editable install with the CUDA extension, CUDA tests (Triton kernel run natively),
# dense-layer and whole-network benchmarks, summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

step "build (FORCE_CUDA=1)"
if ! FORCE_CUDA=1 MAX_JOBS=16 timeout 240 pip install --no-build-isolation --no-deps -e . >"$OUT/install.log" 2>&1; then
  echo "install FAILED (tail of $OUT/install.log):"; tail -30 "$OUT/install.log"; status=1
fi
python -c "import fastreshuffle, fastreshuffle.dense_op as d; print('fastreshuffle ok, triton path:', d._HAS_TRITON)" || status=1

step "CUDA tests (reshuffle CUDA kernel, fused Triton kernel natively, FastReshuffleNet vs fp64 reference)"
timeout 240 python -m pytest -q -m cuda -o addopts=-ra -p no:cacheprovider tests/test_reshuffle_ops.py tests/test_dense_layer.py tests/test_fast_model.py \
  --junitxml="$OUT/pytest_cuda.xml" 2>&1 | tail -25 | tee "$OUT/pytest_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "reshuffle benchmark (ours vs pixel_(un)shuffle vs copy kernel)"
timeout 60 python benchmarks/bench_reshuffle.py --device cuda --repeats 50 --json "$OUT/bench_reshuffle.json" \
  2>&1 | tee "$OUT/bench_reshuffle.txt" || status=1

step "dense layer benchmark (fp32 IEEE, then fp16)"
timeout 200 python benchmarks/bench_dense_layer.py --device cuda --repeats 30 --compile-mode max-autotune \
  --json "$OUT/bench_dense_fp32.json" \
  2>&1 | tee "$OUT/bench_dense_fp32.txt" || status=1
timeout 60 python benchmarks/bench_dense_layer.py --device cuda --dtype float16 --repeats 30 --no-compile \
  --json "$OUT/bench_dense_fp16.json" 2>&1 | tee "$OUT/bench_dense_fp16.txt" || status=1

step "network benchmark (paper preset, 768x512 and 1920x1080)"
timeout 150 python benchmarks/bench_network.py --device cuda --sizes 768x512,1920x1080 --repeats 20 \
  --json "$OUT/bench_network.json" 2>&1 | tee "$OUT/bench_network.txt" || status=1
timeout 90 python benchmarks/bench_network.py --device cuda --dtype bfloat16 --sizes 1920x1080 --repeats 20 \
  --no-compile --json "$OUT/bench_network_bf16.json" 2>&1 | tee "$OUT/bench_network_bf16.txt" || status=1

step "summary"
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
for name in ("bench_dense_fp32.json", "bench_dense_fp16.json"):
    d = load(name)
    if not d:
        continue
    print(f"dense layer {d['dtype']}:  M  HxW  | " + " | ".join(["eager", "prealloc", "fused", "compile"]) + "  (median ms)")
    for r in d["results"]:
        v = r["variants"]
        cells = [f"{v[k]['median']:.3f}" if k in v else "-" for k in ("eager", "prealloc", "fused", "compile")]
        print(f"  {r['M']:>5} {r['H']}x{r['W']} | " + " | ".join(cells) +
              f"   fused x{v['fused']['speedup_vs_eager']:.2f} vs eager, rel err {r['rel_err']:.1e}")
for name in ("bench_network.json", "bench_network_bf16.json"):
    d = load(name)
    if not d:
        continue
    print(f"network (paper, {d.get('dtype', 'float32')}): size  variant  median ms  speedup  peak MiB  mem ratio")
    for r in d["results"]:
            for k, v in r["variants"].items():
                mr = v.get("mem_ratio_vs_best_eager")
                print(f"  {r['width']}x{r['height']}  {k:<9} {v['median']:>9.2f}  {v['speedup_vs_best_eager']:>6.2f}"
                      f"  {v.get('peak_mib') or 0:>8.1f}  {'' if mr is None else f'{mr:.2f}'}")
PY
echo; echo "gpu_check finished with status $status; files in $OUT"
exit $status
