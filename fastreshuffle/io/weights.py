"""Model weights as safetensors (never pickle), with the architecture in the file's metadata."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import WeightsError
from ..nn.config import ReshuffleNetConfig
from .safe_write import atomic_write_bytes

FORMAT = "fastreshuffle/1"


RESERVED_METADATA = ("format", "config")     # written by save_weights itself


def save_weights(model: torch.nn.Module, path, *, dtype: Optional[torch.dtype] = None,
                 metadata: Optional[Dict[str, str]] = None, overwrite: bool = True) -> Path:
    """Write ``model.state_dict()`` (optionally cast to ``dtype``) atomically to ``path``, with
    ``metadata`` beside the format and the model's config (ValueError if it names either);
    ``overwrite=False``: never replace an existing file (:class:`~fastreshuffle.errors.OutputExistsError`)."""
    from safetensors.torch import save

    path = Path(path)
    metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
    clash = [k for k in RESERVED_METADATA if k in metadata]
    if clash:
        raise ValueError(f"metadata {' and '.join(clash)} cannot be given: the weights file's own")
    cfg = getattr(model, "config", None)
    meta = {"format": FORMAT}
    if isinstance(cfg, ReshuffleNetConfig):
        meta["config"] = cfg.to_json()
    meta.update(metadata)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, canonical_safetensors(save(tensors, metadata=meta)), overwrite=overwrite)


def canonical_safetensors(blob: bytes) -> bytes:
    """A safetensors file with its metadata keys in sorted order: safetensors writes them in the
    order of a randomly seeded hash map, so the same weights and metadata gave other bytes at each
    save (a run repeated, or weights exported twice, could not be compared by checksum)."""
    n = int.from_bytes(blob[:8], "little")
    head = json.loads(blob[8:8 + n])
    meta = head.pop("__metadata__", None)
    if meta is not None:
        head = {"__metadata__": dict(sorted(meta.items())), **head}
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)        # the header padded to 8 bytes, as safetensors does
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def read_metadata(path) -> Dict[str, str]:
    """The metadata of a safetensors weights file, its tensors left unread (WeightsError if the
    file cannot be opened as one)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file: {e}") from None


def read_weights(path) -> Tuple[Optional[ReshuffleNetConfig], Dict[str, torch.Tensor], Dict[str, str]]:
    """Read a safetensors weights file -> (config or None, state_dict, metadata)."""
    from safetensors import SafetensorError
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header.  Its first byte
    # can be 0x80 like a pickle's (a header of 128 + 256k bytes), so test the format first.
    size = path.stat().st_size
    safetensors_like = len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8
    if not safetensors_like and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise WeightsError(f"{path}: looks like a pickle/torch.save file; only safetensors weights are accepted")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: not a valid safetensors file (truncated or corrupt?): {e}") from None
    cfg = None
    if "config" in meta:
        try:
            cfg = ReshuffleNetConfig.from_json(meta["config"])
        except (ValueError, TypeError) as e:
            raise WeightsError(f"{path}: bad model config in metadata: {e}") from None
    return cfg, state, meta


_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def load_state_checked(model: torch.nn.Module, state: Dict[str, torch.Tensor], source="weights") -> None:
    """Load ``state`` into ``model`` strictly, naming any missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    check_state(own, state, source)
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k].to(p.dtype))
    if hasattr(model, "clear_cache"):   # FastReshuffleNet: weights cached per version (none for inference tensors)
        model.clear_cache()


def check_state(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor], source="weights") -> None:
    """Raise :class:`WeightsError` naming any tensor of ``state`` missing, unexpected, mis-shaped,
    of another dtype than weights have, or not finite, against a model's ``own`` state dict (its
    shapes only: a model on the meta device will do)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{source}: tensors do not match the model: missing {missing[:5]}"
                           f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                           f"{'...' if len(unexpected) > 5 else ''}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: tensor {k!r} has shape {tuple(v.shape)}, "
                               f"the model expects {tuple(own[k].shape)}")
        if v.dtype not in _WEIGHT_DTYPES:
            raise WeightsError(f"{source}: tensor {k!r} has dtype {v.dtype}; weights are "
                               f"{', '.join(str(d).replace('torch.', '') for d in _WEIGHT_DTYPES)}")
        if not torch.isfinite(v).all():
            raise WeightsError(f"{source}: tensor {k!r} contains NaN or Inf")
