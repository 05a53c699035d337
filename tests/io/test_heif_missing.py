"""Without pillow-heif (an optional extra): a HEIF file is said to need it -- not called corrupt --
by `restore` and `restore()`, and HEVC coding (`eval`, `train`) fails in one line naming it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pillow_heif")

# A child process where importing pillow_heif fails, as where it is not installed.
_BLOCK = r'''
import builtins, sys
_real = builtins.__import__
def _imp(name, *a, **k):
    if name.split(".")[0] == "pillow_heif":
        raise ImportError("No module named 'pillow_heif'")
    return _real(name, *a, **k)
builtins.__import__ = _imp
'''


def _without_heif(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def heic(tmp_path_factory):
    import pillow_heif
    pillow_heif.register_heif_opener()
    path = tmp_path_factory.mktemp("heif") / "p.heic"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(path)
    return path


def test_restore_says_a_heif_file_needs_pillow_heif(heic, tmp_path):
    r = _without_heif("from fastreshuffle.cli import main; sys.exit(main(['restore', sys.argv[1], '-o', sys.argv[2]]))",
                      heic, tmp_path / "out.png")
    assert r.returncode == 1, r.stderr
    assert "needs pillow-heif: pip install pillow-heif" in r.stderr and "corrupt" not in r.stderr
    assert not (tmp_path / "out.png").exists()


def test_restore_api_raises_unidentified_image_error_naming_pillow_heif(heic):
    r = _without_heif("import fastreshuffle\n"
                      "try:\n    fastreshuffle.restore(sys.argv[1])\n"
                      "except Exception as e:\n    print(type(e).__name__, e)\n", heic)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("UnidentifiedImageError") and "needs pillow-heif" in r.stdout


def test_heif_unreadable_only_for_heif_files_without_the_plugin(heic, tmp_path, monkeypatch):
    from fastreshuffle.io import images
    png = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    monkeypatch.setattr(images, "_heif_registered", False)        # as if pillow-heif were missing
    assert "needs pillow-heif" in images.heif_unreadable(heic)
    assert images.heif_unreadable(png) is None
    assert images.heif_unreadable(tmp_path / "missing.heic") is None
    monkeypatch.setattr(images, "_heif_registered", True)
    assert images.heif_unreadable(heic) is None


def test_an_avif_file_is_said_to_need_pillow_with_avif(tmp_path, monkeypatch):
    """pillow-heif reads no AVIF: an AVIF file Pillow cannot open names Pillow's AVIF support."""
    from PIL import features

    from fastreshuffle.io import images
    avif = tmp_path / "x.avif"
    avif.write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(40))
    monkeypatch.setattr(images, "_heif_registered", False)
    monkeypatch.setattr(features, "check", lambda name: name != "avif")
    assert "needs Pillow 11.2 or later built with AVIF" in images.heif_unreadable(avif)
    monkeypatch.setattr(features, "check", lambda name: True)
    assert images.heif_unreadable(avif) is None         # Pillow reads AVIF: this one is damaged


@pytest.mark.parametrize("command", ["eval", "train"])
def test_hevc_coding_without_pillow_heif_is_one_line(command, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    args = (["eval", "--codec", "hevc", "--quality", "15", "--data", folder] if command == "eval" else
            ["train", "--codec", "hevc", "--data", folder, "--val", folder, "--out", tmp_path / "run", "--steps", "1"])
    r = _without_heif("from fastreshuffle.cli import main; sys.exit(main(sys.argv[1:]))", *args)
    assert r.returncode == 2, r.stderr
    assert "HEVC coding needs pillow-heif" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_codec_error_names_the_missing_package(monkeypatch):
    from fastreshuffle.errors import CodecError
    from fastreshuffle.io.codecs import compress
    monkeypatch.setitem(sys.modules, "pillow_heif", None)         # import pillow_heif -> ImportError
    with pytest.raises(CodecError, match="pip install pillow-heif"):
        compress(np.zeros((32, 32, 3), np.uint8), "hevc", 15)


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"])
def test_every_heif_brand_is_said_to_need_pillow_heif(tmp_path, monkeypatch, brand):
    from fastreshuffle.io import images
    monkeypatch.setattr(images, "_heif_registered", False)          # as if pillow-heif were missing
    p = tmp_path / "x.heic"
    p.write_bytes(b"\x00\x00\x00\x18ftyp" + brand + bytes(20))
    assert f"a HEIF image ({brand.decode()})" in images.heif_unreadable(p)
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(20))            # an MP4: not HEIF
    assert images.heif_unreadable(p) is None
