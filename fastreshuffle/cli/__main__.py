"""``python -m fastreshuffle.cli ...`` (same as the ``fastreshuffle`` command)."""
from . import console

console()
