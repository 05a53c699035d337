"""The batch of ``fastreshuffle restore`` is a library function, ``inference.files.restore_files``
(the CLI reads arguments and prints what it yields): one outcome per file, in order."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastreshuffle.inference.files import NamedModels, collect_inputs, describe_error, restore_files


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
    _jpeg(src / "b.jpg", 99)                  # passed through: nothing to remove
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


def test_an_output_file_names_one_input_only(tmp_path):
    _jpeg(tmp_path / "a.jpg", 20)
    _jpeg(tmp_path / "b.jpg", 20)
    files = [(tmp_path / "a.jpg", None), (tmp_path / "b.jpg", None)]
    with pytest.raises(ValueError, match="one input, not of 2"):
        list(restore_files(files, NamedModels(torch.device("cpu"), "fp32"), output=tmp_path / "o.png"))
    assert not (tmp_path / "o.png").exists()


def test_describe_error_says_why_in_one_line():
    from fastreshuffle.errors import OutputExistsError
    assert describe_error(OutputExistsError("x.png")) == "output exists"
    assert describe_error(MemoryError()) == "out of memory (try a smaller --tile)"
    assert describe_error(PermissionError(13, "Permission denied", "/x/y.png")) == "Permission denied: /x/y.png"


def test_named_models_load_each_model_once():
    models = NamedModels(torch.device("cpu"), "fp32")
    net, codec = models("jpeg")
    assert codec == "jpeg" and models("jpeg")[0] is net


def test_an_mpo_file_is_guarded_by_its_tables_as_a_jpeg_is(tmp_path):
    """an MPO (a camera's JPEG with a second frame) is a JPEG file: the HEVC model restores it
    under its tables, as it does a .jpg."""
    from skimage import data
    a = np.ascontiguousarray(data.astronaut()[100:164, 120:200, :3])
    Image.fromarray(a).save(tmp_path / "m.jpg", "MPO", save_all=True, append_images=[Image.fromarray(a[::-1])],
                            quality=30)
    assert Image.open(tmp_path / "m.jpg").format == "MPO"
    (o,) = restore_files([(tmp_path / "m.jpg", None)], NamedModels(torch.device("cpu"), "fp32"), model="hevc",
                         outdir=tmp_path / "out")
    assert o.status in ("restored", "same")
    assert any("a JPEG file given to an HEVC model" in n for n in o.notes), o.notes
