"""Build fastreshuffle and its C++/CUDA extension ``fastreshuffle._C``.

CPU kernels are always built.  CUDA kernels are built when torch has CUDA and nvcc is
found, or when ``FORCE_CUDA=1`` (no visible GPU is needed to build).  ``FORCE_CUDA=0``
disables them.  ``TORCH_CUDA_ARCH_LIST`` defaults to ``9.0`` (H100/H200) for every CUDA build; set it for other cards.

The C++ standard is the one torch's ``BuildExtension`` passes for the torch it builds against
(C++20 for torch 2.13 and later, whose headers need it), and the package then requires that torch
release (``torch>=2.13.0.dev0,<2.14.0.dev0`` for a build made with 2.13, its pre-releases and
source builds included): the extension is compiled against its
C++ ABI, and checks it as it loads (``fastreshuffle/ops/_extension.py``).
"""
import glob
import os
import re
import shutil
import sys
import sysconfig

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    """The version, written once: ``fastreshuffle/__init__.py``'s ``__version__``."""
    with open(os.path.join(HERE, "fastreshuffle", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _torch_requirement() -> str:
    """The torch release the extension is compiled against (its minor version), pre-releases,
    nightlies and source builds of it included (2.13.0a0+git..., 2.13.0.dev..., 2.13.0rc1 sort
    below 2.13 under PEP 440)."""
    import torch
    major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    return f"torch>={major}.{minor}.0.dev0,<{major}.{minor + 1}.0.dev0"


def _ext_modules():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    here = HERE
    # csrc/module.cpp, then one folder per op: <op>/<op>.cpp (schemas), <op>/cpu/*.cpp, <op>/cuda/*.cu
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    force = os.environ.get("FORCE_CUDA", "")
    if force == "0":
        use_cuda = False
    elif force == "1":
        use_cuda = True
    else:
        use_cuda = torch.version.cuda is not None and CUDA_HOME is not None
        if torch.version.cuda is not None and CUDA_HOME is None:
            print("fastreshuffle: warning: torch has CUDA but nvcc was not found (CUDA_HOME): building the CPU "
                  "kernels only; on a GPU the reshuffle ops then run torch's pixel_(un)shuffle", file=sys.stderr)
    # -fno-trapping-math (as torch itself is built): lets the compiler if-convert and vectorize
    # the branch-free float kernels (bias_elu_); it changes no result.  -g0: no debug information
    # (Python's own CFLAGS ask for it: a 17 MB extension instead of 1.6 MB).
    extra_cxx = ["-O3", "-fno-trapping-math", "-g0"]
    if os.environ.get("FASTRESHUFFLE_NATIVE", "0") == "1":
        extra_cxx.append("-march=native")
    openmp = ["-fopenmp"] if os.name != "nt" else []
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        sources += sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
        return [CUDAExtension(
            "fastreshuffle._C", sources,
            include_dirs=[os.path.join(here, "csrc")],
            extra_compile_args={"cxx": extra_cxx + openmp + ["-DFASTRESHUFFLE_WITH_CUDA"],
                                "nvcc": ["-O3", "-DFASTRESHUFFLE_WITH_CUDA"]},
            extra_link_args=openmp,
        )]
    return [CppExtension(
        "fastreshuffle._C", sources,
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args=extra_cxx + openmp,
        extra_link_args=openmp,
    )]


def _check_compiler() -> None:
    """A one-line failure when there is no C++ compiler to build the extension with (not on
    Windows, where torch finds MSVC's cl itself)."""
    if os.name == "nt":
        return
    cxx = (os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++").split()[0]
    if shutil.which(cxx) is None:
        sys.exit(f"fastreshuffle: no C++ compiler: {cxx!r} is not on PATH (install one, e.g. g++, or set CXX); "
                 "the package's C++ extension must be compiled")


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExt(BuildExtension.with_options(use_ninja=True)):
        def run(self):
            _check_compiler()
            super().run()
    return {"build_ext": BuildExt}


setup(
    name="fastreshuffle",
    version=_version(),
    description="Compression-artifact removal with the multi-scale reshuffling network on fast custom kernels",
    long_description=(open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
                      if os.path.exists(os.path.join(HERE, "README.md")) else ""),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",  # torch>=2.11 needs 3.10
    packages=find_packages(include=["fastreshuffle", "fastreshuffle.*"]) + ["fastreshuffle.kernels",
                                                                            "fastreshuffle.weights"],
    package_dir={"fastreshuffle.kernels": "kernels"},
    package_data={"fastreshuffle.weights": ["*.safetensors", "*.md"]},
    include_package_data=True,
    ext_modules=_ext_modules(),
    cmdclass=_cmdclass(),
    install_requires=[
        _torch_requirement(),  # the torch the extension is compiled against (its minor release)
        "numpy",
        "pillow>=11",  # xmp= when saving JPEG/WebP (metadata kept in outputs)
        "safetensors>=0.4",
        "tqdm",
    ],
    extras_require={
        # CUDA machines only: the fused dense-layer kernel (nothing on a CPU machine uses Triton)
        "gpu": ["triton>=3.0"],
        "triton": ["triton>=3.0"],
        "heif": ["pillow-heif>=0.16"],
        "tiff": ["tifffile"],          # 16-bit colour TIFF in and out
        "onnx": ["onnx", "onnxscript", "onnxruntime"],   # fastreshuffle export (+ running the file)
        "openvino": ["openvino"],      # the exported file in OpenVINO (benchmarks' peer)
        "plot": ["matplotlib"],
        "demo": ["scikit-image"],
        # triton too: the tests run the Triton kernels on CPU through its interpreter;
        # pytest-xdist for benchmarks/gpu_check.sh's parallel CUDA tests (-n 8)
        "test": ["pytest", "pytest-benchmark", "pytest-xdist", "hypothesis", "scikit-image", "pillow-heif>=0.16", "matplotlib",
                 "tifffile", "triton>=3.0", "onnx", "onnxscript", "onnxruntime", "openvino"],
        # everything a CPU machine uses; add [gpu] on a CUDA machine
        "all": ["pillow-heif>=0.16", "matplotlib", "scikit-image", "tifffile"],
    },
    entry_points={"console_scripts": ["fastreshuffle=fastreshuffle.cli:console"]},
    zip_safe=False,
)
