"""Preset study at equal compute (#14 item 5): train each preset for the same CPU-time budget on
the same data, schedule and seed, then tabulate the validation gain over the codec against time.

    python -m tools.preset_study --budget 1800 --out runs/preset_study          # train (resumable)
    python -m tools.preset_study --budget 1800 --out runs/preset_study --report runs/preset_study/report.md

Each preset runs ``fastreshuffle train`` at 1 thread, no data workers (so the process's CPU time
is the whole cost of a step, data included), ``--time-budget B --budget-clock cpu``: a run paused
with SIGSTOP for a benchmark, or slowed by work on the other core, still gets B seconds of CPU.
Validation is on held-out *training-set* images (``--val split``), never on Kodak24; it runs about
``--validations`` (10) times per run (``--val-every`` scaled by the preset's multiply-adds), and
its CPU time is part of the budget (about 3.5 training steps' worth per validation: with ten
validations in 30 minutes 0.5% of ``small``'s steps, ~5% of ``paper``'s).  Running the command
again continues unfinished runs (``--resume``) and skips finished ones; ``--checkpoint-every``
keeps what a killed run had done.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

PRESET_ORDER = ("small", "medium", "paper")
# the same recipe for every preset: the shipped JPEG model's data, a constant LR after warm-up
# (no schedule to fit to a step count that differs per preset)
RECIPE = ["--codec", "jpeg", "--quality", "5-50", "--batch-size", "16", "--patch", "96", "--steps", "1000000",
          "--schedule", "constant", "--lr", "5e-4", "--warmup", "100", "--val", "split", "--val-images", "8",
          "--val-quality", "10", "30", "50", "--workers", "0", "--threads", "1", "--precision", "auto",
          "--seed", "1", "--budget-clock", "cpu", "--no-progress"]


def val_every(preset: str, budget: float, count: int = 10) -> int:
    """Steps between validations: ~``count`` per run, from the step cost relative to ``small``'s
    (measured: ~0.5 s per step at 1 thread, bf16 autocast, data included, on the Zen 4 VM; the cost scales with the
    multiply-adds per pixel)."""
    from fastreshuffle.nn.config import PRESETS
    ratio = PRESETS[preset].macs_per_pixel() / PRESETS["small"].macs_per_pixel()
    return max(10, int(budget / count / (0.5 * ratio)))


def spent(run: Path) -> float:
    """CPU seconds a run has trained so far: the larger of the checkpoint's count (``state.json``;
    it and the log's ``cpu_seconds`` continue over resumes) and the log's, made cumulative
    (:func:`cumulative_cpu`: runs checkpointed before the count was kept restart it at a resume)."""
    state = run / "state.json"
    cpu = json.loads(state.read_text()).get("cpu_seconds") if state.exists() else None
    logged = [t for t in cumulative_cpu(read_rows(run)) if t is not None]
    return max([float(cpu or 0.0)] + logged)


def cumulative_cpu(rows):
    """The rows' ``cpu_seconds`` (None where a row has none), continued across a resume that
    restarted the count: a drop adds the last value before it to everything after."""
    out, offset, last = [], 0.0, 0.0
    for r in rows:
        v = r.get("cpu_seconds")
        if not v:
            out.append(None)
            continue
        v = float(v)
        if v + offset < last - 1.0:      # the count restarted
            offset = last
        last = v + offset
        out.append(last)
    return out


def read_rows(run: Path):
    if not (run / "log.csv").exists():
        return []
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def recipe(lr: float | None = None, grad_clip: float | None = None) -> list:
    """RECIPE, with a deviation where asked (a run that would diverge at the shared settings:
    it is then a different recipe, so give it its own --out)."""
    cmd = list(RECIPE)
    if lr is not None:
        cmd[cmd.index("--lr") + 1] = f"{lr:g}"
    if grad_clip:
        cmd += ["--grad-clip", f"{grad_clip:g}"]
    return cmd


def train(preset: str, budget: float, out: Path, validations: int = 10, checkpoint_every: float | None = None,
          lr: float | None = None, grad_clip: float | None = None) -> None:
    run = out / preset
    resume = (run / "state.safetensors").exists()
    left = budget - spent(run) if resume else budget
    if left < 0.02 * budget:
        print(f"{preset}: done ({budget - left:.0f} s of {budget:g})", flush=True)
        return
    cmd = [sys.executable, "-m", "fastreshuffle.cli", "train", "--preset", preset, *recipe(lr, grad_clip),
           "--time-budget", f"{left:.0f}", "--val-every", str(val_every(preset, budget, validations)), "--out", str(run)]
    if checkpoint_every:
        cmd += ["--checkpoint-every", f"{checkpoint_every:g}"]
    if resume:
        cmd.append("--resume")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)     # a failure: CalledProcessError, said by main


def read_val(run: Path):
    """-> [(cpu_seconds, step, val_gain, val_psnr)] of the run's validation rows."""
    rows = read_rows(run)
    return [(t, int(r["step"]), float(r["val_gain"]), float(r["val_psnr"]))
            for r, t in zip(rows, cumulative_cpu(rows)) if r.get("val_gain") and t is not None]


def last_step(run: Path) -> int:
    return max((int(r["step"]) for r in read_rows(run) if r.get("step")), default=0)


