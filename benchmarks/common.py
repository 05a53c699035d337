"""Timing helpers shared by the benchmark scripts: warm-up, many repeats, median and 20/80 percentiles."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import torch


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def call_times(fn: Callable[[], object], *, device="cpu", warmup: int = 5, repeats: int = 50,
               min_time: float = 0.0) -> List[float]:
    """Seconds per call of ``fn``: ``repeats`` calls (or more, until ``min_time`` has passed)
    after ``warmup``; CUDA events on a GPU, wall clock on CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time:
        if str(device).startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def summarize(times: List[float], scale: float = 1.0) -> Dict[str, float]:
    """Median, 20th and 80th percentiles of ``times`` (multiplied by ``scale``) and their count."""
    ts = sorted(t * scale for t in times)
    q = statistics.quantiles(ts, n=5, method="inclusive") if len(ts) >= 2 else ts * 4
    return {"median": statistics.median(ts), "p20": q[0], "p80": q[3], "n": len(ts)}


def measure(fn: Callable[[], object], *, device="cpu", warmup: int = 5, repeats: int = 50,
            min_time: float = 0.0) -> Dict[str, float]:
    """Time ``fn`` (seconds): returns median, p20, p80 over ``repeats`` runs after ``warmup``."""
    return summarize(call_times(fn, device=device, warmup=warmup, repeats=repeats, min_time=min_time))


def fmt_time(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:8.1f} us"
    if t < 1:
        return f"{t * 1e3:8.2f} ms"
    return f"{t:8.3f} s "


# Pillow's JPEG subsampling numbers (the scripts' --subsampling) -> fastreshuffle.io.codecs' names
SUBSAMPLING = {0: "444", 1: "422", 2: "420"}


def psnr_or_99(a, b) -> float:
    """RGB PSNR in dB (:func:`fastreshuffle.metrics.psnr`), 99 for identical images: a finite
    number, so that a change between two PSNRs is one too."""
    from fastreshuffle.metrics import psnr
    p = psnr(a, b)
    return 99.0 if p == float("inf") else p


def cpu_flags() -> str:
    """The SIMD flags of the CPU that matter here (avx2 / avx512* / amx*), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = sorted(x for x in line.split(":", 1)[1].split()
                                if x == "avx2" or x.startswith(("avx512", "amx")))
                    return " ".join(fl) or "no avx2/avx512"
    except OSError:
        pass
    return "unknown"


def machine_line() -> str:
    import os
    import platform
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, {dev}")
