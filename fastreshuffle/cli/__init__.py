"""``fastreshuffle`` command line: ``train``, ``eval``, ``restore``, ``demo``, ``export``.

Each subcommand lives in its own module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``: argparse in, library calls out, nothing else.  They are imported only when
used so ``--help`` stays fast.  Library errors a user can fix (:mod:`fastreshuffle.errors`) are
printed as one line with exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import List, Optional

from ..errors import ExtensionError, UserError

SUBCOMMANDS = {
    # name: (module, one-line help)
    "demo": ("fastreshuffle.cli.demo", "compress a built-in photo with JPEG q10, restore it, print PSNR, save a side-by-side PNG"),
    "restore": ("fastreshuffle.cli.restore", "remove compression artifacts from image files or folders"),
    "export": ("fastreshuffle.cli.export", "write a model as an ONNX file (standard operators, dynamic sizes)"),
    "eval": ("fastreshuffle.cli.eval", "measure codec and restored PSNR/SSIM/PSNR-B/bpp on a folder of images"),
    "train": ("fastreshuffle.cli.train", "train a model on (compressed, original) pairs with L1 (or MSE) loss + Adam"),
}
PHOTO_COMMANDS = ("restore", "eval", "train", "demo")    # they decode photos up to 16k x 16k (large_photos)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="fastreshuffle", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"fastreshuffle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        # add_arguments is looked up lazily only for the chosen command (see main)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the subcommand first, then let its module define its own arguments.
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        sub = argparse.ArgumentParser(prog=f"fastreshuffle {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        from ._common import best_effort_output, interrupted, large_photos, printable, signals_as_interrupts
        photos = large_photos() if argv[0] in PHOTO_COMMANDS else contextlib.nullcontext()
        with best_effort_output():   # a reader that quits (| head) or a full log disk does not stop the work
            try:
                with signals_as_interrupts(), photos:     # SIGTERM / SIGHUP clean up as Ctrl-C does
                    return int(module.run(args) or 0)
            except UserError as e:
                print(printable(f"fastreshuffle {argv[0]}: error: {e}"), file=sys.stderr)
                return 2
            except ExtensionError as e:
                print(printable(f"fastreshuffle {argv[0]}: error: {e}"), file=sys.stderr)
                return 1
            except KeyboardInterrupt as e:
                what, code = interrupted(e)
                print(f"fastreshuffle {argv[0]}: {what}", file=sys.stderr)
                return code
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


def console():
    """The ``fastreshuffle`` command (and ``python -m fastreshuffle.cli``): :func:`main`, then the
    exit.  A training process that joined a torchrun process group ends as
    :func:`fastreshuffle.training.dist.leave` says (only such a process has imported it)."""
    try:
        code = main()
    except KeyboardInterrupt:   # Ctrl-C before a command's own handling (while Python imports it)
        print("fastreshuffle: interrupted", file=sys.stderr)
        code = 130
    dist = sys.modules.get("fastreshuffle.training.dist")
    if dist is not None:
        dist.leave(code)
    import atexit
    atexit.register(_quit_on_interrupt, code)   # (the last registered: it runs first, as the exit starts)
    sys.exit(code)


def _quit_on_interrupt(code: int) -> None:
    """Run as the interpreter exits, the work done (its outputs written, its last line said): a
    Ctrl-C from here ends the process at once with the command's code, where it had printed a
    KeyboardInterrupt traceback from torch's exit handlers (after train's ``done:`` line).  A
    program that calls :func:`console` and goes on after its SystemExit keeps its own handler."""
    import os
    import signal

    def quit_now(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:   # (ignored, as in a background job: kept so)
            signal.signal(signal.SIGINT, quit_now)
    except (ValueError, OSError):   # (not the main thread: nothing to change)
        pass


if __name__ == "__main__":  # pragma: no cover
    console()
