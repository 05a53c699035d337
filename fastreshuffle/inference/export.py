"""Export a model to ONNX: standard operators only, dynamic batch / height / width.

>>> from fastreshuffle.inference.export import export_onnx
>>> export_onnx("jpeg", "jpeg.onnx")

The graph takes ``input``: N x 3 x H x W float32 in [0, 1] (any H, W >= 1: the reflect padding
to a multiple of 8 and the crop back are inside the graph) and gives ``output`` of the same size,
clipped to [0, 1]: ``fastreshuffle.restore(..., guard=False)`` without tiling.  As there, an image
under 8 pixels on a side comes back as it went in (:func:`..tiling.too_small`).  The do-no-harm
guard (JPEG tables, detection, strengths) is not part of the graph.

The plain-PyTorch ``ReshuffleNet`` is exported (``FastReshuffleNet``'s custom ops are not ONNX
operators); both hold the same weights.  Needs the ``onnx`` extra (``onnx``, ``onnxscript``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..nn.config import PAD_MULTIPLE
from .tiling import with_context

__all__ = ["export_onnx", "STANDARD_DOMAINS"]

STANDARD_DOMAINS = {"", "ai.onnx"}


class _Graph(torch.nn.Module):
    """What the file computes, written so that one graph serves every size: the exporter fixes
    a Python ``if`` on a size at the example's value, so the padding and the small-image rule are
    tensor operations here.  For H, W >= 8 this is ``ReshuffleNet.forward`` clipped to [0, 1], an image
    under :data:`.tiling.MIN_CONTEXT` run inside mirrored context (:func:`.tiling.with_context`)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = PAD_MULTIPLE
        h, w = x.shape[-2], x.shape[-1]
        # A side under 8 px is first replicated up to 8, so that the reflect padding is valid for
        # every size (no padding for sides of 8 or more); the network's output for such an image
        # is then not used.
        xs = F.pad(x, (0, torch.sym_max(0, m - w), 0, torch.sym_max(0, m - h)), mode="replicate")
        xc, py, px = with_context(xs)      # a side under MIN_CONTEXT: mirrored context, as restore() runs it
        xp = F.pad(xc, (0, (-xc.shape[-1]) % m, 0, (-xc.shape[-2]) % m), mode="reflect")
        y = self.net.forward_padded(xp)[..., py:py + h, px:px + w].clamp(0.0, 1.0)
        small = torch.scalar_tensor(torch.sym_min(h, w)) < m
        return torch.where(small, x.clamp(0.0, 1.0), y)


# The oldest opset torch's exporter writes this graph in (asked for less, it falls back to 18).
MIN_OPSET = 18


def refuse_picture_name(path: Union[str, os.PathLike]) -> None:
    """A UserError for an ONNX file named as a picture (``-o photo.jpg``): with ``--overwrite``
    the export replaced a JPEG with a model (a review).  Other names are written, with a note."""
    from ..io.images import known_image_extensions
    suffix = Path(path).suffix.lower()
    if suffix in known_image_extensions():
        raise UserError(f"{path} names a picture ({suffix}): the export writes an ONNX model, not an image; name "
                        "the file to write .onnx (e.g. model.onnx)")


def export_onnx(model: Union[str, os.PathLike, torch.nn.Module] = "jpeg", path: Union[str, os.PathLike] = "model.onnx", *,
                opset: int = 18, overwrite: bool = False) -> Path:
    """Write ``model`` (shipped name, safetensors path, or a ReshuffleNet / FastReshuffleNet
    object) as an ONNX file at ``path`` (atomically; an existing file is kept unless
    ``overwrite``; a picture's name, ``photo.jpg``, is refused).  Returns the path."""
    refuse_picture_name(path)
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter imports it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install onnx onnxscript onnxruntime "
                        "(the [onnx] extra; from a checkout: pip install -e '.[onnx]')") from None
    from ..errors import OutputExistsError
    from ..io.safe_write import atomic_write_bytes, check_output_file
    from .loading import load_model, resolve_weights

    path = Path(path)
    if not isinstance(model, torch.nn.Module) and path.exists():
        weights = resolve_weights(model)
        if os.path.samefile(weights, path):
            raise UserError(f"{path} is the weights file being exported; name another file to write")
    try:
        check_output_file(path, overwrite=overwrite)      # before the export's 10-20 s, not after
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; name the .onnx file to write") from None
    except OutputExistsError:
        raise
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e} ({e.filename})") from None
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:   # below 18 the exporter falls back to 18 with a warning
        raise UserError(f"opset must be in {MIN_OPSET}..{newest} (the exporter's range for this graph), got {opset}")
    if isinstance(model, torch.nn.Module):
        from ..nn.reference import ReshuffleNet
        ref = ReshuffleNet(model.config)            # the plain-PyTorch graph, float32 on CPU
        ref.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    else:
        ref = load_model(model, "cpu", fast=False)
    net = _Graph(ref).eval()
    x = torch.rand(1, 3, 45, 67)
    dyn = {"x": {0: "batch", 2: "height", 3: "width"}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        with torch.no_grad(), _quiet_exporter():
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
        atomic_write_bytes(path, data, overwrite=overwrite)
    except OutputExistsError:      # the caller says it
        raise
    except OSError as e:   # (after the export: a full disk, not a usage error) the path, not a temporary file
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's two kinds of noise that are not about this graph: a line per
    torchvision operator it skips when torchvision is absent, and a FutureWarning from torch's own
    pytree code.  Other warnings still show."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        log.setLevel(level)
