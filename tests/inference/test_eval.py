"""eval JSON schema and bad-input messages; robust image reading (fastreshuffle.io.images)."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastreshuffle.cli import main
from fastreshuffle.errors import ImageReadError
from fastreshuffle.io.images import read_image

from helpers import make_images

KEYS = {"images", "bpp", "psnr_codec", "psnr_restored", "psnr_codec_mean", "psnr_restored_mean", "ssim_codec",
        "ssim_restored", "psnrb_codec", "psnrb_restored", "per_image", "codec", "quality"}


@pytest.fixture()
def weights(tmp_path):
    import torch
    from fastreshuffle import PRESETS, ReshuffleNet
    from fastreshuffle.io.weights import save_weights
    torch.manual_seed(0)
    return save_weights(ReshuffleNet(PRESETS["tiny"]), tmp_path / "w.safetensors")


def test_eval_json_schema_and_plot(tmp_path, weights, capsys):
    data = make_images(tmp_path / "imgs", n=3, size=40)
    out = tmp_path / "res.json"
    rc = main(["eval", "--data", str(data), "--codec", "jpeg", "--quality", "10", "40", "--weights", str(weights),
               "--no-fast", "--json", str(out), "--plot", str(tmp_path / "rd.png"), "-q"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "PSNR set" in table and "restored" in table
    doc = json.loads(out.read_text())
    assert doc["images"] == 3 and doc["model"]["class"] == "ReshuffleNet"
    assert len(doc["results"]) == 2
    r10, r40 = doc["results"]
    for r in doc["results"]:
        assert KEYS <= set(r)
        assert r["images"] == 3 and len(r["per_image"]) == 3
        assert all(isinstance(r[k], float) for k in KEYS - {"per_image", "codec", "quality", "images"})
        assert r["psnr_codec_mean"] >= r["psnr_codec"] - 1e-9  # Jensen (the images are all of one size)
        # dataset-level PSNR recomputed from the per-image rows (same pixel count each)
        mses = [255 ** 2 / 10 ** (row["psnr_codec"] / 10) for row in r["per_image"]]
        assert r["psnr_codec"] == pytest.approx(10 * np.log10(255 ** 2 / np.mean(mses)))
    assert r10["bpp"] < r40["bpp"] and r10["psnr_codec"] < r40["psnr_codec"]
    assert (tmp_path / "rd.png").stat().st_size > 1000


def test_eval_does_not_take_its_own_plot_for_an_image(tmp_path, capsys):
    """From a CLI probe (session 52): --plot written into the data folder was counted as an
    image by the next eval of that folder ("2 images"), changing its figures silently."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(["eval", "--data", str(data), "--quality", "30", "50", "--plot", str(data / "rd.png"), "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--quality", "30", "--json", str(tmp_path / "r.json")]) == 0
    out, err = capsys.readouterr()
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 2, out
    assert "skipped 1 file(s) that are fastreshuffle outputs (restored images or eval plots" in err


def test_eval_warns_of_originals_that_are_decoded_jpegs_and_skips_hidden_folders(tmp_path, capsys):
    """From a probe of eval (session 52): a PNG saved from a JPEG q30 was scored as an original
    without a word (gain -8.2 dB, worst -17.8); -r read images inside hidden folders
    (.ipynb_checkpoints, .thumbnails); --json "" wrote nothing, exit 0."""
    import io

    from skimage import data
    folder = make_images(tmp_path / "imgs", n=2, size=64)
    b = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:160, :200])).save(b, "JPEG", quality=30)
    Image.open(b).convert("RGB").save(folder / "was_jpeg.png")
    (folder / ".thumbnails").mkdir()
    Image.open(folder / "img0.png").save(folder / ".thumbnails" / "t.png")
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(folder), "--quality", "30", "-r", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 of the 3 images hold a decoded JPEG in their pixels (was_jpeg.png (~q30)): the figures are" in err, err
    assert json.loads(out.read_text())["images"] == 3
    for opt in ("--json", "--plot"):
        assert main(["eval", "--data", str(folder), "--quality", "30", opt, ""]) == 2
        assert f"{opt} names no file (an empty name)" in capsys.readouterr().err


