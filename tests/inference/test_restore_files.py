"""The batch of ``fastreshuffle restore`` is a library function, ``inference.files.restore_files``
(the CLI reads arguments and prints what it yields): one outcome per file, in order."""
import io

import numpy as np
import torch
from PIL import Image

from fastreshuffle.inference.files import NamedModels, collect_inputs, restore_files


def _jpeg(path, q, seed=0):
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[100:164, 120:200, :3])
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    path.write_bytes(buf.getvalue())


def test_restore_files_yields_one_outcome_per_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _jpeg(src / "a.jpg", 20)
    _jpeg(src / "b.jpg", 96)                  # passed through: nothing to remove
    (src / "c.png").write_bytes(b"\x89PNG broken")
    _jpeg(src / "d.jpg", 30)
    out = tmp_path / "out"
    out.mkdir()
    (out / "d_restored.png").write_bytes(b"the user's")   # exists: skipped, never replaced
    found = collect_inputs([str(src)], recursive=False, suffix="_restored")
    models = NamedModels(torch.device("cpu"), "fp32")
    got = list(restore_files(found.files, models, outdir=out))
    assert [(o.src.name, o.status) for o in got] == [("a.jpg", "restored"), ("b.jpg", "same"), ("c.png", "failed"),
                                                      ("d.jpg", "skipped")]
    assert got[0].model == "jpeg"             # --model auto; its quality band said in a note
    assert any("restored by jpeg-low" in n for n in got[0].notes)
    assert any("no visible artifacts" in n for n in got[1].notes)
    assert got[2].reason and got[3].reason.startswith("output exists")
    assert (out / "d_restored.png").read_bytes() == b"the user's"
    assert sorted(p.name for p in out.iterdir()) == ["a_restored.png", "b_restored.png", "d_restored.png"]
