"""A one-photo CPU restore must not import torch's compiler stack (issue #16, item 3).

``torch.library.custom_op``/``triton_op`` import ``torch._dynamo`` (1.5-2 s) at registration or
on their first call; the dense-layer ops are therefore plain ``torch.library`` ops unless a
CUDA device and Triton are there.  The timing itself is ``python -m benchmarks.bench_startup``.
"""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

HEAVY = ("torch._dynamo", "torch._inductor", "triton", "sympy")


def test_one_photo_restore_imports_no_compiler_stack(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=20)
    code = ("import sys; from fastreshuffle.cli import main; "
            f"sys.argv=['fastreshuffle','restore',{str(tmp_path / 'a.jpg')!r},'-q','--device','cpu']; "
            "rc=main(); print('HEAVY=' + ','.join(m for m in %r if m in sys.modules)); sys.exit(rc)" % (HEAVY,))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a_restored.png").is_file()
    line = [x for x in r.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    assert line == "HEAVY=", f"a CPU restore imported {line[6:]}"



def test_help_of_every_command_imports_no_heavy_module():
    """``--help`` answers at once: no torch, numpy, Pillow, safetensors or Triton behind it
    (``train --help`` imported torch through ``nn/__init__`` for the presets' names: 1.5 s)."""
    from fastreshuffle.cli import SUBCOMMANDS
    heavy = ("torch", "numpy", "PIL", "safetensors", "triton")
    for command in ["", *SUBCOMMANDS]:
        code = ("import sys; from fastreshuffle.cli import main\n"
                f"try: main({[command, '--help'] if command else ['--help']!r})\n"
                "except SystemExit: pass\n"
                "print('HEAVY=' + ','.join(m for m in %r if m in sys.modules))" % (heavy,))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        line = [x for x in r.stdout.splitlines() if x.startswith("HEAVY=")][-1]
        assert line == "HEAVY=", f"fastreshuffle {command} --help imported {line[6:]}"
