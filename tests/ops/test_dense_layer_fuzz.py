"""Property-based tests (hypothesis) of the fused dense-layer op against its float64 reference:
the CPU path over random shapes / memory formats / slice positions, and the Triton kernel
through the Triton interpreter on tiny shapes (in a subprocess with TRITON_INTERPRET=1).

Every case poisons the target slice with NaN and checks that every other channel of the
buffer is bit-identical afterwards.  Case counts appear in pytest's terminal summary."""
import collections
import importlib.util
import os
import re

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastreshuffle.ops import dense_layer_  # noqa: E402
from test_dense_layer import TOL, check_inplace  # noqa: E402

CASES = collections.Counter()
IN_INTERP = os.environ.get("FASTRESHUFFLE_TEST_INTERP") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None

dims = dict(b=st.integers(1, 3), m=st.integers(1, 20), n=st.sampled_from([4, 8, 12]),
            k=st.integers(1, 24), h=st.integers(1, 11), w=st.integers(1, 11),
            channels_last=st.booleans(), extra=st.integers(0, 3))


@pytest.mark.skipif(IN_INTERP, reason="CPU-path fuzzing runs in the main process")
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(**dims, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_cpu_path_matches_float64(b, m, n, k, h, w, channels_last, extra, dtype):
    with torch.no_grad():
        check_inplace(lambda buf, m_, wts: dense_layer_(buf, m_, *wts), b, m, n, k, h, w, dtype,
                      channels_last=channels_last, extra=extra)
    CASES["dense layer CPU path vs float64"] += 1


@pytest.mark.skipif(not IN_INTERP, reason="runs in the TRITON_INTERPRET=1 subprocess")
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 2), m=st.integers(1, 10), n=st.sampled_from([4, 8]), k=st.integers(1, 12),
       h=st.integers(1, 7), w=st.integers(1, 9), channels_last=st.booleans(), extra=st.integers(0, 2),
       dtype=st.sampled_from([torch.float32, torch.float16]))
def test_interp_kernel_matches_float64(b, m, n, k, h, w, channels_last, extra, dtype):
    from fastreshuffle.ops.dense import _triton_kernels as _kernels
    launch = _kernels().launch_dense_layer
    cfg = dict(TILE_H=4, TILE_W=8, BLOCK_HP=32, BLOCK_M=16, BLOCK_K=16, BLOCK_N=16)

    def run(buf, m_, wts):
        launch(buf[:, :m_], buf[:, m_:m_ + wts[2].shape[0]], *wts, config=cfg)

    check_inplace(run, b, m, n, k, h, w, dtype, channels_last=channels_last, extra=extra, tol=TOL[dtype])
    CASES["dense layer Triton (interpreter) vs float64"] += 1
    print(f"\ninterp-fuzz-cases: {CASES['dense layer Triton (interpreter) vs float64']}")


@pytest.mark.skipif(IN_INTERP or not HAS_TRITON, reason="needs triton; runs the interpreter subprocess")
def test_triton_interpreter_fuzz(triton_interpreter):
    r = triton_interpreter(__file__, "interp_kernel", "-s")
    counts = [int(x) for x in re.findall(r"interp-fuzz-cases: (\d+)", r.stdout)]
    assert counts, r.stdout[-2000:]
    CASES["dense layer Triton (interpreter) vs float64"] += max(counts)


def pytest_terminal_summary_lines():
    return [f"{k}: {v} cases" for k, v in sorted(CASES.items())]
