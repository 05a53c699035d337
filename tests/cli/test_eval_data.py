"""eval/train outside the repository: any folder of images, a clear error naming what to pass;
eval prints the set-level gain, the mean of per-image gains and the worst image, labelled (#16)."""
import json

import numpy as np
from helpers import make_images, png16_bytes

from fastreshuffle.cli import main


def test_eval_any_folder_from_elsewhere(tmp_path, monkeypatch, capsys):
    data = make_images(tmp_path / "photos", n=3, size=40)
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("FASTRESHUFFLE_DATA", str(tmp_path / "nothing-here"))
    rc = main(["eval", "--data", str(data), "--codec", "jpeg", "--quality", "10", "--model", "jpeg", "-q",
               "--device", "cpu", "--json", str(work / "r.json")])
    assert rc == 0
    out = capsys.readouterr().out
    head, row = [x for x in out.splitlines() if "gain" in x or x.strip().startswith("jpeg")][:2]
    assert "|  gain: set" in head and "mean" in head and "worst image" in head
    r = json.loads((work / "r.json").read_text())["results"][0]
    per = [p["psnr_restored"] - p["psnr_codec"] for p in r["per_image"]]
    assert abs(r["gain_mean"] - np.mean(per)) < 1e-9 and abs(r["gain_worst"] - min(per)) < 1e-9
    assert abs(r["gain"] - (r["psnr_restored"] - r["psnr_codec"])) < 1e-9
    # the three gains are printed in that order, with their signs, aligned under the header
    cells = row.split("|")[-1].split()
    assert [float(c) for c in cells] == [round(r["gain"], 2), round(r["gain_mean"], 2), round(r["gain_worst"], 2)]
    assert len(head) == len(row)


