"""--model auto (the default): HEIF -> hevc with the strength of its QP, JPEG -> jpeg with its
tables, PNG -> jpeg only where JPEG compression is found (#14 item 2)."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from fastreshuffle.cli import main


def photo(size=192):
    from skimage import data
    a = data.astronaut()
    return np.ascontiguousarray(a[120:120 + size, 160:160 + size])


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_auto_picks_per_file_and_says_so(tmp_path, capsys):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    a = photo()
    Image.fromarray(a).save(tmp_path / "low.heic", quality=10)
    Image.fromarray(a).save(tmp_path / "high.heic", quality=70)
    Image.fromarray(a).save(tmp_path / "j.jpg", quality=20)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=20)
    Image.open(buf).convert("RGB").save(tmp_path / "was_jpeg.png")
    Image.fromarray(a).save(tmp_path / "clean.png")
    assert main(["restore", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    # each file with the model that made its pixels: the band's; none for one left as it was
    assert "low.heic: model hevc-low (" in err and "j.jpg: model jpeg-low (" in err, err
    assert re.search(r"was_jpeg\.png: model jpeg(-low|-mid|-high)? \(", err), err   # a JPEG network's line
    assert "clean.png: model" not in err and "high.heic: model" not in err
    assert "clean.png: no JPEG compression found" in err
    # clean.png and high.heic are written as they were: not counted as restored
    assert "3 restored, 2 passed through, 0 skipped, 0 failed" in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "clean_restored.png")), a)
    for name, src in (("low", "low.heic"), ("high", "high.heic")):
        dec = np.asarray(Image.open(tmp_path / src).convert("RGB"))
        out = np.asarray(Image.open(tmp_path / f"{name}_restored.png"))
        assert psnr(a, out) >= psnr(a, dec) - 0.05, name    # never worse
    assert "high.heic: HEIF coded at QP" in err and "little to remove" in err   # quality 70: QP 12
    dec = np.asarray(Image.open(tmp_path / "low.heic").convert("RGB"))
    assert psnr(a, np.asarray(Image.open(tmp_path / "low_restored.png"))) > psnr(a, dec) + 0.05  # and helps
    dec = np.asarray(Image.open(buf).convert("RGB"))
    got = np.asarray(Image.open(tmp_path / "was_jpeg_restored.png"))
    assert psnr(a, got) > psnr(a, dec) + 0.3      # the JPEG history in a PNG was found and restored


def test_tally_counts_a_file_passed_through_apart(tmp_path, capsys):
    """The end-of-run tally: a file whose pixels the guard left as they were is not "restored"."""
    a = photo(64)
    Image.fromarray(a).save(tmp_path / "j.jpg", quality=20)
    Image.fromarray(a).save(tmp_path / "clean.png")
    assert main(["restore", str(tmp_path), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "done in" in err and "1 restored, 1 passed through, 0 skipped, 0 failed" in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "clean_restored.png")), a)
    assert main(["restore", str(tmp_path / "j.jpg"), "--device", "cpu", "--overwrite"]) == 0
    assert "1 restored, 0 passed through, 0 skipped, 0 failed" in capsys.readouterr().err


def test_explicit_model_and_no_guard(tmp_path):
    a = photo()
    Image.fromarray(a).save(tmp_path / "clean.png")
    assert main(["restore", "-q", str(tmp_path / "clean.png"), "--model", "jpeg", "--no-guard",
                 "--device", "cpu"]) == 0
    out = np.asarray(Image.open(tmp_path / "clean_restored.png"))
    assert np.abs(out.astype(int) - a).max() > 0   # the raw network changes a clean photo (why the guard exists)


def test_hevc_model_on_decoded_pixels_says_it_is_unguarded(tmp_path, capsys):
    a = photo(64)
    Image.fromarray(a).save(tmp_path / "decoded.png")
    assert main(["restore", str(tmp_path / "decoded.png"), "--model", "hevc", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "decoded.png: not a HEIF file, so its HEVC QP is unknown" in err and "unguarded" in err
    assert main(["restore", str(tmp_path / "decoded.png"), "--model", "hevc", "--no-guard", "--overwrite",
                 "--device", "cpu"]) == 0
    assert "QP is unknown" not in capsys.readouterr().err   # --no-guard asked for it: nothing to say
