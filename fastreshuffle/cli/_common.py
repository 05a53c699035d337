"""Arguments several commands share, and their conversion to library values."""
from __future__ import annotations

import argparse

from ..errors import UserError


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where to run (default: auto = CUDA if available)")


def device_from_args(args):
    """``--device`` -> torch.device, through the package's one device resolver."""
    from ..backends import resolve_device
    try:
        return resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
