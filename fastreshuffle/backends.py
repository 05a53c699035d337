"""Every run-time switch of the package, and the device resolver, in one place.

Switches (environment variables, read once, on first use -- when ``ops.dense`` is imported, not
by ``import fastreshuffle``):

``FASTRESHUFFLE_TRITON=1``
    CUDA dense layers run on the fused Triton kernel (where Triton is installed) instead of
    cuBLAS/cuDNN on the same buffers, the default since 2026-12-05: on an H200 (2026-12-04,
    docs/gpu_runs.md) the `paper` network in bf16 at 1920x1080 took 43.9 ms with the Triton kernel
    and 7.6 ms with cuDNN, and the fused layer alone was slower than eager in fp16 and fp32.
``FASTRESHUFFLE_CPU_KERNEL=off|avx2|avx512``
    Caps the instruction set of the extension's CPU dense-layer kernel (default: the best the CPU
    has; ``off`` runs the torch composition).  bfloat16 layers on a CPU with AMX-BF16 run the torch
    composition, its 1x1 part on the extension's AMX kernel (not below ``avx512``), unless
    ``avx512`` is asked for by name (:func:`cpu_bf16_uses_kernel`).

:func:`override` changes them for a block of code (this thread / task only), e.g. in
benchmarks and tests::

    with fastreshuffle.backends.override(triton=False, cpu_kernel="avx2"):
        net(x)

Build-time switches (``FORCE_CUDA``, ``TORCH_CUDA_ARCH_LIST``, ``FASTRESHUFFLE_NATIVE``) live in
``setup.py``.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib.util
import os
from typing import Iterator, Optional

__all__ = ["Settings", "settings", "override", "triton_available", "triton_enabled", "check_threads",
           "cpu_kernel_isa", "cpu_bf16_kernel", "cpu_bf16_uses_kernel", "cpu_amx_gemm", "cpu_fast_bf16", "cpu_has_bf16",
           "cpu_has_amx", "CPU_KERNEL_ISAS", "resolve_device",
           "PRECISIONS", "resolve_precision", "TRAINING_PRECISIONS", "training_precision"]

TRITON_ENV = "FASTRESHUFFLE_TRITON"
CPU_KERNEL_ENV = "FASTRESHUFFLE_CPU_KERNEL"
# name -> instruction-set level of the CPU dense-layer kernel (0 = off: torch composition)
CPU_KERNEL_ISAS = {"off": 0, "avx2": 1, "avx512": 2}
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The switches in force: ``triton`` (bool), ``cpu_kernel`` (None = best available, or a key
    of :data:`CPU_KERNEL_ISAS`)."""
    triton: bool = False
    cpu_kernel: Optional[str] = None


def _parse_cpu_kernel(value: Optional[str], source: str) -> Optional[str]:
    if value is None:
        return None
    v = str(value).strip().lower()
    if not v:
        return None
    if v not in CPU_KERNEL_ISAS:
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(CPU_KERNEL_ISAS)}")
    return v


@functools.lru_cache(maxsize=None)
def _env_triton() -> bool:
    value = os.environ.get(TRITON_ENV, "").strip().lower()
    return bool(value) and value not in _FALSE    # unset or empty: the default, off


@functools.lru_cache(maxsize=None)
def _env_cpu_kernel() -> Optional[str]:
    return _parse_cpu_kernel(os.environ.get(CPU_KERNEL_ENV), CPU_KERNEL_ENV)


@functools.lru_cache(maxsize=None)
def _from_environment() -> Settings:
    return Settings(triton=_env_triton(), cpu_kernel=_env_cpu_kernel())


_override: contextvars.ContextVar[Optional[Settings]] = contextvars.ContextVar("fastreshuffle_backends",
                                                                               default=None)


def settings() -> Settings:
    """The switches in force here: an active :func:`override`, else the environment."""
    o = _override.get()
    return o if o is not None else _from_environment()


