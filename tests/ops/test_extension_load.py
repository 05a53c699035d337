"""The compiled extension records the torch release it was built against and refuses another one
as it loads (its C++ ABI differs: calls could crash), with a message saying how to rebuild; the
CLI says it in one line."""
from __future__ import annotations

import subprocess
import sys

import torch

from fastreshuffle.ops import _extension

_OTHER_TORCH = "import torch; torch.__version__ = '2.99.0+cpu'\n"


def _child(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_extension_says_which_torch_it_was_built_for():
    assert _extension.BUILT_FOR == _extension.torch_release(torch.__version__)
    assert _extension.torch_release("2.13.0+cpu") == (2, 13)
    assert _extension.torch_release("2.14.1") == (2, 14)


def test_another_torch_release_is_refused_with_how_to_rebuild():
    r = _child(_OTHER_TORCH + "import fastreshuffle.ops.reshuffle")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("fastreshuffle.errors.ExtensionError")
    assert f"compiled against torch {_extension.BUILT_FOR[0]}.{_extension.BUILT_FOR[1]}" in last
    assert "2.99.0+cpu is installed" in last and "--no-build-isolation" in last


def test_an_extension_built_before_it_recorded_its_torch_is_refused():
    r = _child("import torch; import fastreshuffle._C as C; del C.torch_major; import fastreshuffle.ops.reshuffle")
    assert r.returncode != 0
    assert "built by an older version of fastreshuffle: rebuild" in r.stderr.strip().splitlines()[-1]


def test_the_cli_says_it_in_one_line(tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32), (90, 100, 110)).save(tmp_path / "a.png")
    r = _child(_OTHER_TORCH + "import sys; from fastreshuffle.cli import main; sys.exit(main(sys.argv[1:]))",
               "restore", tmp_path / "a.png", "-o", tmp_path / "out")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastreshuffle restore: error: fastreshuffle's C++ extension")
