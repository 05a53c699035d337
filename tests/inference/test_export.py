"""ONNX export (#15 item 1): standard operators, dynamic sizes, ONNX Runtime equals restore()."""
import warnings

import numpy as np
import pytest
import torch

import fastreshuffle as fr
from fastreshuffle.cli import main

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def jpeg_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "jpeg.onnx"
    assert main(["export", "--model", "jpeg", "--format", "onnx", "-o", str(path)]) == 0
    return path


def test_standard_operators_only(jpeg_onnx):
    proto = onnx.load(str(jpeg_onnx))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["output"]


# sides under 8 px (4 and less cannot be reflect-padded to 8: the graph once failed there in
# ONNX Runtime, and OpenVINO gave back the previous call's output) and 8 px or more
@pytest.mark.parametrize("shape", [(1, 3, 45, 67), (2, 3, 64, 64), (1, 3, 101, 33), (1, 3, 8, 8), (1, 3, 9, 15),
                                   (1, 3, 136, 130), (1, 3, 127, 200),
                                   (1, 3, 1, 1), (1, 3, 4, 4), (1, 3, 3, 20), (1, 3, 7, 64), (2, 3, 5, 9)])
def test_onnxruntime_equals_restore(jpeg_onnx, shape):
    sess = ort.InferenceSession(str(jpeg_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, (shape[0], shape[2], shape[3], 3), dtype=np.uint8)
    x = img.transpose(0, 3, 1, 2).astype(np.float32) / 255
    y = sess.run(None, {"input": x})[0]
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    got = np.round(y * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for n in range(shape[0]):
        with warnings.catch_warnings():     # (under 8 px restore() says it gives the image back)
            warnings.filterwarnings("ignore", "a .* image is under 8 pixels", UserWarning)
            want = fr.restore(img[n], "jpeg", device="cpu", tile=0, guard=False, precision="fp32")
        assert np.abs(got[n].astype(int) - want).max() <= 1          # within one 8-bit level
    if min(shape[2:]) < 8:      # restore() gives such an image back as it is, and so does the graph
        assert np.array_equal(y, x)
        return
    # and the float outputs agree closely with the PyTorch network as restore() runs it (whole,
    # a side under MIN_CONTEXT inside mirrored context)
    from fastreshuffle.inference.tiling import restore_tensor
    ref = restore_tensor(fr.load_pretrained("jpeg"), torch.from_numpy(x), tile=0).numpy()
    assert np.abs(y - ref).max() < 1e-4


def test_graph_declares_the_output_as_the_input_size(jpeg_onnx):
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    proto = onnx.load(str(jpeg_onnx))
    assert dims(proto.graph.input[0]) == dims(proto.graph.output[0]) == ["batch", 3, "height", "width"]


def test_export_refuses_to_overwrite(jpeg_onnx, capsys):
    before = jpeg_onnx.read_bytes()
    assert main(["export", "-o", str(jpeg_onnx)]) == 2
    assert "exists" in capsys.readouterr().err
    assert jpeg_onnx.read_bytes() == before
    assert onnx.load(str(jpeg_onnx)).opset_import[0].version == 18


def test_export_opset_and_paths_it_cannot_honour(tmp_path, capsys):
    """--opset 17 (or 5) used to print the exporter's traceback as a warning and write opset 18."""
    for opset in ("17", "5"):
        assert main(["export", "-o", str(tmp_path / "m.onnx"), "--opset", opset]) == 2
        assert "opset must be in 18.." in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("hint", ["f32", "bf16"])
def test_openvino_reads_the_same_file(jpeg_onnx, hint):
    """OpenVINO compiles the exported file as it is (dynamic sizes) and, in fp32, equals the
    PyTorch network (as restore() runs it) within 1e-4; with its bf16 hint (AVX512-BF16 CPUs) within 2e-2 (the float32
    image in [0, 1] rounded to bf16 inside OpenVINO is off by up to 2^-9)."""
    ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(jpeg_onnx)), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    x = np.random.default_rng(5).random((1, 3, 45, 67), dtype=np.float32)
    y = compiled({0: x})[compiled.output(0)]
    assert y.shape == x.shape
    from fastreshuffle.inference.tiling import restore_tensor
    ref = restore_tensor(fr.load_pretrained("jpeg"), torch.from_numpy(x), tile=0).numpy()
    assert np.abs(y - ref).max() < (1e-4 if hint == "f32" else 2e-2)
    # then a 4x4 image on the same compiled model: once an empty array, or the 45x67 output again
    small = np.random.default_rng(6).random((1, 3, 4, 4), dtype=np.float32)
    y = compiled({0: small})[compiled.output(0)]
    assert y.shape == small.shape and np.array_equal(y, small)


def test_export_keeps_the_weights_file_and_says_what_it_cannot_write(tmp_path, capsys):
    """-o naming the --model file with --overwrite once replaced the weights with the ONNX file;
    a file where a folder of -o should be gave a traceback (after the whole export)."""
    import shutil
    mine = tmp_path / "mine.safetensors"
    from fastreshuffle.inference.loading import weights_path
    shutil.copy(weights_path("jpeg"), mine)
    before = mine.read_bytes()
    assert main(["export", "--model", str(mine), "-o", str(mine), "--overwrite"]) == 2
    assert "is the weights file being exported" in capsys.readouterr().err
    assert mine.read_bytes() == before
    (tmp_path / "afile").write_bytes(b"x")
    for out in ("afile/x.onnx", "afile/sub/x.onnx"):
        assert main(["export", "-o", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert "error: cannot write" in err and "Not a directory" in err and err.count("\n") == 1, err
    assert (tmp_path / "afile").read_bytes() == b"x"
    # a dangling link as -o: refused before the export (it was refused only after it)
    import time
    (tmp_path / "link.onnx").symlink_to(tmp_path / "nowhere.onnx")
    t0 = time.perf_counter()
    assert main(["export", "-o", str(tmp_path / "link.onnx")]) == 2
    assert "exists" in capsys.readouterr().err and time.perf_counter() - t0 < 5
    assert not (tmp_path / "nowhere.onnx").exists()


def test_a_write_that_fails_after_the_export_exits_1_naming_the_file(tmp_path, capsys, monkeypatch):
    """A full disk at the end of the export was exit 2, the code for usage errors."""
    import errno

    import torch

    import fastreshuffle.io.safe_write as safe_write
    from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
    from fastreshuffle.io.weights import save_weights
    tiny = tmp_path / "tiny.safetensors"
    save_weights(ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval(), tiny, dtype=torch.float16)

    def full(path, data, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".fastreshuffle-m.onnx.1.part"))
    monkeypatch.setattr(safe_write, "atomic_write_bytes", full)
    assert main(["export", "--model", str(tiny), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {tmp_path / 'm.onnx'}: No space left on device" in err and ".part" not in err, err


def test_export_without_onnxscript_says_which_extra(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install onnx onnxscript onnxruntime" in err and "[onnx]" in err
    assert not list(tmp_path.iterdir())


def test_export_to_another_suffix_says_the_file_is_onnx(tmp_path, capsys, monkeypatch):
    """``-o model.pt`` writes ONNX (the only format) and says so; ``.onnx`` gets no such note."""
    import fastreshuffle.inference.export as export
    monkeypatch.setattr(export, "export_onnx", lambda model, path, **k: path)   # the file itself: tests above
    for name, noted in (("m.pt", True), ("m.ONNX", False), ("m", True)):
        assert main(["export", "-o", str(tmp_path / name)]) == 0
        assert (f"{tmp_path / name} is an ONNX file whatever its name says" in capsys.readouterr().err) == noted


def test_export_says_what_each_codec_s_network_is_for(tmp_path, capsys):
    """From a probe (session 52): the note after an export gave the JPEG advice ("JPEGs of quality
    44 or less") for the HEVC and WebP networks too; -o NAME/ wrote NAME."""
    from fastreshuffle.cli.export import _use
    assert "HEIF file's QP" in _use("hevc") and "HEIF file's QP" in _use("hevc-paper")
    assert "WebP file's quantiser index" in _use("webp")
    assert "jpeg-high 81 and more" in _use("jpeg-high") and "QP" not in _use("jpeg")
    assert main(["export", "-o", str(tmp_path / "m.onnx") + "/"]) == 2
    assert "names a folder" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()
    # (a later probe: the HEVC network's note gave the JPEG network's harm; -o " " wrote a file " ")
    from fastreshuffle.cli.export import _harm
    assert "hevc network" in _harm("hevc-paper") and "jpeg" not in _harm("hevc")
    assert "jpeg network" in _harm("jpeg-mid") and _harm("webp") == ""
    import os
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main(["export", "-o", " "]) == 2
        assert "names no file (an empty name)" in capsys.readouterr().err and os.listdir(tmp_path) == []
    finally:
        os.chdir(cwd)


def test_export_refuses_a_picture_s_name(tmp_path, capsys):
    """From a review: ``export -o photo.jpg --overwrite`` replaced the JPEG with an ONNX model.
    A picture's extension is refused before anything is exported, by the command and the API."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"a photo")
    for name in ("photo.jpg", "photo.PNG", "scan.tif"):
        assert main(["export", "-o", str(tmp_path / name), "--overwrite"]) == 2
        assert "names a picture" in capsys.readouterr().err
    assert photo.read_bytes() == b"a photo" and sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]
    from fastreshuffle.errors import UserError
    from fastreshuffle.inference.export import export_onnx
    with pytest.raises(UserError, match=r"photo.jpg names a picture \(.jpg\).*\.onnx"):
        export_onnx("jpeg", photo, overwrite=True)
    assert photo.read_bytes() == b"a photo"
