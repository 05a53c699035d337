#!/usr/bin/env bash
# GPU check of the reshuffle ops, the fused dense layer and FastReshuffleNet (H100, no internet; ~9 minutes).
#   bash benchmarks/gpu_check.sh            # results under $OUT (default ./out/gpu_check)
#   GPU_CHECK_BUDGET=540 bash benchmarks/gpu_check.sh   # seconds for the whole script (default 540)
#   GPU_CHECK_STEPS="tests_dense net_bf16" bash benchmarks/gpu_check.sh   # a subset of the steps:
#     tests_reshuffle tests_dense probe bench_reshuffle net_bf16 dense_fp16 dense_fp32 net_fp32 (default all)
# Steps, most important first; each is time-boxed against the budget and skipped when too little
# is left, so one device call always ends with a summary: editable install with the CUDA
# extension (stops here if it fails), CUDA tests (reshuffle CUDA kernel, Triton kernel natively,
# FastReshuffleNet vs fp64 reference), reshuffle / network / dense-layer benchmarks, summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BUDGET="${GPU_CHECK_BUDGET:-540}"
T0=$SECONDS
status=0
STEPS=" ${GPU_CHECK_STEPS:-tests_reshuffle tests_dense probe bench_reshuffle net_bf16 dense_fp16 dense_fp32 net_fp32} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
left() { echo $((BUDGET - (SECONDS - T0))); }
step() { echo; echo "=== $* ($(date +%T), $(left) s left)"; }
# run_step LOG MAX_SECONDS CMD...: run CMD with a timeout of min(MAX, time left - 15), log to $OUT/LOG
run_step() {
  local log="$1" max="$2"; shift 2
  local t=$(( $(left) - 15 )); [ "$t" -gt "$max" ] && t=$max
  if [ "$t" -lt 20 ]; then echo "SKIPPED (budget): $*" | tee "$OUT/$log"; status=1; return; fi
  timeout "$t" "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "step FAILED (exit $rc, 124 = timed out after ${t}s)"; status=1; }
}

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/gpu.txt"

step "build (FORCE_CUDA=1)"
t_build=$SECONDS
if ! FORCE_CUDA=1 MAX_JOBS=16 timeout 200 python -m pip install --no-build-isolation --no-deps -e . >"$OUT/install.log" 2>&1; then
  echo "install FAILED after $((SECONDS - t_build)) s (tail of $OUT/install.log):"; tail -40 "$OUT/install.log"; exit 2
fi
echo "build took $((SECONDS - t_build)) s" | tee -a "$OUT/gpu.txt"
python -c "import torch, fastreshuffle, fastreshuffle.backends as b; x = torch.arange(48., device='cuda').view(1, 3, 4, 4); \
print('fastreshuffle ok, triton path:', b.triton_enabled(), 'cuda op:', torch.equal(fastreshuffle.reshuffle_down(x, 2), torch.nn.functional.pixel_unshuffle(x, 2)))" \
  || { echo "import / first CUDA call FAILED"; exit 3; }

tests=()
want tests_reshuffle && tests+=(tests/ops/test_reshuffle.py)
want tests_dense && tests+=(tests/ops/test_dense_layer.py tests/nn/test_fast_model.py tests/nn/test_fast_compile.py)
if [ "${#tests[@]}" -gt 0 ]; then
  step "CUDA tests (${tests[*]}): reshuffle CUDA kernel, fused Triton kernel natively, FastReshuffleNet vs fp64 reference, compile/export/CUDA graphs"
  run_step pytest_cuda.txt 200 python -m pytest -q -m cuda -o addopts=-ra -p no:cacheprovider -n 8 --tb=short \
    "${tests[@]}"
fi

if want probe; then
step "Triton config probe (each candidate config in its own process; see kernels/dense_layer.py)"
run_step probe_configs.txt 90 python -m benchmarks.probe_triton_configs --set candidates --jobs 8
run_step probe_autotune.txt 60 python -m benchmarks.probe_triton_configs --set autotune --jobs 8
fi

