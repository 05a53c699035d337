"""fastreshuffle.backends: switches parsed once from the environment, one override context, and
the device resolver."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from fastreshuffle import backends


def _in_child(code: str, **env) -> subprocess.CompletedProcess:
    import os
    e = dict(os.environ)
    for k in (backends.TRITON_ENV, backends.CPU_KERNEL_ENV):
        e.pop(k, None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value,expect", [("0", False), ("off", False), ("1", True), ("yes", True), ("", False),
                                          (None, False)])
def test_triton_env_is_parsed(value, expect):
    """Triton is opt-in (FASTRESHUFFLE_TRITON=1): unset or empty is off."""
    r = _in_child("from fastreshuffle import backends; print(backends.settings().triton)",
                  **({} if value is None else {"FASTRESHUFFLE_TRITON": value}))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(expect)


def test_env_is_read_once(monkeypatch):
    before = backends.settings()
    monkeypatch.setenv(backends.CPU_KERNEL_ENV, "off")
    monkeypatch.setenv(backends.TRITON_ENV, "0" if before.triton else "1")
    assert backends.settings() == before


def test_override_nests_and_restores():
    base = backends.settings()
    with backends.override(triton=False, cpu_kernel="avx2") as s:
        assert s == backends.settings() == backends.Settings(triton=False, cpu_kernel="avx2")
        assert not backends.triton_enabled()
        assert backends.cpu_kernel_isa() <= 1
        with backends.override(triton=True):
            assert backends.settings().cpu_kernel == "avx2"          # unchanged field kept
            assert backends.triton_enabled() == backends.triton_available()
        with backends.override(cpu_kernel="off"):
            assert backends.cpu_kernel_isa() == 0
        assert backends.settings().triton is False
    assert backends.settings() == base


def test_override_is_per_thread():
    seen = []
    with backends.override(cpu_kernel="off"):
        t = threading.Thread(target=lambda: seen.append(backends.settings().cpu_kernel))
        t.start()
        t.join()
    assert seen == [backends.settings().cpu_kernel]


def test_bad_switch_values_name_the_switch():
    with pytest.raises(ValueError, match="avx9"):
        with backends.override(cpu_kernel="avx9"):
            pass
    r = _in_child("from fastreshuffle import backends; backends.cpu_kernel_isa()", FASTRESHUFFLE_CPU_KERNEL="avx9")
    assert r.returncode != 0 and "FASTRESHUFFLE_CPU_KERNEL" in r.stderr
    # an override of that switch gets past the bad value (it read the environment first, and failed)
    r = _in_child("from fastreshuffle import backends\n"
                  "with backends.override(cpu_kernel='off'): print(backends.cpu_kernel_isa())",
                  FASTRESHUFFLE_CPU_KERNEL="avx9")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr


def test_resolve_device():
    assert backends.resolve_device(None).type in ("cpu", "cuda")
    assert backends.resolve_device("auto") == backends.resolve_device(None)
    assert backends.resolve_device("cpu") == torch.device("cpu")
    assert backends.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(ValueError):
            backends.resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            backends.resolve_device("cuda")


def test_settings_default_is_triton_off():
    from fastreshuffle import backends
    assert backends.Settings().triton is False