def report(out: Path, marks) -> str:
    from benchmarks.common import cpu_flags
    from fastreshuffle.nn.config import PRESETS
    lines = [f"Report printed on: {platform.processor() or platform.machine()}; {cpu_flags()} "
             "(the logs do not record the CPU they were made on)", "",
             "Validation gain over the codec (dB; one MSE over 8 held-out CBSD432 images x JPEG q10/30/50, "
             "256x256 centre crops), at equal CPU time (1 thread):", "",
             "| preset | params | MACs/pixel | " + " | ".join(f"{m / 60:g} min" for m in marks)
             + " | steps done | s/step |",
             "|---|---|---|" + "---|" * len(marks) + "---|---|"]
    for p in PRESET_ORDER:
        run = out / p
        if not (run / "log.csv").exists():
            continue
        rows = read_val(run)
        cells = []
        for m in marks:
            done = [g for t, _, g, _ in rows if t <= m * 1.02]
            reached = rows and rows[-1][0] >= m * 0.95     # the run got that far
            cells.append(f"{done[-1]:+.3f}" if done and reached else "-")
        steps = last_step(run)
        per = rows[-1][0] / rows[-1][1] if rows else float("nan")
        cfg = PRESETS[p]
        lines.append(f"| {p} | {cfg.num_parameters():,} | {cfg.macs_per_pixel():,.0f} | " + " | ".join(cells)
                     + f" | {steps} | {per:.2f} |")
    return "\n".join(lines) + "\n"


def window_means(out: Path, width: float, until: float) -> str:
    """The mean of each run's validations in consecutive windows of ``width`` CPU seconds up to
    ``until``: steadier than one validation per mark (consecutive ones differ by ~0.02 dB)."""
    edges = [width * i for i in range(int(until // width) + 1)]
    lines = ["| preset | " + " | ".join(f"{a / 60:g}-{b / 60:g} min" for a, b in zip(edges, edges[1:])) + " |",
             "|---|" + "---|" * (len(edges) - 1)]
    for p in PRESET_ORDER:
        rows = read_val(out / p)
        if not rows:
            continue
        cells = []
        for a, b in zip(edges, edges[1:]):
            g = [gain for t, _, gain, _ in rows if a < t <= b]
            cells.append(f"{sum(g) / len(g):+.3f} ({len(g)})" if g else "-")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=1800, help="CPU seconds per preset [1800]")
    ap.add_argument("--out", type=Path, default=Path("runs/preset_study"),
                    help="one run folder per preset in it [runs/preset_study]")
    ap.add_argument("--overwrite", action="store_true", help="with --report FILE: replace FILE if it exists")
    ap.add_argument("--presets", nargs="+", default=list(PRESET_ORDER), choices=PRESET_ORDER)
    ap.add_argument("--report", type=Path, default=None,
                    help="only write the table (markdown) from the runs' logs to this file ('-': stdout)")
    ap.add_argument("--marks", type=float, nargs="+", default=None, metavar="MIN",
                    help="report columns, minutes of CPU [a quarter, half, three quarters and all of --budget]")
    ap.add_argument("--validations", type=int, default=10, metavar="N",
                    help="validations per run, spread over --budget (their CPU time is in the budget) [10]")
    ap.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                    help="also checkpoint every SECONDS of training, for runs that may be killed [off]")
    ap.add_argument("--window", type=float, default=None, metavar="MIN",
                    help="with --report: instead, the mean validation gain in windows of MIN minutes of CPU, "
                         "up to the last mark (or --budget); each cell gives the number of validations averaged")
    ap.add_argument("--lr", type=float, default=None,
                    help="a learning rate other than the recipe's constant 5e-4 (a deviation: use its own --out)")
    ap.add_argument("--grad-clip", type=float, default=None,
                    help="clip the gradient norm (train --grad-clip; a deviation: use its own --out) [off]")
    a = ap.parse_args(argv)
    if a.validations < 1 or not a.budget > 0 or (a.window is not None and not a.window > 0):
        ap.error("--validations must be at least 1, --budget and --window positive")
    if (a.lr is not None and not a.lr > 0) or (a.grad_clip is not None and not a.grad_clip > 0):
        ap.error("--lr and --grad-clip must be positive")
    if a.report is None and (a.window is not None or a.marks is not None):
        ap.error("--window and --marks only shape a --report (without one, the study would start training)")
    if a.report is not None:
        if not any((a.out / p / "log.csv").is_file() for p in PRESET_ORDER):
            print(f"preset_study: error: no run under {a.out} ({', '.join(PRESET_ORDER)} with a log.csv)",
                  file=sys.stderr)
            return 2
        if str(a.report) != "-":
            from fastreshuffle.cli._common import check_output_arg
            from fastreshuffle.errors import UserError
            try:
                check_output_arg("--report", a.report, a.overwrite)
            except UserError as e:
                print(f"preset_study: error: {e}", file=sys.stderr)
                return 2
        marks = ([m * 60 for m in a.marks] if a.marks else [a.budget * f for f in (0.25, 0.5, 0.75, 1.0)])
        text = window_means(a.out, a.window * 60, marks[-1]) if a.window else report(a.out, marks)
        if str(a.report) == "-":
            print(text, end="")
        else:
            from fastreshuffle.io.safe_write import atomic_write_bytes
            atomic_write_bytes(a.report, text.encode(), overwrite=a.overwrite)
        return 0
    for p in a.presets:
        try:
            train(p, a.budget, a.out, a.validations, a.checkpoint_every, a.lr, a.grad_clip)
        except subprocess.CalledProcessError as e:
            print(f"preset_study: error: the {p} run stopped with status {e.returncode} (see above)", file=sys.stderr)
            return e.returncode if 0 < e.returncode < 256 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
