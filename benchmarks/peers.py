"""The runtimes users pick instead of ours, on fastreshuffle's own ONNX export
(:func:`fastreshuffle.inference.export.export_onnx`: standard operators, output clipped to [0, 1]):
ONNX Runtime (fp32) and OpenVINO (fp32, and bf16 through its ``INFERENCE_PRECISION_HINT``, which
uses the CPU's AVX512-BF16 / AMX instructions where it has them).

Each peer is a callable on a float32 ``(N, 3, H, W)`` CPU tensor returning a float32 tensor,
compiled for one input shape (OpenVINO: a static shape, its fastest mode).  ``available(kind)``
says whether the runtime is installed; the benchmarks skip a peer that is not.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import torch

PEERS = ("ort", "ov", "ov_bf16")
_MODULE = {"ort": "onnxruntime", "ov": "openvino", "ov_bf16": "openvino"}


def available(kind: str) -> bool:
    return importlib.util.find_spec(_MODULE[kind]) is not None and importlib.util.find_spec("onnx") is not None




class Peer:
    """One runtime on one ONNX file and input shape."""

    def __init__(self, kind: str, path: str, shape, threads: int):
        self.kind = kind
        if kind == "ort":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            self.name = self.sess.get_inputs()[0].name
        else:
            import openvino as ov

            core = ov.Core()
            m = core.read_model(path)
            m.reshape({m.input(0): list(shape)})
            config = {"INFERENCE_PRECISION_HINT": "bf16" if kind == "ov_bf16" else "f32",
                      "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            self.compiled = core.compile_model(m, "CPU", config)
            self.request = self.compiled.create_infer_request()
            self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().float().contiguous().numpy()
        if self.kind == "ort":
            return torch.from_numpy(self.sess.run(None, {self.name: a})[0])
        self.request.infer({0: a})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def make_peer(kind: str, model: torch.nn.Module, shape, threads: int) -> Peer:
    """``model`` exported into a temporary folder, loaded by the runtime, the folder removed (both
    runtimes hold the whole graph once loaded)."""
    from fastreshuffle.inference.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="fastreshuffle-peers-") as folder:
        return Peer(kind, str(export_onnx(model, os.path.join(folder, "model.onnx"))), shape, threads)
