"""``python -m fastreshuffle.cli ...`` (same as the ``fastreshuffle`` command)."""
import sys

from . import main

sys.exit(main())