@contextlib.contextmanager
def override(*, triton: Optional[bool] = None, cpu_kernel: Optional[str] = None) -> Iterator[Settings]:
    """Within this block (this thread / task), use these switches; ``None`` keeps the current one."""
    cur = _override.get()      # (a switch given here is not read from the environment, which may be bad)
    new = Settings(triton=(cur.triton if cur else _env_triton()) if triton is None else bool(triton),
                   cpu_kernel=((cur.cpu_kernel if cur else _env_cpu_kernel()) if cpu_kernel is None
                               else _parse_cpu_kernel(cpu_kernel, "cpu_kernel")))
    token = _override.set(new)
    try:
        yield new
    finally:
        _override.reset(token)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton is installed (it is imported only when a CUDA dense layer first runs)."""
    return importlib.util.find_spec("triton") is not None


def triton_enabled() -> bool:
    """Whether CUDA dense layers use the fused Triton kernel."""
    return triton_available() and settings().triton


@functools.lru_cache(maxsize=None)
def _best_cpu_isa() -> int:
    import torch

    from .ops import _extension  # noqa: F401  (loads fastreshuffle._C)
    return int(torch.ops.fastreshuffle.dense_cpu_isa())


def cpu_kernel_isa() -> int:
    """Instruction set of the extension's CPU dense-layer kernel: 2 AVX-512, 1 AVX2 + FMA, 0 none
    (no such CPU, or turned off): then the torch composition runs."""
    cap = settings().cpu_kernel
    best = _best_cpu_isa()
    return best if cap is None else min(best, CPU_KERNEL_ISAS[cap])


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16_kernel() -> bool:
    import torch

    from .ops import _extension  # noqa: F401  (loads fastreshuffle._C)
    return bool(torch.ops.fastreshuffle.dense_cpu_bf16())


def cpu_bf16_kernel() -> bool:
    """Whether the extension's kernel can run bfloat16 dense layers here (AVX512-BF16: vdpbf16ps,
    float32 accumulation): the CPU has it and the kernel is not capped below AVX-512.  Whether
    it does is :func:`cpu_bf16_uses_kernel`."""
    return cpu_kernel_isa() == CPU_KERNEL_ISAS["avx512"] and _cpu_has_bf16_kernel()


def cpu_bf16_uses_kernel() -> bool:
    """The one decision of where bfloat16 dense layers run on CPU: the extension's ``vdpbf16ps``
    kernel (:func:`cpu_bf16_kernel`), except on a CPU with AMX-BF16 (:func:`cpu_has_amx`), where the
    torch composition runs them -- its 1x1 convolution + bias + ELU on the extension's AMX kernel
    (:func:`cpu_amx_gemm`), its 3x3 convolution on oneDNN's, both on AMX tiles -- unless the
    kernel is asked for by name (``FASTRESHUFFLE_CPU_KERNEL=avx512``,
    ``override(cpu_kernel="avx512")``).  On a 2-core Xeon VM with AMX (2026-12-06, ``python -m
    benchmarks.bench_network``, 2 threads) the composition ran the ``paper`` network 3.7x and
    ``small`` 2.0x as fast as the kernel, whose vdpbf16ps does 16 x 2 multiply-adds per
    instruction where an AMX tile multiply does 16 x 16 x 32."""
    if not cpu_bf16_kernel():
        return False
    return settings().cpu_kernel == "avx512" or not cpu_has_amx()


def cpu_amx_gemm() -> bool:
    """Whether bfloat16 dense layers on the torch composition take their 1x1 convolution + bias +
    ELU from the extension's AMX kernel (``amx_gemm_bias_elu``: the channel prefix read in place,
    the epilogue fused) instead of torch's GEMM: the CPU has AMX-BF16, Linux gives the process the
    tiles, and the CPU kernel is not capped below AVX-512 (``FASTRESHUFFLE_CPU_KERNEL=avx2|off``
    leave torch's GEMM)."""
    return cpu_kernel_isa() == CPU_KERNEL_ISAS["avx512"] and cpu_has_amx()


def cpu_fast_bf16() -> bool:
    """Whether bfloat16 runs natively here, faster than float32: on the extension's kernel
    (:func:`cpu_bf16_kernel`) or on oneDNN with AMX tiles.  Elsewhere torch emulates bf16."""
    return cpu_bf16_kernel() or cpu_has_amx()


def check_threads(threads: int) -> None:
    """A UserError for a thread count torch cannot take: under 1, or over 4 per core and 64 (its
    thread pools fail far above: 30000 in libgomp, 100000 a crash with no message).  The rule of
    ``--threads`` for every command and of ``TrainConfig.threads``."""
    from .errors import UserError
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    cores = os.cpu_count() or 1
    most = max(64, 4 * cores)
    if threads > most:
        raise UserError(f"--threads {threads}: at most {most} (4 per core, 64 on any machine; this one has "
                        f"{cores} core(s))")


def resolve_device(device=None):
    """``None``/"auto" -> CUDA if available else CPU; "cpu", "cuda", "cuda:N" or a torch.device.
    Asking for CUDA without a GPU, or for an unknown device, raises ValueError."""
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was requested but no CUDA GPU is available (ask for the device 'cpu' or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


# --precision: the dtype a model runs in
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _parse_precision(precision: Optional[str], allowed) -> str:
    p = "auto" if precision is None else str(precision).strip().lower()
    if p not in allowed:
        raise ValueError(f"unknown precision {precision!r}: use {', '.join(allowed)}")
    return p


def half_precision(precision: Optional[str], half: bool, device):
    """``half=True`` (``restore(..., half=True)``, ``load_model``, ``fastreshuffle restore --half``):
    fp16 on CUDA; on any other device ``precision`` as it is, and a note saying so (a CPU has no
    fp16 path; ``precision="fp16"`` asked for by name raises there, see :func:`resolve_precision`).
    -> (precision, note or None)."""
    if not half:
        return precision, None
    if device.type == "cuda":
        return "fp16", None
    return precision, (f"half precision (fp16) runs on CUDA only: running with precision {precision or 'auto'} "
                       f"on {device.type}")


def resolve_precision(precision: Optional[str], device):
    """``precision`` (one of :data:`PRECISIONS`; None = "auto") on the torch.device ``device`` ->
    the model's dtype.  "auto": bfloat16 on a CPU that runs it natively (AVX512-BF16 with the
    dense-layer kernel, or AMX: :func:`cpu_fast_bf16`), else float32 (on CUDA too).  "bf16" elsewhere runs on torch's
    bfloat16 convolutions (slower than float32 without the instructions); "fp16" is CUDA only.
    A bfloat16 / float16 FastReshuffleNet takes float32 images and adds its residual in float32.
    Raises ValueError for an unknown name or fp16 on CPU."""
    import torch

    p = _parse_precision(precision, PRECISIONS)
    if p == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_fast_bf16() else torch.float32
    if p == "fp16" and device.type != "cuda":
        raise ValueError("fp16 runs on CUDA only; on CPU use bf16 or fp32")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


TRAINING_PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``), where oneDNN runs bf16 convolutions and GEMMs natively; elsewhere bf16
    is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@functools.lru_cache(maxsize=None)
def cpu_has_amx() -> bool:
    """Whether this process can use AMX tiles with bfloat16 (Intel Xeon since Sapphire Rapids):
    the CPU has AMX-BF16 (and the AVX-512 the kernel's epilogue uses) and Linux gives the process
    the tile state (``dense_cpu_amx``, the extension's probe: CPUID, then ``arch_prctl``).  oneDNN
    then runs bf16 GEMMs and convolutions on the tiles too."""
    import torch

    from .ops import _extension  # noqa: F401  (loads fastreshuffle._C)
    return bool(torch.ops.fastreshuffle.dense_cpu_amx())


def training_precision(precision: Optional[str], device) -> str:
    """The one decision of the training precision: "fp32", or "bf16" (``torch.autocast`` to
    bfloat16 over float32 master weights and optimizer state).  (Inference has its own,
    :func:`resolve_precision`: its bf16 needs our kernel, training's autocast only oneDNN.)

    ``"auto"``/None: bf16 on a CUDA GPU with bf16 support and on a CPU with bf16 arithmetic
    (:func:`cpu_has_bf16`), else fp32.  ``"fp32"`` and ``"bf16"`` are taken as asked."""
    import torch

    p = _parse_precision(precision, TRAINING_PRECISIONS)
    if p != "auto":
        return p
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"
