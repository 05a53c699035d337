"""Build fastreshuffle and its C++/CUDA extension ``fastreshuffle._C``.

CPU kernels are always built.  CUDA kernels are built when torch has CUDA and nvcc is
found, or when ``FORCE_CUDA=1`` (no visible GPU is needed to build).  ``FORCE_CUDA=0``
disables them.  ``TORCH_CUDA_ARCH_LIST`` defaults to ``9.0`` (H100/H200) for every CUDA build; set it for other cards.
"""
import glob
import os

from setuptools import find_packages, setup


def _ext_modules():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    # csrc/module.cpp, then one folder per op: <op>/<op>.cpp (schemas), <op>/cpu/*.cpp, <op>/cuda/*.cu
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    force = os.environ.get("FORCE_CUDA", "")
    if force == "0":
        use_cuda = False
    elif force == "1":
        use_cuda = True
    else:
        use_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    # -fno-trapping-math (as torch itself is built): lets the compiler if-convert and vectorize
    # the branch-free float kernels (bias_elu_); it changes no result.
    extra_cxx = ["-O3", "-std=c++17", "-fno-trapping-math"]
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
                                "nvcc": ["-O3", "-std=c++17", "-DFASTRESHUFFLE_WITH_CUDA"]},
            extra_link_args=openmp,
        )]
    return [CppExtension(
        "fastreshuffle._C", sources,
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args=extra_cxx + openmp,
        extra_link_args=openmp,
    )]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension
    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(
    name="fastreshuffle",
    version="0.1.0",
    description="Compression-artifact removal with the multi-scale reshuffling network on fast custom kernels",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",  # torch>=2.11 needs 3.10
    packages=find_packages(include=["fastreshuffle", "fastreshuffle.*"]) + ["fastreshuffle.kernels"],
    package_dir={"fastreshuffle.kernels": "kernels"},
    package_data={"fastreshuffle": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
    include_package_data=True,
    ext_modules=_ext_modules(),
    cmdclass=_cmdclass(),
    install_requires=[
        "torch>=2.11",  # tested: 2.13.0 (CPU, full suite) and 2.11.0+cu130 (GPU machine); see README
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