def test_eval_says_which_networks_made_its_figures(tmp_path, capsys):
    """`eval --model jpeg` used the quality bands without saying so (a new user's trial)."""
    data = make_images(tmp_path / "photos", n=1, size=40)
    assert main(["eval", "--data", str(data), "--quality", "90", "--model", "jpeg", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "note: model jpeg (float32, guarded as restore is); its bands: jpeg-low for JPEG quality <= 20; " in err
    assert "jpeg-high for JPEG quality >= 81" in err
    assert main(["eval", "--data", str(data), "--quality", "90", "--model", "jpeg-high", "--no-guard",
                 "--device", "cpu"]) == 0
    assert "note: model jpeg-high (float32, unguarded: --no-guard)\n" in capsys.readouterr().err


def test_eval_no_guard_uses_and_says_the_named_network_only(tmp_path, capsys):
    """`eval --model jpeg --no-guard` said (and wrote in its JSON) the bands it would pick, though
    unguarded the named network restores every quality: the figures were jpeg's alone."""
    data = make_images(tmp_path / "photos", n=1, size=40)
    figures = {}
    for extra in (["--model", "jpeg"], ["--weights", "fastreshuffle/weights/jpeg.safetensors"]):
        out = tmp_path / f"{len(figures)}.json"
        assert main(["eval", "--data", str(data), "--quality", "10", "--no-guard", "--device", "cpu",
                     "--json", str(out)] + extra) == 0
        err = capsys.readouterr().err
        assert "bands" not in err and "jpeg-low" not in err, err
        doc = json.loads(out.read_text())
        assert "bands" not in doc["model"]
        figures[extra[0]] = doc["results"][0]["psnr_restored"]
    assert figures["--model"] == figures["--weights"]


def test_eval_refuses_empty_names_and_outputs_onto_its_weights(tmp_path, capsys):
    """An empty --model / --weights / --data (an unset shell variable) was taken as not given:
    codec-only figures, or Kodak24's, with exit 0.  --json / --plot naming the weights file
    being read replaced it with --overwrite."""
    import shutil
    data = make_images(tmp_path / "photos", n=1, size=40)
    for opt in ("--model", "--weights", "--data", "--data-root"):
        args = ["eval", "--quality", "10", "--device", "cpu", opt, ""]
        assert main(args + ([] if opt == "--data" else ["--data", str(data)])) == 2, opt
        assert f"{opt} names nothing (an empty name)" in capsys.readouterr().err
    w = tmp_path / "w.safetensors"
    shutil.copyfile("fastreshuffle/weights/jpeg.safetensors", w)
    before = w.read_bytes()
    for opt in ("--weights", "--model"):
        for out in ("--json", "--plot"):
            assert main(["eval", "--data", str(data), "--quality", "10", "20", "--device", "cpu", opt, str(w),
                         out, str(w), "--overwrite"]) == 2
            assert "is a weights file being evaluated" in capsys.readouterr().err
    assert w.read_bytes() == before
    # a hard link to it, and a band's file the guard may pick (--model jpeg: jpeg-high), too
    import os
    os.link(w, tmp_path / "hard.safetensors")
    assert main(["eval", "--data", str(data), "--quality", "10", "--device", "cpu", "--weights", str(w),
                 "--json", str(tmp_path / "hard.safetensors"), "--overwrite"]) == 2
    assert "is a weights file being evaluated" in capsys.readouterr().err
    from fastreshuffle.inference.loading import weights_path
    band = weights_path("jpeg-high")
    band_bytes = band.read_bytes()
    assert main(["eval", "--data", str(data), "--quality", "10", "--device", "cpu", "--model", "jpeg",
                 "--json", str(band), "--overwrite"]) == 2
    assert "is a weights file being evaluated" in capsys.readouterr().err and band.read_bytes() == band_bytes
    assert w.read_bytes() == before


def test_missing_data_says_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTRESHUFFLE_DATA", str(tmp_path / "nothing-here"))
    assert main(["eval", "--codec", "jpeg", "--quality", "10", "-q"]) == 2
    err = capsys.readouterr().err
    assert "nothing-here/eval/Kodak24" in err and "--data FOLDER" in err and "FASTRESHUFFLE_DATA" in err
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "nothing-here/train/CBSD432" in err and "--data FOLDER" in err


def test_missing_default_root_names_both_places(tmp_path, monkeypatch, capsys):
    """With no --data-root and no $FASTRESHUFFLE_DATA the root is looked for in two places; a
    missing one names both, not only the first."""
    from fastreshuffle.io import datasets

    here, checkout = tmp_path / "here" / "shared" / "data", tmp_path / "checkout" / "shared" / "data"
    monkeypatch.setattr(datasets, "default_roots", lambda: (here, checkout))
    monkeypatch.delenv("FASTRESHUFFLE_DATA", raising=False)
    assert main(["eval", "--codec", "jpeg", "--quality", "10", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"folder not found: {here / 'eval' / 'Kodak24'}" in err
    assert str(here) in err and str(checkout) in err and "--data FOLDER" in err
    # a root that exists but lacks the folder: only that folder is named
    (checkout / "train").mkdir(parents=True)
    assert main(["eval", "--codec", "jpeg", "--quality", "10", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"folder not found: {checkout / 'eval' / 'Kodak24'}" in err and str(here) not in err


def test_an_installed_package_looks_for_no_source_checkout(tmp_path, monkeypatch, capsys):
    """Installed from a wheel (no setup.py above the package), the default root is looked for
    from the current folder only, and the error speaks of no "source checkout" inside
    site-packages."""
    from fastreshuffle.io import datasets

    site = tmp_path / "site-packages" / "fastreshuffle" / "io"
    site.mkdir(parents=True)
    monkeypatch.setattr(datasets, "__file__", str(site / "datasets.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTRESHUFFLE_DATA", raising=False)
    assert datasets.default_roots() == (tmp_path / "../shared/data",)
    assert main(["eval", "--codec", "jpeg", "--quality", "10", "-q"]) == 2
    err = capsys.readouterr().err
    assert "does not exist from the current folder" in err and "source checkout" not in err
    (site.parent.parent / "setup.py").write_text("")   # a checkout: looked for there too
    assert len(datasets.default_roots()) == 2


def test_no_data_root_claim_when_the_checkout_root_exists(tmp_path, monkeypatch):
    """A folder under the current folder's root (given explicitly) that is missing, while the
    source checkout's root exists: the message does not claim that no data root exists."""
    from fastreshuffle.io import datasets
    here, checkout = tmp_path / "here" / "shared" / "data", tmp_path / "checkout" / "shared" / "data"
    checkout.mkdir(parents=True)
    monkeypatch.setattr(datasets, "default_roots", lambda: (here, checkout))
    msg = datasets.missing_folder_message(here / "eval" / "Kodak24", "eval")
    assert "folder not found" in msg and "No data root" not in msg
    checkout.rmdir()
    assert "No data root" in datasets.missing_folder_message(here / "eval" / "Kodak24", "eval")


def test_eval_says_what_its_scores_leave_out(tmp_path, capsys):
    """An original with transparency is scored on its RGB values, a 16-bit one Pillow reads at 8
    bits is scored at 8 bits: each said (a helper's recomputation of eval's figures found both silent)."""
    from PIL import Image
    data = make_images(tmp_path / "photos", n=2, size=40)
    rgb = np.asarray(Image.open(next(data.iterdir())))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(data / "t.png")
    g = (np.mgrid[0:40, 0:40][1] * 1500 + 7).astype(np.uint16)
    (data / "la16.png").write_bytes(png16_bytes(np.dstack([g, 65535 - g])))
    assert main(["eval", "--data", str(data), "--codec", "jpeg", "--quality", "30", "-q"]) == 0
    err = capsys.readouterr().err
    assert "2 of the 4 images have transparency (la16.png, t.png): coded and scored on their RGB values" in err, err
    assert "la16.png: 16-bit grey PNG with alpha decoded at 8 bits (scored at 8 bits)" in err, err
