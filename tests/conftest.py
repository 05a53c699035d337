import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Set in the child process of the ``triton_interpreter`` fixture (with TRITON_INTERPRET=1).
IN_INTERPRETER = os.environ.get("FASTRESHUFFLE_TEST_INTERP") == "1"


@pytest.fixture
def triton_interpreter():
    """``run(test_file, keyword, *pytest_args)``: run the matching tests of ``test_file`` in a fresh
    Python process with ``TRITON_INTERPRET=1`` (it must be set before triton is imported) and
    ``FASTRESHUFFLE_TEST_INTERP=1`` (those tests skip everywhere else); returns the finished
    process after asserting it passed with nothing skipped."""
    def run(test_file, keyword, *pytest_args, timeout=900):
        env = dict(os.environ, TRITON_INTERPRET="1", FASTRESHUFFLE_TEST_INTERP="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *pytest_args,
               str(test_file), "-k", keyword]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert " passed" in r.stdout and " skipped" not in r.stdout, r.stdout[-2000:]
        return r
    return run


@pytest.fixture(params=["cudnn", "triton"])
def cuda_dense_path(request):
    """Both paths of CUDA dense layers, switched for the test: cuBLAS/cuDNN (the default) and the
    fused Triton kernel (``FASTRESHUFFLE_TRITON=1``; skipped where Triton is not installed)."""
    from fastreshuffle import backends
    if request.param == "triton" and not backends.triton_available():
        pytest.skip("needs triton")
    with backends.override(triton=request.param == "triton"):
        yield request.param


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (small models on a shared machine), then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_terminal_summary(terminalreporter):
    """Print the case counts that property-based test modules collected."""
    lines = []
    for mod in list(sys.modules.values()):
        fn = getattr(mod, "pytest_terminal_summary_lines", None)
        if callable(fn) and getattr(mod, "__file__", "").startswith(__file__.rsplit("/", 1)[0]):
            lines += fn()
    if lines:
        terminalreporter.write_sep("-", "property-based cases run")
        for line in lines:
            terminalreporter.write_line(line)


# ---- CUDA faults: one illegal memory access poisons the process's CUDA context, and every
# later CUDA call in it fails with the same error.  Keep that from hiding which test faulted:
# under pytest-xdist the worker exits right after reporting the faulting test (xdist replaces
# it and reschedules the rest on a fresh context); in a single process the remaining CUDA tests
# are skipped with a pointer to the first fault.
_cuda_fault = []


def _is_cuda_fault(exc) -> bool:
    return "CUDA error" in str(exc) and type(exc).__name__ in ("AcceleratorError", "RuntimeError")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.excinfo is not None and _is_cuda_fault(call.excinfo.value):
        _cuda_fault.append(item.nodeid)


def pytest_runtest_setup(item):
    if _cuda_fault and item.get_closest_marker("cuda") is not None:
        pytest.skip(f"CUDA context poisoned by the fault in {_cuda_fault[0]}")


def pytest_runtest_logfinish(nodeid, location):
    import os
    if _cuda_fault and os.environ.get("PYTEST_XDIST_WORKER"):
        os._exit(3)
