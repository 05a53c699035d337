"""fp32 vs bf16 training curves: the same run (seed, data, schedule) twice, ``--precision fp32`` and
``--precision bf16``, then training loss and validation PSNR side by side at the same steps.

    python -m benchmarks.bf16_curves                       # small preset, 400 steps, both runs at once
    python -m benchmarks.bf16_curves --serial --steps 1000 --docs docs

Each run is ``python -m fastreshuffle.cli train`` in a process of its own with ``--threads 1``
(``--serial``: one after the other); run folders under ``--runs``.  Writes
``<docs>/bf16_training.csv`` (one row per logged step: loss and val PSNR of both) and
``<docs>/bf16_training.png`` (with matplotlib), and prints the markdown table of validation PSNR
at the same steps with the difference bf16 - fp32.  The ``seconds`` columns are wall time of runs
sharing the machine, not a speed measurement (that is ``benchmarks/bench_train_step.py``).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

PRECISIONS = ("fp32", "bf16")


def train_command(args, precision: str, out: Path):
    cmd = [sys.executable, "-m", "fastreshuffle.cli", "train", "--precision", precision, "--out", str(out),
           "--preset", args.preset, "--codec", args.codec, "--quality", args.quality, "--steps", str(args.steps),
           "--val-every", str(args.val_every), "--log-every", str(args.log_every), "--batch-size", str(args.batch),
           "--patch", str(args.patch), "--seed", str(args.seed), "--threads", "1", "--workers", str(args.workers),
           "--val-images", str(args.val_images), "--no-progress"]
    if args.val_quality:
        cmd += ["--val-quality", str(args.val_quality)]
    for flag, v in (("--data", args.data), ("--val", args.val), ("--data-root", args.data_root)):
        if v:
            cmd += [flag, v]
    return cmd


def read_log(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge(logs):
    """{step: {loss_fp32, val_psnr_fp32, seconds_fp32, loss_bf16, ...}} from the two runs' log.csv."""
    rows = {}
    for prec, log in logs.items():
        for r in log:
            d = rows.setdefault(int(r["step"]), {})
            for k in ("loss", "val_psnr", "val_psnr_codec", "seconds"):
                if r.get(k):
                    d[f"{k}_{prec}"] = float(r[k])
    return dict(sorted(rows.items()))


def table(rows) -> str:
    lines = ["| step | val PSNR fp32 (dB) | val PSNR bf16 (dB) | bf16 - fp32 | train L1 fp32 | train L1 bf16 |",
             "| --- | --- | --- | --- | --- | --- |"]
    codec = next((r["val_psnr_codec_fp32"] for r in rows.values() if "val_psnr_codec_fp32" in r), None)
    for step, r in rows.items():
        if "val_psnr_fp32" not in r or "val_psnr_bf16" not in r:
            continue
        lf, lb = r.get("loss_fp32"), r.get("loss_bf16")
        lines.append(f"| {step} | {r['val_psnr_fp32']:.3f} | {r['val_psnr_bf16']:.3f} | "
                     f"{r['val_psnr_bf16'] - r['val_psnr_fp32']:+.3f} | "
                     f"{'' if lf is None else f'{lf:.5f}'} | {'' if lb is None else f'{lb:.5f}'} |")
    if codec is not None:
        lines.append(f"\n(codec alone: {codec:.3f} dB)")
    return "\n".join(lines)


def plot(rows, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for prec, style in zip(PRECISIONS, ("-", "--")):
        st = [s for s, r in rows.items() if f"loss_{prec}" in r]
        a.plot(st, [rows[s][f"loss_{prec}"] for s in st], style, label=prec)
        sv = [s for s, r in rows.items() if f"val_psnr_{prec}" in r]
        b.plot(sv, [rows[s][f"val_psnr_{prec}"] for s in sv], style + "o", ms=3, label=prec)
    a.set(xlabel="step", ylabel="training L1 loss (mean over log interval)", title="training loss")
    b.set(xlabel="step", ylabel="validation PSNR (dB)", title="validation (fp32 weights, fp32 eval)")
    a.legend()
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--codec", default="jpeg")
    ap.add_argument("--quality", default="5-50")
    ap.add_argument("--val-quality", type=int, default=10)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--val-images", type=int, default=8)
    ap.add_argument("--data", default=None)
    ap.add_argument("--val", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--serial", action="store_true", help="one run after the other (default: both at once)")
    ap.add_argument("--runs", default="runs/bf16_curves", help="run folders (replaced) [runs/bf16_curves]")
    ap.add_argument("--docs", default="docs", help="where bf16_training.csv / .png go [docs]")
    args = ap.parse_args(argv)

    import shutil
    runs, docs = Path(args.runs), Path(args.docs)
    outs = {p: runs / p for p in PRECISIONS}
    for o in outs.values():
        if o.exists():
            shutil.rmtree(o)
    runs.mkdir(parents=True, exist_ok=True)
    cmds = {p: train_command(args, p, outs[p]) for p in PRECISIONS}
    print("\n".join(" ".join(c) for c in cmds.values()), flush=True)
    procs = {}
    for p in PRECISIONS:
        procs[p] = subprocess.Popen(cmds[p], stderr=subprocess.PIPE, text=True)
        if args.serial:
            procs[p].wait()
    failed = []
    for p, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(p)
            print(f"{p} run FAILED (exit {proc.returncode}):\n{err[-3000:]}")
    if failed:
        return 1
    rows = merge({p: read_log(outs[p] / "log.csv") for p in PRECISIONS})
    docs.mkdir(parents=True, exist_ok=True)
    keys = ["step"] + [f"{k}_{p}" for p in PRECISIONS for k in ("loss", "val_psnr", "val_psnr_codec", "seconds")]
    with open(docs / "bf16_training.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for step, r in rows.items():
            w.writerow({"step": step, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}})
    drawn = plot(rows, docs / "bf16_training.png")
    print(table(rows))
    print(f"\nwrote {docs / 'bf16_training.csv'}" + (f" and {docs / 'bf16_training.png'}" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
