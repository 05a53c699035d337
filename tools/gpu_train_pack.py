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

The pack is built in a new folder beside ``--out`` and put in place only when complete, so a
failed run (pip, a full disk, a cap nothing fits in, Ctrl-C) leaves the previous pack as it was.
A pack that would take the device call over its 64 MiB (with the working tree: tracked and
untracked, not ignored, files) is refused: name a smaller ``--max-mib``, or ``--init`` a file
the working tree already holds (such as a shipped model) in ``GPU_TRAIN_ARGS`` instead.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "gpu_data"
PY_VERSION = "3.12"   # the GPU machine's python3 (docs/gpu_runs.md)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
CARRY_LIMIT = 64 * 2 ** 20      # what one device call carries: the working tree and the carried paths


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
    if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        raise ValueError(f"pip download of pillow-heif=={ver} for Python {PY_VERSION} failed (no network? "
                         "--no-wheel leaves it out)")
    wheels = sorted(dst.glob("pillow_heif-*.whl"))
    if not wheels:
        raise ValueError(f"pip download left no pillow_heif wheel in {dst}")
    return wheels[-1]


def tree_bytes(root: Path = ROOT, exclude=()):
    """Bytes of the working tree that travels with a device call (git's tracked and untracked,
    not ignored, files), leaving out what lies under the folders ``exclude`` (the pack being
    made, counted on its own, where it is inside the tree); None where git cannot say."""
    try:
        p = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    names = {n for n in p.stdout.decode(errors="replace").split("\0") if n}
    skip = [Path(x).resolve() for x in exclude]
    return sum((root / n).stat().st_size for n in names
               if (root / n).is_file() and not any((root / n).resolve().is_relative_to(x) for x in skip))


def _checked(args, train_dir, eval_dir):
    """-> (out, train, val) once every input is known good and ``out`` may be replaced: it must be
    missing, an empty folder or a previous pack (its MANIFEST.txt), and hold neither image folder.
    Raises ValueError / OSError naming the problem; nothing is touched before."""
    from fastreshuffle.io.weights import read_weights
    if args.val_images < 1:
        raise ValueError(f"--val-images must be at least 1, got {args.val_images}")
    if not (args.max_mib > 0 and math.isfinite(args.max_mib)):
        raise ValueError(f"--max-mib must be a positive number, got {args.max_mib}")
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

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-new-"))
    try:
        lines = _fill(new, args, train, val)
        total = sum(p.stat().st_size for p in new.rglob("*") if p.is_file())
        tree = tree_bytes(exclude=(new, out))    # the pack once, as ``total``, wherever it is
        if tree is not None and tree + total > CARRY_LIMIT:
            raise ValueError(f"the pack ({total / 2 ** 20:.1f} MiB) and the working tree ({tree / 2 ** 20:.1f} MiB) "
                             f"exceed the {CARRY_LIMIT / 2 ** 20:g} MiB a device call carries: use a smaller "
                             "--max-mib, or name in GPU_TRAIN_ARGS an --init file the working tree already holds")
    except (ValueError, OSError) as e:
        shutil.rmtree(new, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    old = None
    if out.exists():                  # a previous pack (checked above), nothing else
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-old-"))
        os.replace(out, old / "pack")
    new.chmod(0o755)                  # mkdtemp's 0700
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old)
    print("\n".join(lines))
    in_tree = "" if tree is None else f", with the working tree {(tree + total) / 2 ** 20:.1f} MiB"
    print(f"{out}: {total / 2 ** 20:.1f} MiB in all{in_tree} (a device call carries at most "
          f"{CARRY_LIMIT / 2 ** 20:g} MiB)")
    return 0


def _fill(new: Path, args, train: Path, val: Path):
    """Fill the new pack's folder -> MANIFEST lines (ValueError / OSError naming a failure)."""
    lines = []
    if args.init:        # first: it may be the previous pack's own init.safetensors
        shutil.copyfile(args.init, new / "init.safetensors")
    nt = copy_images(train, new / "train", int(args.max_mib * 2 ** 20))
    if not nt:
        raise ValueError(f"no training image of {train} fits in --max-mib {args.max_mib:g}")
    nv = copy_images(val, new / "val", 2 ** 40, max_count=args.val_images)
    lines += [f"train: {len(list((new / 'train').iterdir()))} files, {nt / 2 ** 20:.1f} MiB, from {train}",
              f"val: {len(list((new / 'val').iterdir()))} files, {nv / 2 ** 20:.1f} MiB, from {val}"]
    if args.init:
        lines.append(f"init: {args.init}, {(new / 'init.safetensors').stat().st_size / 2 ** 20:.1f} MiB")
    if args.wheel:
        w = download_wheel(new / "wheels")
        lines.append(f"wheel: {w.name}, {w.stat().st_size / 2 ** 20:.1f} MiB")
    (new / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    sys.exit(main())
