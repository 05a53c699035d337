"""Start-up cost of a one-photo ``fastreshuffle restore`` against a bare ``import torch``.

    python -m benchmarks.bench_startup                    # 3 rounds, the photo below
    python -m benchmarks.bench_startup --rounds 5 --image my.jpg

Each round runs, in fresh processes and taking turns, ``python -c "import torch"`` and
``python -m fastreshuffle.cli restore PHOTO -o TMP --overwrite -q`` on CPU (the whole command:
interpreter, imports, model load, inference, PNG write).  The photo defaults to the demo's
``astronaut`` (512x512) saved as JPEG q30 and tiled to 768x512, one typical small photo.
Prints medians, the ratio restore / import torch (issue #16's target: <= 1.5), and the heavy
modules the restore process imported (it must not import torch's compiler stack on CPU).
Exit code 1 if a run fails.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cpu_flags

HEAVY = ("torch._dynamo", "torch._inductor", "triton", "sympy")


def _photo(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    from fastreshuffle.cli.demo import demo_photo
    img = demo_photo()
    img = np.concatenate([img, img[:, :256]], axis=1)  # 512 x 768
    path = folder / "photo.jpg"
    Image.fromarray(img).save(path, quality=30)
    return path


def _time(cmd, env) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-2000:]}")
    return dt


def imported_heavy(image: Path, outdir: Path, env) -> list:
    code = ("import sys; from fastreshuffle.cli import main; "
            f"sys.argv=['fastreshuffle','restore',{str(image)!r},'-o',{str(outdir)!r},'--overwrite','-q']; "
            "rc=main(); print(','.join(m for m in %r if m in sys.modules)); sys.exit(rc)" % (HEAVY,))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"restore failed: {r.stderr[-2000:]}")
    return [m for m in r.stdout.strip().split(",") if m]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=None, help="photo to restore (default: see above)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = args.image or _photo(tmp)
        out = tmp / "out"
        torch_cmd = [sys.executable, "-c", "import torch"]
        restore_cmd = [sys.executable, "-m", "fastreshuffle.cli", "restore", str(image), "-o", str(out),
                       "--overwrite", "-q", "--device", "cpu"]
        _time(torch_cmd, env)  # warm the file cache for both
        _time(restore_cmd, env)
        t_torch, t_restore = [], []
        for _ in range(args.rounds):
            t_torch.append(_time(torch_cmd, env))
            t_restore.append(_time(restore_cmd, env))
        heavy = imported_heavy(image, out, env)
    import torch
    print(f"# start-up: torch {torch.__version__}, {os.cpu_count()} CPUs; CPU flags: {cpu_flags()}")
    print(f"photo: {image if args.image else 'astronaut 768x512 JPEG q30'}; {args.rounds} rounds, taking turns")
    mt, mr = statistics.median(t_torch), statistics.median(t_restore)
    print(f"python -c 'import torch'        median {mt:6.2f} s  ({', '.join(f'{t:.2f}' for t in t_torch)})")
    print(f"fastreshuffle restore (1 photo)  median {mr:6.2f} s  ({', '.join(f'{t:.2f}' for t in t_restore)})")
    print(f"ratio restore / import torch: {mr / mt:.2f}  (target <= 1.5)")
    print(f"compiler-stack modules imported by restore: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