if want bench_reshuffle; then
step "reshuffle benchmark (ours vs pixel_(un)shuffle vs copy kernel)"
run_step bench_reshuffle.txt 50 python -m benchmarks.bench_reshuffle --device cuda --repeats 50 --json "$OUT/bench_reshuffle.json"
fi

if want net_bf16; then
step "network benchmark, bf16 at 1920x1080 (target: fast >= 2x eager)"
run_step bench_network_bf16.txt 70 python -m benchmarks.bench_network --device cuda --dtype bfloat16 --sizes 1920x1080 \
  --repeats 20 --no-compile --json "$OUT/bench_network_bf16.json"
fi


if want dense_fp16; then
step "dense layer benchmark, fp16"
run_step bench_dense_fp16.txt 50 python -m benchmarks.bench_dense_layer --device cuda --dtype float16 --repeats 30 --no-compile \
  --json "$OUT/bench_dense_fp16.json"
fi

if want dense_fp32; then
step "dense layer benchmark, fp32 IEEE, with torch.compile(mode=max-autotune)"
run_step bench_dense_fp32.txt 150 python -m benchmarks.bench_dense_layer --device cuda --repeats 30 --compile-mode max-autotune \
  --json "$OUT/bench_dense_fp32.json"
fi

if want net_fp32; then
step "network benchmark, fp32 (paper preset, 768x512 and 1920x1080, with torch.compile)"
run_step bench_network.txt 240 python -m benchmarks.bench_network --device cuda --sizes 768x512,1920x1080 --repeats 20 \
  --json "$OUT/bench_network.json"
fi

step "summary"
python - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    try:
        return json.load(open(p)) if os.path.exists(p) else None
    except Exception as e:  # a step cut off mid-write
        print(f"{name}: unreadable ({e})")
        return None
d = load("bench_reshuffle.json")
if d:
    rows = d["rows"] if isinstance(d, dict) else d
    print("reshuffle (CUDA): case  layout  dtype | ours/torch | out= share of copy bandwidth | GB/s ours, copy")
    for r in rows:
        print(f"  {r['case']:<20} {r['layout']:<13} {r['dtype']:<7} | {r['speedup']:5.2f}x | {r['out_copy_ratio']:4.2f}"
              f" | {r['gbs_ours']:7.0f} {r['gbs_copy']:7.0f}")
for name in ("bench_dense_fp32.json", "bench_dense_fp16.json"):
    d = load(name)
    if not d:
        continue
    print(f"dense layer {d['dtype']}:  M  HxW  | " + " | ".join(["eager", "prealloc", "fused", "compile"]) + "  (median ms)")
    for r in d["results"]:
        v = r["variants"]
        cells = [f"{v[k]['median']:.3f}" if k in v else "-" for k in ("eager", "prealloc", "fused", "compile")]
        extra = "".join(f", x{v[k]['median'] / v['fused']['median']:.2f} vs {k}" for k in ("prealloc", "compile")
                        if k in v and "fused" in v)
        print(f"  {r['M']:>5} {r['H']}x{r['W']} | " + " | ".join(cells) +
              f"   fused x{v['fused']['speedup_vs_eager'] if 'fused' in v else float('nan'):.2f} vs eager{extra}, rel err {r['rel_err']:.1e}")
for name in ("bench_network_bf16.json", "bench_network.json"):
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
[ -f "$OUT/pytest_cuda.txt" ] && grep -E "passed|failed|error" "$OUT/pytest_cuda.txt" | tail -3
# at most a few files come back from a device call: keep the summary-level files, pack the rest
(cd "$OUT" && tar czf gpu_check_logs.tgz --exclude=gpu_check_logs.tgz ./* && \
  find . -maxdepth 1 -type f ! -name gpu_check_logs.tgz ! -name pytest_cuda.txt ! -name 'probe_*.txt' -delete)
echo; echo "gpu_check finished with status $status after $((SECONDS - T0)) s; files in $OUT (logs in gpu_check_logs.tgz)"
exit $status
