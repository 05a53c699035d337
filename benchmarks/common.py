"""Timing helpers shared by the benchmark scripts: warm-up, many repeats, median and 20/80 percentiles."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

import torch


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], *, device="cpu", warmup: int = 5, repeats: int = 50,
            min_time: float = 0.0) -> Dict[str, float]:
    """Time ``fn`` (seconds): returns median, p20, p80 over ``repeats`` runs after ``warmup``."""
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
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 10 else [times[0]] * 9
    return {"median": statistics.median(times), "p20": q[1], "p80": q[7], "n": len(times)}


def fmt_time(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:8.1f} us"
    if t < 1:
        return f"{t * 1e3:8.2f} ms"
    return f"{t:8.3f} s "


def machine_line() -> str:
    import os
    import platform
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, {dev}")
