"""Training state on disk: ``state.safetensors`` (fp32 weights and Adam moments, and in its
metadata the step, schedule, best PSNR and arguments) published atomically -- one file, so a run
killed while saving leaves either the old checkpoint or the new one, never a mix --, a copy of
that metadata as ``state.json`` for people and tools, and the ``log.csv`` of a run (kept up to the
resumed step)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import UserError, WeightsError
from ..io.safe_write import atomic_write_bytes
from ..io.weights import load_state_checked

STATE_VERSION = 1
LOG_FIELDS = ["step", "epoch_images", "lr", "loss", "val_psnr", "val_psnr_codec", "val_gain", "seconds",
              "cpu_seconds", "images_per_s", "grad_norm", "data_wait"]

__all__ = ["save_state", "load_state", "CsvLog", "STATE_VERSION", "LOG_FIELDS"]


def _optimizer_tensors(opt: torch.optim.Optimizer, names: Dict[int, str]) -> Dict[str, torch.Tensor]:
    out = {}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        name = names[idx]
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            out[f"optim.{k}.{name}"] = t.detach().cpu().contiguous()
    return out


def save_state(run: Path, model, opt, step: int, extra: Dict) -> None:
    from safetensors.torch import save

    from ..io.weights import canonical_safetensors
    names = {i: n for i, (n, _) in enumerate(model.named_parameters())}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt, names))
    meta = {"step": step, "version": STATE_VERSION, "param_groups": opt.state_dict()["param_groups"], **extra}
    text = json.dumps(meta, indent=1, default=str)
    atomic_write_bytes(run / "state.safetensors",
                       canonical_safetensors(save(tensors, metadata={"format": "fastreshuffle-train-state/1",
                                                                      "state": text})),
                       overwrite=True)
    atomic_write_bytes(run / "state.json", text.encode(), overwrite=True)


def read_state_meta(run: Path) -> Dict:
    """The saved run's state (step, schedule, arguments), checked to be one (UserError naming what
    is wrong): from ``state.safetensors``' own metadata, so it always belongs to the tensors beside
    it; from ``state.json`` for runs saved before it was kept there."""
    from safetensors import safe_open

    sj, st = run / "state.json", run / "state.safetensors"
    if not st.is_file():
        raise UserError(f"--resume: no training state in {run} (state.safetensors missing)")
    try:
        with safe_open(str(st), framework="pt") as f:
            text = (f.metadata() or {}).get("state")
        if text is None:
            if not sj.is_file():
                raise UserError(f"--resume: no training state in {run} (state.json missing)")
            text, source = sj.read_text(), sj
        else:
            source = st
        meta = json.loads(text)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"--resume: cannot read training state in {run}: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list) or "step" not in meta:
        raise UserError(f"--resume: {source} is not a training state (no step / param_groups)")
    try:
        meta["step"] = int(meta["step"])
        meta["best_psnr"] = float(meta.get("best_psnr", -float("inf")))
        meta["cpu_seconds"] = float(meta.get("cpu_seconds") or 0.0)
    except (TypeError, ValueError) as e:
        raise UserError(f"--resume: {source} is not a training state (bad step / best_psnr / cpu_seconds: {e})") from None
    return meta


def load_state(run: Path, model, opt) -> Dict:
    from safetensors.torch import load_file

    meta = read_state_meta(run)
    st = run / "state.safetensors"
    try:
        tensors = load_file(str(st))
    except Exception as e:
        raise UserError(f"--resume: cannot read training state in {run}: {e}") from None
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        load_state_checked(model, model_sd, source=str(st))
    except WeightsError as e:
        raise UserError(f"--resume: {e}") from None
    params = list(model.named_parameters())
    state = {}
    for i, (n, p) in enumerate(params):
        entry = {}
        for k, v in tensors.items():
            if k.startswith("optim.") and k.endswith("." + n) and k.count(".") >= 2:
                key = k[len("optim."):-(len(n) + 1)]
                if "." not in key:
                    if v.shape == p.shape:   # Adam moments: in the parameter's layout (channels-last
                        v = torch.empty_like(p, dtype=v.dtype, device="cpu").copy_(v)  # too), as before the save
                    entry[key] = v
        if entry:
            state[i] = entry
    groups = meta["param_groups"]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"--resume: the saved optimizer state does not fit this network: {e}") from None
    return meta


def _read_log(path: Path, upto: int) -> Tuple[List[Dict[str, str]], int]:
    """The rows of ``log.csv`` up to step ``upto``.  A damaged tail (a crash can leave NUL bytes)
    or a row whose step is not a number is dropped: the log is a record, the run's state is in
    ``state.safetensors``, and a resume must not fail on it (:attr:`CsvLog.dropped` counts them)."""
    rows, dropped = [], 0
    if not path.is_file():
        return rows, dropped
    with open(path, newline="", errors="replace") as f:
        text = f.read().replace("\x00", "")
    try:
        for r in csv.DictReader(io.StringIO(text, newline="")):
            step = (r.get("step") or "").strip()
            if not step.isdigit():
                dropped += bool(any((v or "").strip() for v in r.values() if isinstance(v, str)))
                continue
            if int(step) <= upto:
                rows.append(r)
    except csv.Error:
        dropped += 1
    return rows, dropped


class CsvLog:
    """``log.csv``, written from its first row on (so that a run stopped before it has logged
    anything leaves no file: a folder without a training state is not a half-made run); a resumed
    run's log keeps the rows up to ``keep_upto``."""

    def __init__(self, path: Path, keep_upto: Optional[int]):
        self.path, self.f, self.resumed = path, None, keep_upto is not None
        self.kept, self.dropped = _read_log(path, keep_upto) if keep_upto is not None else ([], 0)

    def _open(self):
        # the header (and a resumed run's kept rows) go to a new file that replaces any old one at
        # once: a run killed here still has its whole log (it was once truncated, then rewritten)
        head = io.StringIO()
        w = csv.DictWriter(head, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(self.kept)
        atomic_write_bytes(self.path, head.getvalue().encode(), overwrite=True)
        self.f = open(self.path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_FIELDS, extrasaction="ignore")

    def row(self, **kw):
        if self.f is None:
            self._open()
        self.w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in kw.items()})
        self.f.flush()

    def close(self):
        if self.f is None and self.resumed:
            self._open()          # the resumed run's rows, without those past the step it resumed at
        if self.f is not None:
            self.f.close()
