"""Compile the CUDA sources with nvcc (no GPU and no CUDA build of torch needed).

CI runs this so compile errors in the CUDA sources (every csrc/**/*.cu) surface on machines
without a GPU.  It only compiles (``nvcc -c``) against torch's headers for sm_90; linking needs
a CUDA build of torch and happens in ``setup.py`` on a CUDA machine (or with FORCE_CUDA=1).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import torch
from torch.utils.cpp_extension import include_paths


def report_resources(ptxas_log: str, pattern: str) -> None:
    """ptxas -v prints 'Compiling entry function '<mangled>'' then the figures; demangle and filter."""
    import re
    name = None
    for line in ptxas_log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            name = subprocess.run(["c++filt", m.group(1)], capture_output=True, text=True).stdout.strip() or m.group(1)
        elif name and re.search(pattern, name) and ("registers" in line or "stack frame" in line):
            print(f"{name[:150]}: {line.split(':', 1)[-1].strip()}")


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="compile csrc/**/*.cu with nvcc (no GPU needed)")
    ap.add_argument("--resources", metavar="REGEX", default=None,
                    help="print ptxas register / stack / spill figures of the kernels matching REGEX")
    ap.add_argument("--ptx", metavar="DIR", default=None, help="also write each source's PTX into DIR")
    args = ap.parse_args(argv)
    if args.ptx and os.path.exists(args.ptx) and not os.path.isdir(args.ptx):
        ap.error(f"--ptx {args.ptx} exists and is not a folder")     # before the minute of compiling
    nvcc = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                    if os.environ.get("CUDA_HOME") else None)
    if nvcc is None:
        print("check_cuda_compile: nvcc not found (set CUDA_HOME or put nvcc on PATH)", file=sys.stderr)
        return 1
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = sorted(glob.glob(os.path.join(here, "csrc", "**", "*.cu"), recursive=True))
    if not sources:
        print("check_cuda_compile: no .cu sources found under csrc/", file=sys.stderr)
        return 1
    incs = include_paths() + [sysconfig.get_paths()["include"], os.path.join(here, "csrc")]
    arch = os.environ.get("FASTRESHUFFLE_CUDA_ARCH", "90")
    # C++20: what torch's BuildExtension passes to nvcc for torch 2.13 and later (setup.py sets none)
    flags = ["-std=c++20", "-O2", "-DFASTRESHUFFLE_WITH_CUDA", f"-gencode=arch=compute_{arch},code=sm_{arch}",
             "--expt-relaxed-constexpr", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
             "-DTORCH_EXTENSION_NAME=_C", "-Xcompiler", "-fPIC"]
    abi = getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", None)
    if abi is not None:
        flags.append(f"-D_GLIBCXX_USE_CXX11_ABI={int(abi)}")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        # The CPU wheel of torch ships c10/cuda headers but not the header CMake generates for
        # CUDA builds; supply its one definition so the headers parse (compile check only).
        shim = os.path.join(tmp, "shim")
        os.makedirs(os.path.join(shim, "c10", "cuda", "impl"))
        if not any(os.path.exists(os.path.join(p, "c10", "cuda", "impl", "cuda_cmake_macros.h")) for p in incs):
            with open(os.path.join(shim, "c10", "cuda", "impl", "cuda_cmake_macros.h"), "w") as f:
                f.write("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        incs = incs + [shim]
        for src in sources:
            # named after the path under csrc/: op folders may hold sources of the same name
            stem = os.path.relpath(src, os.path.join(here, "csrc")).replace(os.sep, "__")
            obj = os.path.join(tmp, stem + ".o")
            extra = ["-Xptxas", "-v"] if args.resources else []
            cmd = [nvcc, "-c", src, "-o", obj, *flags, *extra, *[f"-I{p}" for p in incs]]
            r = subprocess.run(cmd, capture_output=True, text=True)
            status = "ok" if r.returncode == 0 else "FAILED"
            print(f"nvcc -c {os.path.relpath(src, here)} (sm_{arch}): {status}")
            if args.resources and r.returncode == 0:
                report_resources(r.stderr, args.resources)
            if args.ptx and r.returncode == 0:
                os.makedirs(args.ptx, exist_ok=True)
                ptx = os.path.join(args.ptx, stem + ".ptx")
                subprocess.run([nvcc, "-ptx", src, "-o", ptx, *flags, *[f"-I{p}" for p in incs]], check=True)
                print(f"PTX written to {ptx}")
            if r.returncode != 0:
                failed += 1
                print(r.stdout[-4000:], r.stderr[-8000:], sep="\n", file=sys.stderr)
    print(subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
