"""The model factory: every model the package runs is built here.

* :func:`model_class` makes the one decision of which network class runs (``FastReshuffleNet``,
  the fused-kernel drop-in, unless the reference is asked for; for training on CUDA, and for
  bf16 training on CPU, the reference ``ReshuffleNet``);
* :func:`build_model` builds a fresh one from a config (training: in the layout of
  :func:`training_memory_format`);
* :func:`load_model` (alias :func:`load_pretrained`) loads a shipped model ("jpeg", "hevc"; also
  the bands below and "hevc-paper", the `paper` preset for HEVC, used only when asked for by
  name) or a safetensors weights file, in eval mode, on a device resolved by
  :func:`fastreshuffle.backends.resolve_device`;
* :func:`get_model` is the cached form ``restore`` uses;
* :func:`band_model` decides which network restores a JPEG of a given quality or a HEIF file of
  a given QP (the shipped "jpeg" hands quality <= :data:`JPEG_LOW_MAX` to its low-quality band
  "jpeg-low", quality >= :data:`JPEG_MID_MIN` to its mid-quality band "jpeg-mid" and quality >=
  :data:`JPEG_HIGH_MIN` to its high-quality band "jpeg-high", the
  shipped "hevc" QP >= :data:`HEVC_LOW_MIN_QP` to "hevc-low"), and :class:`Bands` loads each band
  once for ``restore``, ``eval`` and the CLI.

>>> import fastreshuffle
>>> model = fastreshuffle.load_pretrained("jpeg")            # or "hevc", or a .safetensors path

Weights are read only from safetensors files (never pickle), see :mod:`fastreshuffle.io.weights`.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from ..backends import PRECISIONS, _parse_precision, resolve_device, resolve_precision
from ..errors import WeightsError
from ..io.weights import load_state_checked, read_metadata, read_weights
from ..nn.config import ReshuffleNetConfig

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_MODELS = ("jpeg", "hevc", "webp")
# The shipped JPEG model's low-quality band: a JPEG whose quality (from its tables, or detected
# in its pixels) is at most JPEG_LOW_MAX is restored by "jpeg-low", a specialist fine-tuned on
# quality 5-20 from the general model, when it is installed.  The bound is where the two
# models' gains cross (fastreshuffle/weights/README.md, "Quality bands").
JPEG_LOW = "jpeg-low"
JPEG_LOW_MAX = 20.0
# Its high-quality band: quality >= JPEG_HIGH_MIN goes to "jpeg-high", the same network fine-tuned
# on quality 80-97, then 70-97 (what phones and cameras write), restored with its own strength
# schedule (:func:`fastreshuffle.inference.guard.strength`).  Its mid-quality band: quality >=
# JPEG_MID_MIN and below JPEG_HIGH_MIN goes to "jpeg-mid", "jpeg-high" fine-tuned once more on
# quality 60-97 (strength 1 there, as "jpeg-high"'s schedule gives up to q85).  Both bounds were
# chosen (2026-12-06) on the seven outside photos and the 8 CBSD432 photos held out of training
# (shrunk 2x), as they are and darkened to 6% and 2% (fastreshuffle/weights/README.md,
# "jpeg-mid"); then (the bound at 55): at q55-69, where "jpeg" keeps 0.88-0.5 of its correction, "jpeg" lost up to 5.2 dB
# on a darkened photo (the star field x 0.02 at q55 and q65) and "jpeg-mid" kept every worst
# image above no change; as they are it is ahead of "jpeg" in the held-out mean from q55 (+0.05
# dB; level at q50, where "jpeg" restores at full strength, the worst image 0.06 dB behind; on
# Kodak24, not chosen on, 0.07 dB behind at q55 and 0.02 ahead at q60).
# Against "jpeg-high" it is ahead at q78 and q80 (the held-out mean by 0.04 / 0.02 dB, every
# darkened mean and worst image level or ahead; the worst image as they are 0.01 dB behind at
# q80) and from q82 behind in the worst image as they are (0.08 dB at q82, 0.13 at q85; the means
# 0.01-0.03 behind at q85-93).  "jpeg-high"'s bound was 75, then 70.
# JPEG_MID_MIN was 55, then 45 (2026-12-06, session 44): sharpened photos (an unsharp mask, as
# phones' pipelines and editors apply, before coding; benchmarks/harm_curve.py --sharpen) lost
# with "jpeg", which smooths crisp fine texture, most at q45-54 (the 8 held-out photos shrunk 2x,
# radius 1 at 150%: worst -0.38 / -0.61 / -0.59 dB at q45 / 50 / 54; radius 2 at 250%: -0.73 /
# -0.85 / -0.81), and so did the held-out photos darkened to 2% (-0.67 to -0.82), where
# "jpeg-mid" gains on every image (worst +0.19 to +0.41 sharpened, +0.01 to +0.04 darkened).  The
# cost: as they are "jpeg-mid" is behind in the mean (from the unrounded means: held out 0.13 /
# 0.08 / 0.05 dB at q45 / 50 / 54, the seven outside photos 0.13 / 0.06 / 0.02; Kodak24, not
# chosen on, q50 +1.24 -> +1.07),
# every image still gaining.  At q40 "jpeg" loses less (-0.22 / -0.56 sharpened, darkened +0.13)
# and leads by more (held out 0.17 dB, the outside photos 0.21, Kodak24 0.25), so the bound stays
# above it; sharpened hard (radius 2 at 250%) such photos still lose with "jpeg" down to q25-35
# (-0.06 / -0.25 / -0.44 dB at q25 / 30 / 35).
JPEG_HIGH = "jpeg-high"
JPEG_HIGH_MIN = 81.0
JPEG_MID = "jpeg-mid"
JPEG_MID_MIN = 45.0
# The shipped HEVC model's low-quality band, keyed on the slice QP read from a HEIF file (the
# guard's key, :mod:`.guard`): QP >= HEVC_LOW_MIN_QP (libheif quality 10 and below with x265)
# goes to "hevc-low", fine-tuned on HEVC quality 10-20 from the general model.  A file whose QP
# cannot be read keeps "hevc".  At QP 42 and 44 "hevc-low" was ahead on CBSD432 and on the outside
# photos of benchmarks/eval_photos.py; at QP 39 ahead on CBSD432 (its training photos) but behind
# on all seven outside photos, so the band stops at 42 (fastreshuffle/weights/README.md).
HEVC_LOW = "hevc-low"
HEVC_LOW_MIN_QP = 42.0

ModelArg = Union[str, os.PathLike, torch.nn.Module]

__all__ = ["SHIPPED_MODELS", "WEIGHTS_DIR", "JPEG_LOW", "JPEG_LOW_MAX", "JPEG_MID", "JPEG_MID_MIN",
           "JPEG_HIGH", "JPEG_HIGH_MIN", "HEVC_LOW", "HEVC_LOW_MIN_QP",
           "available_models", "resolve_weights",
           "auto_model_name", "band_model", "bands_of", "Bands",
           "model_codec", "model_class", "training_memory_format", "build_model", "load_model", "load_pretrained", "get_model"]


# --------------------------------------------------------------------------- weights
def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def available_models() -> List[str]:
    """Names of the models whose weights are installed in the package."""
    found = set()
    if WEIGHTS_DIR.is_dir():
        found = {p.stem for p in WEIGHTS_DIR.glob("*.safetensors")}
    return sorted(found)


def resolve_weights(name_or_path: Union[str, os.PathLike]) -> Path:
    """Map a shipped model name or a file path to an existing weights file."""
    s = os.fspath(name_or_path)
    installed = available_models()
    if not s.strip():   # ("" would be read as the current folder)
        raise WeightsError(f"unknown model {s!r}: an empty name; the shipped models installed: "
                           f"{', '.join(installed) or 'none'}; or give the path of a .safetensors weights file")
    if s in SHIPPED_MODELS or s in installed:
        p = weights_path(s)
        if not p.is_file():
            raise WeightsError(
                f"the shipped model {s!r} is not installed (expected {p}); "
                f"installed models: {', '.join(installed) or 'none'}; "
                "pass the path of a .safetensors weights file instead")
        return p
    p = Path(s).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise WeightsError(f"{p} is a folder, not a weights file")
    if p.exists():   # (a FIFO, /dev/zero: it had been "no such file")
        raise WeightsError(f"{p} is not a regular file (a pipe, socket or device), not a weights file; give the "
                           "path of a .safetensors weights file")
    raise WeightsError(
        f"unknown model {s!r}: not a shipped model name and no such file; "
        f"the shipped models installed: {', '.join(installed) or 'none'}; "
        "or give the path of a .safetensors weights file")


def auto_model_name(input_format: Optional[str], lossy_webp: bool = False) -> str:
    """The shipped model ``--model auto`` picks for an input of this Pillow format: ``hevc`` for
    HEIF files, ``webp`` for lossy still WebP files (``lossy_webp``: the file's quantiser can be
    read, :func:`fastreshuffle.io.webp_quant.webp_quant`; where the model is installed), ``jpeg``
    for everything else (a JPEG through its tables, other images -- a lossless WebP too -- only
    where JPEG compression is found in their pixels: see :mod:`fastreshuffle.inference.guard`)."""
    if input_format == "HEIF":
        return "hevc"
    if input_format == "WEBP" and lossy_webp and weights_path("webp").is_file():
        return "webp"
    return "jpeg"


def band_model(model, quality: Optional[float] = None, qp: Optional[float] = None):
    """The model that restores an image when ``model`` is asked for: the shipped "jpeg" hands a
    JPEG of (IJG-equivalent) ``quality`` <= :data:`JPEG_LOW_MAX` to "jpeg-low", one of ``quality``
    >= :data:`JPEG_MID_MIN` to "jpeg-mid" and one of ``quality`` >= :data:`JPEG_HIGH_MIN` to
    "jpeg-high"; the shipped "hevc" hands a HEIF file
    coded at slice ``qp`` >= :data:`HEVC_LOW_MIN_QP` to "hevc-low" (each where installed); else
    ``model`` itself (any other name, a weights file, a model object, no key)."""
    band = None
    if isinstance(model, str) and model == "jpeg" and quality is not None:
        band = (JPEG_LOW if quality <= JPEG_LOW_MAX else JPEG_HIGH if quality >= JPEG_HIGH_MIN
                else JPEG_MID if quality >= JPEG_MID_MIN else None)
    elif isinstance(model, str) and model == "hevc" and qp is not None and qp >= HEVC_LOW_MIN_QP:
        band = HEVC_LOW
    return band if band is not None and weights_path(band).is_file() else model


def bands_of(model) -> Dict[str, str]:
    """The installed bands of ``model`` (:func:`band_model`), each with the inputs it takes:
    ``{"jpeg-low": "JPEG quality <= 20", "jpeg-mid": "JPEG quality >= 45 and < 81", "jpeg-high":
    "JPEG quality >= 81"}`` for "jpeg", ``{}`` for a model without bands."""
    found = {band_model(model, quality=0): f"JPEG quality <= {JPEG_LOW_MAX:g}",
             band_model(model, quality=JPEG_MID_MIN): f"JPEG quality >= {JPEG_MID_MIN:g} and < {JPEG_HIGH_MIN:g}",
             band_model(model, quality=100): f"JPEG quality >= {JPEG_HIGH_MIN:g}",
             band_model(model, qp=51): f"HEVC QP >= {HEVC_LOW_MIN_QP:g}"}
    return {str(name): why for name, why in found.items() if name != model}


class Bands:
    """The networks of one model argument per band (:func:`band_model`: a JPEG's quality, a HEIF
    file's QP), each loaded once by ``load`` (a name or path -> a network).  ``net(quality=,
    qp=)``: the network for that key (none: the model itself); ``name(...)``: its name."""

    def __init__(self, model, load: Callable[[object], torch.nn.Module]):
        self.model, self._load, self._nets = model, load, {}

    def name(self, quality: Optional[float] = None, qp: Optional[float] = None):
        return band_model(self.model, quality, qp)

    def net(self, quality: Optional[float] = None, qp: Optional[float] = None) -> torch.nn.Module:
        key = self.name(quality, qp)
        if key not in self._nets:
            self._nets[key] = self._load(key)
        return self._nets[key]


def model_codec(model) -> Optional[str]:
    """The codec a model was trained for ("jpeg", "hevc", "webp"), or None when nothing says: a shipped
    name is its codec; a weights file's metadata ``codec`` key, else the ``--codec`` of the
    training command recorded in it; a loaded model, the ``codec`` :func:`load_model` recorded
    from its file (a network built otherwise has none)."""
    if isinstance(model, torch.nn.Module):
        codec = getattr(model, "codec", None)
        return codec if isinstance(codec, str) else None
    s = os.fspath(model)
    if s in SHIPPED_MODELS:
        return s
    try:
        return _codec_of(read_metadata(resolve_weights(s)))
    except WeightsError:
        return None


def _codec_of(meta: Dict[str, str]) -> Optional[str]:
    import re
    if meta.get("codec"):
        return meta["codec"].split(":")[0].strip().lower()     # "JPEG" is "jpeg" (the codec specs' case)
    m = re.search(r"--codec\s+([A-Za-z0-9]+)", meta.get("command", ""))
    return m.group(1).lower() if m else None


# --------------------------------------------------------------------------- models
def model_class(device=None, *, training: bool = False, fast: Optional[bool] = None,
                precision: str = "fp32") -> type:
    """The network class to run on ``device``.

    ``fast=False``: the reference ``ReshuffleNet``.  ``fast=True``: ``FastReshuffleNet``.
    ``fast=None`` (default): ``FastReshuffleNet`` -- same parameters and ``state_dict``, its
    dense layers on the fused kernels -- except for training on CUDA, where the reference runs
    (cuDNN's backward; the fused blocks are not timed in training on CUDA yet), and
    for training in bf16 on CPU (``precision="bf16"``, see
    :func:`fastreshuffle.backends.training_precision`), where the reference in channels-last
    under autocast is the fastest step (``benchmarks/bench_train_step.py``, with the fused
    blocks on the bf16 kernel: 1.44x / 1.53x over fp32, the reference 1.77x / 1.64x, small / paper).
    In float32 on CPU the fused blocks are the faster step.
    """
    if fast is None:
        fast = not (training and (resolve_device(device).type == "cuda" or precision == "bf16"))
    if fast:
        from ..nn.fast import FastReshuffleNet
        return FastReshuffleNet
    from ..nn.reference import ReshuffleNet
    return ReshuffleNet


def training_memory_format(model: torch.nn.Module, device=None) -> torch.memory_format:
    """The layout a training model's weights and input batches take: channels-last for the
    reference network on CPU (oneDNN's fastest convolutions there, float32 and bf16 alike), else
    contiguous (``FastReshuffleNet`` lays out its own block buffers)."""
    from ..nn.fast import FastReshuffleNet

    if resolve_device(device).type == "cpu" and not isinstance(model, FastReshuffleNet):
        return torch.channels_last
    return torch.contiguous_format


def build_model(config: ReshuffleNetConfig, device=None, *, training: bool = False,
                fast: Optional[bool] = None, precision: str = "fp32") -> torch.nn.Module:
    """A freshly initialised network of :func:`model_class` on ``device`` (for training, in
    :func:`training_memory_format`)."""
    dev = resolve_device(device)
    model = model_class(dev, training=training, fast=fast, precision=precision)(config).to(dev)
    if training:
        model = model.to(memory_format=training_memory_format(model, dev))
    return model


def load_model(name_or_path: Union[str, os.PathLike] = "jpeg", device="cpu", *,
               fast: Optional[bool] = None, half: bool = False, precision: Optional[str] = "fp32",
               config: Optional[ReshuffleNetConfig] = None) -> torch.nn.Module:
    """Load a shipped model ("jpeg", "hevc") or a safetensors weights file, in eval mode.

    The class comes from :func:`model_class` (``fast=False`` forces the reference
    ``ReshuffleNet``).  The architecture comes from the file's metadata unless ``config`` is
    given.  Weights are stored as fp16 and loaded in the dtype of ``precision``
    (:func:`fastreshuffle.backends.resolve_precision`: "fp32" (default), "bf16", "auto", or
    "fp16" on CUDA; ``half=True`` is "fp16" on CUDA, ``precision`` with a warning elsewhere).  A bf16 /
    fp16 FastReshuffleNet takes float32 input.
    The model's ``codec`` attribute is the codec its file was trained for (:func:`model_codec`;
    None when the file does not say): :func:`fastreshuffle.restore` guards by it; ``weights_name``
    is the installed model's name it was loaded by (None for a path), whose strength schedule the
    guard uses for it (a loaded model brings no bands: it restores every quality itself).
    """
    path = resolve_weights(name_or_path)
    cfg, state, meta = read_weights(path)
    cfg = config or cfg
    if cfg is None:
        raise WeightsError(f"{path}: no model config in the file's metadata (was it saved with "
                           "fastreshuffle.io.weights.save_weights?); from Python, give "
                           "load_model(..., config=ReshuffleNetConfig(...))")
    # Checked before building a network of whatever size the config says (a smaller mismatch is
    # named tensor by tensor by load_state_checked).  Each dense layer holds 4 tensors: a config of
    # more layers than the file has tensors is refused before its size is counted (the count
    # loops over the layers the metadata claims).
    if sum(cfg.layers) > len(state):
        raise WeightsError(f"{path}: the config ({cfg.to_json()}) has {sum(cfg.layers):,} dense layers, "
                           f"the file holds {len(state):,} tensors")
    stored, needed = sum(v.numel() for v in state.values()), cfg.num_parameters()
    if needed > 4 * stored + 10 ** 6:
        raise WeightsError(f"{path}: the file holds {stored:,} weights, the config ({cfg.to_json()}) "
                           f"needs {needed:,}")
    dev = resolve_device(device)
    dtype = _dtype(precision, half, dev)
    model = model_class(dev, fast=fast)(cfg)
    load_state_checked(model, state, source=str(path))
    name = os.fspath(name_or_path)
    model.codec = _codec_of(meta) or (name if name in SHIPPED_MODELS else None)
    # the installed model's name it was loaded by (None for a file path): restore() guards the model
    # object with that name's strength schedule ("jpeg-high", "jpeg-mid" have their own), as by name
    model.weights_name = name if name in SHIPPED_MODELS or name in available_models() else None
    return model.to(dev, dtype).eval()


load_pretrained = load_model


_CACHE: "OrderedDict[Tuple, torch.nn.Module]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
# Networks kept loaded at most, the ones used last (least recently used dropped first): the eight
# shipped models in both precisions (bf16 and fp32), so that restore() going through JPEG files of
# every band, HEIF files of both and WebP files, in either precision, does not reload any (the key holds the
# device and dtype too: fp16 on CUDA beside them evicts).  Each keeps its weights, a copy packed
# for the CPU kernel and the last call's work buffers: a few MB per `small` network (27 MB of
# weights for `hevc-paper`) plus buffers that grow with the image (tiles bound them).
CACHE_MAX = 16


def _cached_model(name_or_path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    path = resolve_weights(name_or_path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, str(device), dtype)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = _CACHE[key] = load_model(path, device).to(dtype)
            while len(_CACHE) > CACHE_MAX:
                _CACHE.popitem(last=False)
        else:
            _CACHE.move_to_end(key)
        return model


_UNSET = object()


def get_model(model: ModelArg, device=None, half: bool = False, precision=_UNSET) -> torch.nn.Module:
    """A model object as given -- its device and dtype are the caller's: a ``device`` or a
    ``precision`` named ("fp32", "bf16", "fp16"; not None / "auto") that is not the model's raises
    ValueError rather than converting the caller's model or being ignored --, or a name / path
    loaded in ``precision`` (not given: "fp32"; None: "auto"; see :func:`load_model`) once and
    cached while the file is unchanged."""
    if isinstance(model, torch.nn.Module):
        _check_as_given(model, device, half, precision)
        return model
    dev = resolve_device(device)
    return _cached_model(model, dev, _dtype("fp32" if precision is _UNSET else precision, half, dev))


def _check_as_given(model: torch.nn.Module, device, half: bool, precision) -> None:
    """ValueError where ``model`` cannot run as :func:`get_model` is asked to: on the meta device
    (no weights), or in another dtype (``half``, a ``precision`` named) or on another device than
    the one asked for (a model object is never converted or moved)."""
    params = list(model.parameters())
    if any(p.is_meta for p in params):
        raise ValueError("the model is on the meta device: it has no weights to restore with "
                         "(load real ones, e.g. load_pretrained(...), or use to_empty() and load a state dict)")
    have = next((p for p in params if p.is_floating_point()), None)
    if have is not None:
        held = str(have.dtype).replace("torch.", "")
        if half and have.dtype != torch.float16:   # half=True asks for fp16, as precision="fp16" does
            raise ValueError(f"half=True asks for float16, but the model is in {held}: convert it first "
                             "(model.half(), on CUDA) or leave half unset (a model object runs in its own dtype)")
        if precision is not _UNSET and precision is not None and _parse_precision(precision, PRECISIONS) != "auto":
            want = resolve_precision(precision, have.device)
            if have.dtype != want:
                raise ValueError(f"the model is in {held}, not in the precision asked for ({precision!r}): "
                                 f"convert it first (model.to(torch.{str(want)[6:]})) or leave precision unset "
                                 "(a model object runs in its own dtype)")
    if device is not None and device != "auto":
        want = resolve_device(device)
        if want.type == "cuda" and want.index is None:
            want = torch.device("cuda", torch.cuda.current_device())
        if want.type == "cpu":          # "cpu:0" is the CPU, where tensors say "cpu"
            want = torch.device("cpu")
        on = params[0].device if params else want
        if on != want:
            raise ValueError(f"the model is on {on}, not on the device asked for ({device!r}): "
                             "move it first (model.to(...)) or leave device unset")


def _dtype(precision, half: bool, dev: torch.device) -> torch.dtype:
    """The model's dtype for ``precision`` / ``half`` (:func:`fastreshuffle.backends.half_precision`:
    fp16 on CUDA, else ``precision`` with a warning)."""
    from ..backends import half_precision
    p, note = half_precision(precision, half, dev)
    if note:
        import warnings
        warnings.warn(note, stacklevel=3)   # at the caller of load_model / get_model
    return resolve_precision(p, dev)
