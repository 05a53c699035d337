"""The CUDA reshuffle kernels' index logic, run on the host (no GPU needed).

``csrc/reshuffle/cuda/reshuffle_tiles.cuh`` holds everything the kernels compute per block and thread;
``tests/cuda_index_host.cpp`` runs every (block, thread) of both kernel paths on the CPU for
every element size, scale (compile-time and run-time), layout, direction and index width,
with poisoned destinations, against Eq. 3/4 evaluated with the tensors' own strides.  It is
built with the host C++ compiler and, where nvcc exists (as in CI), with nvcc as CUDA host code.
"""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(HERE, "cuda_index_host.cpp")


def _nvcc():
    if shutil.which("nvcc"):
        return shutil.which("nvcc")
    home = os.environ.get("CUDA_HOME")
    path = os.path.join(home, "bin", "nvcc") if home else None
    return path if path and os.path.exists(path) else None


COMPILERS = [
    pytest.param(lambda: shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++"), [], id="c++"),
    pytest.param(_nvcc, ["-x", "cu"], id="nvcc"),
]


@pytest.mark.parametrize("find, extra", COMPILERS)
def test_cuda_kernel_index_logic_on_host(find, extra, tmp_path):
    cxx = find()
    if cxx is None:
        pytest.skip("compiler not found")
    exe = str(tmp_path / "cuda_index_host")
    build = subprocess.run([cxx, *extra, "-std=c++17", "-O1", f"-I{os.path.join(ROOT, 'csrc')}", SRC,
                            "-o", exe], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout[-3000:]
    assert int(run.stdout.split()[1]) > 20000  # cases run
