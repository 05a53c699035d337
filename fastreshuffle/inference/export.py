"""Export a model to ONNX: standard operators only, dynamic batch / height / width.

>>> from fastreshuffle.inference.export import export_onnx
>>> export_onnx("jpeg", "jpeg.onnx")

The graph takes ``input``: N x 3 x H x W float32 in [0, 1] (any H, W: the reflect padding to a
multiple of 8 and the crop back are inside the graph) and gives ``output`` of the same size,
clipped to [0, 1]: the network of ``fastreshuffle.restore(..., guard=False)`` without tiling.
The do-no-harm guard (JPEG tables, detection, strengths) is not part of the graph.

The plain-PyTorch ``ReshuffleNet`` is exported (``FastReshuffleNet``'s custom ops are not ONNX
operators); both hold the same weights.  Needs the ``onnx`` extra (``onnx``, ``onnxscript``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import torch

from ..errors import UserError

__all__ = ["export_onnx", "STANDARD_DOMAINS"]

STANDARD_DOMAINS = {"", "ai.onnx"}


class _Clipped(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0.0, 1.0)


# The oldest opset torch's exporter writes this graph in (asked for less, it falls back to 18).
MIN_OPSET = 18


def export_onnx(model: Union[str, os.PathLike, torch.nn.Module] = "jpeg", path: Union[str, os.PathLike] = "model.onnx", *,
                opset: int = 18, overwrite: bool = False) -> Path:
    """Write ``model`` (shipped name, safetensors path, or a ReshuffleNet / FastReshuffleNet
    object) as an ONNX file at ``path`` (atomically; an existing file is kept unless
    ``overwrite``).  Returns the path."""
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx extra: pip install 'fastreshuffle[onnx]' "
                        "(onnx, onnxscript)") from None
    from ..io.safe_write import atomic_write_bytes
    from .loading import load_model

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; name the .onnx file to write")
    if path.exists() and not overwrite:
        from ..errors import OutputExistsError
        raise OutputExistsError(path)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:   # below 18 the exporter falls back to 18 with a warning
        raise UserError(f"opset must be in {MIN_OPSET}..{newest} (the exporter's range for this graph), got {opset}")
    if isinstance(model, torch.nn.Module):
        from ..nn.reference import ReshuffleNet
        ref = ReshuffleNet(model.config)            # the plain-PyTorch graph, float32 on CPU
        ref.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    else:
        ref = load_model(model, "cpu", fast=False)
    net = _Clipped(ref).eval()
    x = torch.rand(1, 3, 45, 67)
    dyn = {"x": {0: "batch", 2: "height", 3: "width"}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(net, (x,), str(tmp_file), dynamic_shapes=dyn, opset_version=opset,
                              input_names=["input"], output_names=["output"], verbose=False)
        proto = onnx.load(str(tmp_file))
        custom = sorted({n.domain for n in proto.graph.node} - STANDARD_DOMAINS)
        if custom:
            raise RuntimeError(f"the exported graph uses non-standard operator domains {custom}")
        onnx.checker.check_model(proto)
        got = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
        if got != [int(opset)]:
            raise UserError(f"the exporter wrote opset {got}, not the {opset} asked for")
        data = proto.SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, overwrite=overwrite)
    except FileExistsError:      # OutputExistsError: the caller says it
        raise
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path
