"""Pack what ``tools/gpu_train.sh`` needs on the GPU machine (no package index, no ``../shared``)
into the git-ignored folder ``gpu_data/`` of the working tree, to be named in the device call's
``carry``:

    python -m tools.gpu_train_pack                       # CBSD432 + 8 Kodak24 images + pillow-heif wheel
    python -m tools.gpu_train_pack --max-mib 30 --no-wheel

``gpu_data/train/`` and ``gpu_data/val/`` get the image files byte for byte (CBSD432 is stored as
JPEG files, Kodak24 as PNG), taken in name order until ``--max-mib`` is reached; ``gpu_data/wheels/``
the pillow-heif wheel for the GPU machine's Python (3.12, manylinux x86-64), fetched with ``pip
download`` (the HEVC codec needs it; JPEG training does not).  ``gpu_data/MANIFEST.txt`` lists
what was packed.  Nothing here is committed: the images are the data set's, not the project's.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "gpu_data"
PY_VERSION = "3.12"   # the GPU machine's python3 (docs/gpu_runs.md)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def _images(folder: Path):
    from fastreshuffle.io.images import list_images
    return list_images(folder)


def copy_images(src: Path, dst: Path, limit_bytes: int, max_count: int = 0) -> int:
    """Copy image files of ``src`` (name order) into ``dst`` until ``limit_bytes``; -> bytes copied."""
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for n, p in enumerate(_images(src)):
        if (max_count and n >= max_count) or total + p.stat().st_size > limit_bytes:
            break
        shutil.copyfile(p, dst / p.name)
        total += p.stat().st_size
    return total


def download_wheel(dst: Path) -> Path:
    """The pillow-heif wheel of the version installed here, for the GPU machine's Python."""
    from importlib.metadata import version

    ver = version("pillow-heif")
    dst.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           PY_VERSION, "--implementation", "cp", "-d", str(dst), f"pillow-heif=={ver}"]
    for p in PLATFORMS:
        cmd[4:4] = ["--platform", p]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(dst.glob("pillow_heif-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no pillow_heif wheel in {dst}")
    return wheels[-1]


def _checked(args, train_dir, eval_dir):
    """-> (out, train, val) once every input is known good and ``out`` may be replaced: it must be
    missing, an empty folder or a previous pack (its MANIFEST.txt), and hold neither image folder.
    Raises ValueError / OSError naming the problem; nothing is touched before."""
    from fastreshuffle.io.weights import read_weights
    if args.val_images < 1:
        raise ValueError(f"--val-images must be at least 1, got {args.val_images}")
    if not args.max_mib > 0:
        raise ValueError(f"--max-mib must be positive, got {args.max_mib}")
    train = Path(args.train) if args.train else train_dir(args.data_root)
    val = Path(args.val) if args.val else eval_dir(args.data_root)
    for what, folder in (("training", train), ("validation", val)):
        if not folder.is_dir() or not _images(folder):
            raise ValueError(f"{what} folder {folder} is missing or holds no images")
    if args.init:
        try:
            read_weights(args.init)      # a clear error here rather than on the device
        except Exception as e:
            raise ValueError(f"--init {args.init}: {e}") from None
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ValueError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / "MANIFEST.txt").is_file():
            raise ValueError(f"--out {out} is a folder that is not a previous pack (no MANIFEST.txt); "
                             "refusing to replace it")
    o = out.resolve()
    for folder in (train, val):
        f = folder.resolve()
        if f == o or o in f.parents or f in o.parents:
            raise ValueError(f"--out {out} and the image folder {folder} overlap")
    return out, train, val


def main(argv=None) -> int:
    from fastreshuffle.io.datasets import eval_dir, train_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="data root (default: $FASTRESHUFFLE_DATA or ../shared/data)")
    ap.add_argument("--train", default=None, help="training image folder [<data-root>/train/CBSD432]")
    ap.add_argument("--val", default=None, help="validation image folder [<data-root>/eval/Kodak24]")
    ap.add_argument("--val-images", type=int, default=8, help="validation images to pack [8]")
    ap.add_argument("--max-mib", type=float, default=40.0, help="size cap of the training images [40]")
    ap.add_argument("--no-wheel", dest="wheel", action="store_false", help="leave out the pillow-heif wheel")
    ap.add_argument("--init", default=None, metavar="WEIGHTS",
                    help="also carry these weights as <out>/init.safetensors, for GPU_TRAIN_ARGS=\"... --init "
                         "gpu_data/init.safetensors\" (e.g. a network grown with tools.grow_weights)")
    ap.add_argument("--out", default=str(DEST), help=f"folder to fill (replaced) [{DEST}]")
    args = ap.parse_args(argv)
    try:
        out, train, val = _checked(args, train_dir, eval_dir)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)            # a previous pack (checked above), nothing else
    nt = copy_images(train, out / "train", int(args.max_mib * 2 ** 20))
    nv = copy_images(val, out / "val", 2 ** 40, max_count=args.val_images)
    if not nt:
        print(f"error: no training image of {train} fits in --max-mib {args.max_mib:g}", file=sys.stderr)
        shutil.rmtree(out)
        return 2
    lines = [f"train: {len(list((out / 'train').iterdir()))} files, {nt / 2 ** 20:.1f} MiB, from {train}",
             f"val: {len(list((out / 'val').iterdir()))} files, {nv / 2 ** 20:.1f} MiB, from {val}"]
    if args.init:
        shutil.copyfile(args.init, out / "init.safetensors")
        lines.append(f"init: {args.init}, {(out / 'init.safetensors').stat().st_size / 2 ** 20:.1f} MiB")
    if args.wheel:
        w = download_wheel(out / "wheels")
        lines.append(f"wheel: {w.name}, {w.stat().st_size / 2 ** 20:.1f} MiB")
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2 ** 20:.1f} MiB in all (the device call carries at most 64 MiB with the working tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
