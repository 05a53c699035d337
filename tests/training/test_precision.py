"""``--precision``: the one decision (backends.training_precision), the network and layout it picks
for training, and that bf16 autocast really reaches the convolutions, fused dense blocks included."""
import argparse

import pytest
import torch
import torch.nn.functional as F
from helpers import make_images

from fastreshuffle import FastReshuffleNet, ReshuffleNet, ReshuffleNetConfig, backends
from fastreshuffle.cli import main
from fastreshuffle.inference.loading import build_model, model_class, training_memory_format

from benchmarks.bench_train_step import DtypeAudit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_precision(monkeypatch):
    assert backends.training_precision("fp32", "cpu") == "fp32"
    assert backends.training_precision("BF16", "cpu") == "bf16"
    for has in (True, False):
        monkeypatch.setattr(backends, "cpu_has_bf16", lambda: has)
        assert backends.training_precision("auto", "cpu") == ("bf16" if has else "fp32")
        assert backends.training_precision(None, "cpu") == ("bf16" if has else "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        backends.training_precision("fp16", "cpu")


def test_cpu_has_bf16_reads_the_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    assert backends.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_no_amp_is_precision_fp32():
    """One switch: --no-amp is another spelling of --precision fp32, not a second setting."""
    from fastreshuffle.cli.train import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert str(p.parse_args(["--out", "x"]).precision) == "auto"      # (the default, marked as one)
    assert p.parse_args(["--out", "x", "--no-amp"]).precision == "fp32"
    assert p.parse_args(["--out", "x", "--precision", "bf16"]).precision == "bf16"
    assert not hasattr(p.parse_args(["--out", "x"]), "amp")


def test_training_model_and_layout():
    cfg = ReshuffleNetConfig.preset("tiny")
    assert model_class("cpu", training=True, precision="fp32") is FastReshuffleNet
    assert model_class("cpu", training=True, precision="bf16") is ReshuffleNet
    assert model_class("cpu", precision="bf16") is FastReshuffleNet          # inference: always fused
    m = build_model(cfg, "cpu", training=True, precision="bf16")
    assert training_memory_format(m, "cpu") == torch.channels_last
    assert m.blocks[0].layers[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    f = build_model(cfg, "cpu", training=True, precision="fp32")
    assert training_memory_format(f, "cpu") == torch.contiguous_format


@pytest.mark.parametrize("cls", [FastReshuffleNet, ReshuffleNet])
def test_autocast_reaches_every_convolution(cls):
    """Under torch.autocast(cpu, bf16) every convolution / GEMM of forward and backward runs in
    bfloat16 -- in FastReshuffleNet too, whose fused dense blocks (a custom autograd function over
    custom ops) autocast does not cast by itself -- while the gradients land in the float32
    parameters, and the loss stays within bf16 rounding of the float32 one."""
    torch.manual_seed(0)
    model = cls(ReshuffleNetConfig.preset("tiny"))
    x, t = torch.rand(2, 3, 32, 24), torch.rand(2, 3, 32, 24)
    ref = F.l1_loss(model(x), t)
    with DtypeAudit() as audit:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = F.l1_loss(out.float(), t)
        loss.backward()
    assert set(audit.counts) == {"bfloat16"}, audit.counts
    assert audit.counts["bfloat16"] >= 3 * sum(len(b.layers) for b in model.blocks)
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters())
    assert abs(float(loss.detach()) - float(ref.detach())) <= 1e-2 * float(ref.detach())


def test_train_reports_precision_and_warns_on_a_changed_one(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "run"
    base = ["train", "--data", str(data), "--val", "none", "--preset", "tiny", "--batch-size", "2", "--patch", "32",
            "--steps", "4", "--workers", "0", "--no-progress", "--out", str(out)]
    assert main(base + ["--precision", "bf16", "--stop-at", "2"]) == 0
    err = capsys.readouterr().err
    assert "precision: bf16 (autocast, float32 master weights and Adam state); network ReshuffleNet, channels-last" in err
    assert main(base + ["--no-amp", "--resume"]) == 0
    assert "--resume: precision was 'bf16' in the saved run, now 'fp32'" in capsys.readouterr().err