def test_eval_says_what_its_plot_and_scores_leave_out(tmp_path, capsys):
    """From a probe of eval (session 52): a set whose PSNR is infinite (a flat picture JPEG codes
    exactly) gave an empty plot without a word; a 16-bit colour PNG was scored at 8 bits without
    a note (other 16-bit inputs had one)."""
    from helpers import png16_bytes
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(flat / "f.png")
    assert main(["eval", "--data", str(flat), "--quality", "10", "50", "--plot", str(tmp_path / "p.png")]) == 0
    assert "--plot leaves out 2 point(s) whose PSNR is infinite" in capsys.readouterr().err
    deep = tmp_path / "deep"
    deep.mkdir()
    rng = np.random.default_rng(0)
    (deep / "d.png").write_bytes(png16_bytes(rng.integers(0, 65536, (40, 48, 3), dtype=np.uint16)))
    assert main(["eval", "--data", str(deep), "--quality", "30"]) == 0
    assert "d.png: 16-bit samples decoded at 8 bits (scored at 8 bits)" in capsys.readouterr().err


def test_eval_codes_a_grey_original_as_a_grey_jpeg(tmp_path):
    """From a probe of eval (session 52): a grey PNG was coded as a 3-component JPEG, its bpp ~70%
    above a grey JPEG's at the same PSNR (0.474 vs 0.275 at q10).  It is coded as grey benchmarks
    code it, one component: bpp and PSNR against Pillow's grey JPEG computed here."""
    import io

    from skimage import data
    g = np.ascontiguousarray(data.camera()[:99, :155])
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.fromarray(g, "L").save(folder / "g.png")
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(folder), "--quality", "10", "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())["results"][0]
    b = io.BytesIO()
    Image.fromarray(g, "L").save(b, "JPEG", quality=10)
    dec = np.asarray(Image.open(b)).astype(np.float64)
    assert r["bpp"] == pytest.approx(len(b.getvalue()) * 8 / g.size)
    assert r["psnr_codec"] == pytest.approx(10 * np.log10(255 ** 2 / np.mean((dec - g) ** 2)))


def test_eval_codec_only_hevc(tmp_path):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    out = tmp_path / "res.json"
    assert main(["eval", "--data", str(data), "--codec", "hevc", "--qp", "30", "40", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    a, b = doc["results"]
    assert a["qp"] == 30 and a["psnr_restored"] is None and a["bpp"] > b["bpp"]


def test_eval_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--data", str(empty), "-q"]) == 2
    assert "no image files" in capsys.readouterr().err
    data = make_images(tmp_path / "imgs", n=2, size=40)
    (data / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["eval", "--data", str(data), "-q"]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "--skip-bad" in err and "Traceback" not in err
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--skip-bad", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert doc["images"] == 2 and len(doc["skipped"]) == 1
    # --limit counts images read, not files (bad.jpg sorts first: it gave 1 image of 2; a probe)
    assert main(["eval", "--data", str(data), "--skip-bad", "--limit", "2", "--json", str(out), "--overwrite", "-q"]) == 0
    assert json.loads(out.read_text())["images"] == 2
    assert main(["eval", "--data", str(data), "--weights", str(tmp_path / "nope.safetensors"), "-q",
                 "--skip-bad"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--codec", "png", "-q"]) == 2


# ---------------------------------------------------------------- imageio
def test_read_image_modes(tmp_path):
    rgb = (np.arange(20 * 30 * 3) % 251).reshape(20, 30, 3).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and np.array_equal(g[..., 1], rgb[..., 0])
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (20, 30, 3)
    rgba = np.dstack([rgb, np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out, alpha = read_image(tmp_path / "rgba.png", return_alpha=True)
    assert np.array_equal(out, rgb) and (alpha == 7).all()
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").shape == (20, 30, 3)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").shape == (20, 30, 3)
    g16 = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    r16 = read_image(tmp_path / "g16.png")
    assert r16.dtype == np.uint8 and r16[-1, -1, 0] == round(59900 / 65535 * 255)


def test_read_image_exif_orientation(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :10] = 255
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (20, 10, 3)


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"hello world, not an image")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / "trunc.png")
    assert e.value.path.endswith("trunc.png")
    with pytest.raises(ImageReadError, match="too large|bomb"):
        read_image(tmp_path / "t.png", max_pixels=1000)


def test_read_image_palette_alpha_and_48bit(tmp_path):
    import struct
    import zlib
    rgb = (np.arange(20 * 30 * 3) % 251).reshape(20, 30, 3).astype(np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png", return_alpha=True)[1] is None
    Image.fromarray(rgb).convert("P").save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png", return_alpha=True)[1] is not None
    h, w = 4, 5
    raw = b"".join(b"\x00" + np.full((w, 3), 40000, ">u2").tobytes() for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "48.png").write_bytes(png)
    out = read_image(tmp_path / "48.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and int(out[0, 0, 0]) == round(40000 / 65535 * 255)


def test_eval_fixed_qp_spec_is_labelled_by_its_qp(tmp_path):
    """``--codec hevc:qp=45`` was labelled quality 10 (the default) while coding at QP 45."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", "--data", str(data), "--codec", "hevc:qp=45", "--json", str(a), "-q"]) == 0
    assert main(["eval", "--data", str(data), "--codec", "hevc", "--qp", "45", "--json", str(b), "-q"]) == 0
    ra, rb = json.loads(a.read_text())["results"][0], json.loads(b.read_text())["results"][0]
    assert ra == rb and ra["qp"] == 45 and "quality" not in ra    # the same row as --qp 45, labels too
    assert main(["eval", "--data", str(data), "--codec", "hevc:qp=45", "--quality", "10", "-q"]) == 2


@pytest.mark.parametrize("extra, said", [
    (["--quality", "0"], "quality must be in 1..100, got 0"),
    (["--quality", "101"], "quality must be in 1..100, got 101"),
    (["--codec", "hevc", "--quality", "101"], "hevc quality must be in"),
    (["--codec", "hevc:qp=99"], "HEVC QP must be a whole number in 0..51"),
    (["--limit", "-1"], "--limit must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--plot", "rd.txt", "--quality", "10", "20"], "name it .png"),
    (["--codec", "jpeg:10", "--quality", "20"], "gives the quality 10 and --quality gives 20: give it once"),
])
def test_eval_bad_options_are_one_line_errors(tmp_path, capsys, extra, said):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(["eval", "--data", str(data), "-q"] + extra) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_eval_outputs_are_never_replaced_unasked(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    mine = tmp_path / "mine.json"
    mine.write_text("keep")
    assert main(["eval", "--data", str(data), "--json", str(mine), "-q"]) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err and mine.read_text() == "keep"
    assert main(["eval", "--data", str(data), "--json", str(data), "-q"]) == 2      # a folder
    assert "is a folder" in capsys.readouterr().err
    plot = tmp_path / "rd.png"
    assert main(["eval", "--data", str(data), "--quality", "10", "30", "--json", str(mine), "--plot", str(plot),
                 "--overwrite", "-q"]) == 0
    assert json.loads(mine.read_text())["results"] and Image.open(plot).format == "PNG"
    # the same file twice: refused before the run, even with --overwrite (the plot would replace the JSON)
    assert main(["eval", "--data", str(data), "--quality", "10", "30", "--json", str(plot), "--plot", str(plot),
                 "--overwrite", "-q"]) == 2
    assert "name the same file" in capsys.readouterr().err and Image.open(plot).format == "PNG"
    dangling = tmp_path / "link.json"
    dangling.symlink_to(tmp_path / "nowhere.json")   # a link is an existing output: kept, said up front
    assert main(["eval", "--data", str(data), "--json", str(dangling), "-q"]) == 2
    assert "exists; use --overwrite" in capsys.readouterr().err and dangling.is_symlink()
    # one of the images measured, named as --json or --plot: refused even with --overwrite
    image = sorted(data.iterdir())[0]
    before = image.read_bytes()
    for opt in ("--json", "--plot"):
        assert main(["eval", "--data", str(data), "--quality", "10", "30", opt, str(image), "--overwrite", "-q"]) == 2
        assert "is one of the images in" in capsys.readouterr().err and image.read_bytes() == before


def test_eval_write_errors_are_one_line_and_keep_the_other_output(tmp_path, capsys, monkeypatch):
    from fastreshuffle.io import safe_write
    data = make_images(tmp_path / "imgs", n=2, size=40)

    def full(path, data, **kw):
        raise OSError(27, "File too large", str(path))
    monkeypatch.setattr(safe_write, "atomic_write_bytes", full)
    plot = tmp_path / "rd.png"
    assert main(["eval", "--data", str(data), "--quality", "10", "30", "--json", str(tmp_path / "r.json"),
                 "--plot", str(plot), "-q"]) == 1
    err = capsys.readouterr().err
    assert "--json" in err and "cannot write: File too large" in err and "Traceback" not in err
    assert Image.open(plot).format == "PNG" and not (tmp_path / "r.json").exists()


def test_eval_tiny_and_exactly_coded_images(tmp_path, weights, capsys):
    """An image under SSIM's 11-px window is evaluated (its SSIM left out, not a traceback); a
    flat black image decodes exactly (PSNR inf): unchanged it gains 0 (not inf - inf = NaN),
    changed it gains -inf, printed as "-inf"."""
    import math

    from fastreshuffle.inference.evaluate import _gain, print_table
    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 40, 3)).astype(np.uint8)).save(data / "tiny.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(data / "black.png")
    out = tmp_path / "res.json"
    assert main(["eval", "--data", str(data), "--codec", "jpeg", "--quality", "10", "--weights", str(weights),
                 "--no-guard", "--json", str(out), "-q"]) == 0
    def strict(constant):   # Infinity / NaN are not JSON: a strict reader refuses them
        raise ValueError(f"not JSON: {constant}")
    rows = {r["name"]: r for r in json.loads(out.read_text(), parse_constant=strict)["results"][0]["per_image"]}
    assert rows["tiny.png"]["ssim_codec"] is None and rows["tiny.png"]["ssim_restored"] is None
    assert math.isfinite(rows["tiny.png"]["psnr_codec"]) and rows["black.png"]["psnr_codec"] == "Infinity"
    assert float(rows["black.png"]["psnr_codec"]) == math.inf
    assert rows["tiny.png"]["psnr_restored"] == rows["tiny.png"]["psnr_codec"]   # under 8 px: unchanged, as restore()
    assert _gain(math.inf, math.inf) == 0.0 and _gain(38.5, math.inf) == -math.inf and _gain(30.0, 29.5) == 0.5
    capsys.readouterr()
    print_table([{"codec": "jpeg", "quality": 10, "images": 1, "bpp": 1.0, "psnr_codec": math.inf,
                  "psnr_codec_mean": math.inf, "ssim_codec": 1.0, "psnrb_codec": math.inf,
                  "psnr_restored": 40.0, "psnr_restored_mean": 40.0, "ssim_restored": 0.9, "psnrb_restored": 40.0,
                  "gain": -math.inf, "gain_mean": -math.inf, "gain_worst": -math.inf}])
    table = capsys.readouterr().out
    assert "-inf" in table and "+inf" not in table


def test_eval_table_columns_line_up_and_name_the_codec_options(tmp_path, weights, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(["eval", "--data", str(data), "--codec", "jpeg:444", "--quality", "10", "50", "--weights",
                 str(weights), "-q"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "|" in ln]
    assert len(lines) == 3 and len({tuple(i for i, ch in enumerate(ln) if ch == "|") for ln in lines}) == 1
    assert all("jpeg:444" in ln for ln in lines[1:])


def test_eval_says_sub_folders_it_does_not_search_and_leaves_nothing_when_it_fails(tmp_path, capsys):
    data = make_images(tmp_path / "imgs", n=2, size=40)
    make_images(data / "more", n=1, size=40)
    assert main(["eval", "--data", str(data), "-q"]) == 0
    assert "1 sub-folder(s) of" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--data", str(tmp_path / "empty"), "--json", str(tmp_path / "a" / "b" / "r.json")]) == 2
    assert not (tmp_path / "a").exists()


def test_eval_skips_what_restore_wrote_into_the_folder(tmp_path, weights, capsys):
    """restore writes *_restored.png beside its inputs; eval on that folder counted them as test
    images (4 originals + 4 outputs = '8 images')."""
    data = make_images(tmp_path / "imgs", n=2, size=40)
    assert main(["restore", str(data), "--model", str(weights), "-q"]) == 0
    assert len(list(data.glob("*_restored.png"))) == 2
    capsys.readouterr()
    assert main(["eval", "--data", str(data), "--json", str(tmp_path / "r.json"), "-q"]) == 0
    assert "skipped 2 file(s) that are fastreshuffle outputs" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 2
    for f in data.glob("img*.png"):
        if not f.name.endswith("_restored.png"):
            f.unlink()
    assert main(["eval", "--data", str(data), "-q"]) == 2
    assert "other than fastreshuffle outputs" in capsys.readouterr().err


def test_eval_aggregates_are_those_of_the_per_image_rows(tmp_path):
    """psnr_restored is the set-level PSNR (one MSE over the set), gain_mean the mean
    and gain_worst the minimum of the per-image gains."""
    from fastreshuffle import PRESETS, ReshuffleNet
    from fastreshuffle.inference.evaluate import evaluate, load_eval_images
    from fastreshuffle.io.codecs import parse_spec
    torch.manual_seed(0)
    model = ReshuffleNet(PRESETS["tiny"]).eval()
    images, names, _ = load_eval_images(make_images(tmp_path / "imgs", n=4, size=40))
    r = evaluate(images, names, parse_spec("jpeg"), [{"quality": 10}], model=model, guard=False)[0]
    rows = r["per_image"]
    gains = [row["psnr_restored"] - row["psnr_codec"] for row in rows]
    assert len(set(np.round(gains, 6))) > 1                    # the images differ, so min != mean != max
    assert r["gain_worst"] == pytest.approx(min(gains))
    assert r["gain_mean"] == pytest.approx(np.mean(gains))
    mses = [255 ** 2 / 10 ** (row["psnr_restored"] / 10) for row in rows]   # same size each
    assert r["psnr_restored"] == pytest.approx(10 * math.log10(255 ** 2 / np.mean(mses)))
    assert r["gain"] == pytest.approx(r["psnr_restored"] - r["psnr_codec"])


def test_an_image_of_exactly_the_ssim_window_has_an_ssim(tmp_path):
    """SSIM is left out only for images smaller than its 11x11 window, not for one of 11 px."""
    from PIL import Image

    from fastreshuffle.inference.evaluate import evaluate, load_eval_images
    from fastreshuffle.io.codecs import parse_spec
    from fastreshuffle.metrics import SSIM_WINDOW
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SSIM_WINDOW, 40, 3)).astype(np.uint8)).save(d / "a.png")
    images, names, _ = load_eval_images(d)
    r = evaluate(images, names, parse_spec("jpeg"), [{"quality": 30}])[0]
    assert r["per_image"][0]["ssim_codec"] is not None and r["ssim_codec"] is not None


def test_eval_refuses_a_qp_outside_0_51(tmp_path, capsys):
    """eval --qp outside 0..51 is a one-line usage error, before any coding."""
    from helpers import make_images

    from fastreshuffle.cli import main
    data = make_images(tmp_path / "imgs", n=1, size=32)
    for bad in ("52", "-1", "99"):
        assert main(["eval", "--data", str(data), "--codec", "hevc", "--qp", bad, "-q"]) == 2
        err = capsys.readouterr().err
        assert "HEVC QP must be a whole number in 0..51" in err and "Traceback" not in err


def test_eval_evaluates_a_quality_given_twice_once(tmp_path, capsys):
    """``--quality 10 10 20`` evaluated (and wrote to the JSON) q10 twice."""
    import json

    from helpers import make_images

    from fastreshuffle.cli import main
    data = make_images(tmp_path / "imgs", n=1, size=32)
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--quality", "10", "10", "20", "-q", "--json", str(out)]) == 0
    assert [r["quality"] for r in json.loads(out.read_text())["results"]] == [10, 20]


def test_eval_says_when_the_model_was_trained_for_another_codec(tmp_path, capsys):
    from helpers import make_images

    from fastreshuffle.cli import main
    data = make_images(tmp_path / "imgs", n=1, size=32)
    assert main(["eval", "--data", str(data), "--model", "hevc", "--quality", "50", "-q"]) == 0
    assert "trained for hevc, the images are coded with jpeg" in capsys.readouterr().err
    assert main(["eval", "--data", str(data), "--model", "jpeg", "--quality", "50", "-q"]) == 0
    assert "trained for" not in capsys.readouterr().err


def test_eval_warns_that_jpeg_files_are_not_originals(tmp_path, capsys):
    """A new user's own JPEG folder gave "-25 dB" with no word on why: eval needs originals."""
    import numpy as np
    from PIL import Image

    from fastreshuffle.cli import main
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "imgs" / "a.jpg", quality=90)
    assert main(["eval", "--data", str(tmp_path / "imgs"), "--quality", "50", "-q"]) == 0
    assert "1 of the 1 images are in a lossy format (a.jpg)" in capsys.readouterr().err


def test_eval_recursive_takes_the_sub_folders(tmp_path, capsys):
    from helpers import make_images

    from fastreshuffle.cli import main
    data = make_images(tmp_path / "imgs", n=1, size=32)
    make_images(data / "more", n=2, size=32, seed=3)
    assert main(["eval", "--data", str(data), "--quality", "50", "-q"]) == 0
    said = capsys.readouterr()
    assert "-r includes them" in said.err and ": 1 image\n" in said.out
    assert main(["eval", "--data", str(data), "--quality", "50", "-q", "-r"]) == 0
    assert ": 3 images" in capsys.readouterr().out


def test_eval_evaluates_a_qp_given_twice_once(tmp_path):
    from helpers import make_images

    from fastreshuffle.cli import main
    data = make_images(tmp_path / "imgs", n=1, size=32)
    out = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--codec", "hevc", "--qp", "40", "40", "30", "-q",
                 "--json", str(out)]) == 0
    assert [r["qp"] for r in json.loads(out.read_text())["results"]] == [40, 30]


def test_eval_guards_the_hevc_model_by_the_qp_as_restore_does():
    """eval --codec hevc with the hevc model: the QP guard (route HEIF_QP), as restore() of the
    HEIF file; not the blind JPEG guard (which finds no JPEG in HEVC pixels: gain 0)."""
    from skimage import data

    from fastreshuffle.inference.evaluate import evaluate
    from fastreshuffle.inference.loading import Bands, get_model
    from fastreshuffle.io.codecs import parse_spec
    a = np.ascontiguousarray(data.astronaut()[120:248, 180:308, :3])
    bands = Bands("hevc", lambda m: get_model(m, torch.device("cpu"), False, "fp32"))
    low, high = evaluate([a], ["a"], parse_spec("hevc"), [{"qp": 40}, {"qp": 12}], model=bands.net(), bands=bands)
    assert low["gain"] > 0.1, low["gain"]     # restored (not left as it is: no JPEG in HEVC pixels)
    assert high["gain"] == 0.0, high["gain"]  # QP 12: strength 0, pixels left as they are (not the raw network)
