"""What the repository holds: no picture but the figures under docs/; the docs README links to,
shipped in the sdist too.

A photo from ``../shared`` (Kodak24, CBSD432) must never be committed; one was, by accident,
in b48ce6b (a Kodak24 photo saved at the repository's root while measuring).  ``.gitignore``
now ignores pictures outside docs/, and this test fails if one is tracked all the same.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PICTURES = (".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif", ".avif", ".bmp", ".tif", ".tiff",
            ".ppm", ".pgm", ".gif")


def _tracked():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("git ls-files failed: " + r.stderr.decode(errors="replace")[:200])
    return [p for p in r.stdout.decode().split("\0") if p]


def test_no_picture_is_tracked_outside_docs():
    stray = [p for p in _tracked()
             if Path(p).suffix.lower() in PICTURES and Path(p).parent != Path("docs")]
    assert stray == [], f"pictures tracked outside docs/ (photos from ../shared must never be committed): {stray}"


def test_gitignore_keeps_pictures_out():
    r = subprocess.run(["git", "check-ignore", "-q", "kodim13.png"], cwd=ROOT, timeout=60)
    if r.returncode == 128:
        pytest.skip("git check-ignore unavailable")
    assert r.returncode == 0, "a picture at the repository's root is not ignored"
    r = subprocess.run(["git", "check-ignore", "-q", "docs/harm_curve.png"], cwd=ROOT, timeout=60)
    assert r.returncode == 1, "docs/ figures must not be ignored"


def test_the_docs_readme_links_to_exist_and_go_into_the_sdist():
    """Every docs/ file README.md names exists and MANIFEST.in's rules put it in the sdist (they
    were left out until 2026-12-06: the links of an unpacked sdist led nowhere)."""
    filelist = pytest.importorskip("setuptools._distutils.filelist")
    links = sorted(set(re.findall(r"\b(docs/[\w./-]+\.(?:md|png|json|csv))", (ROOT / "README.md").read_text())))
    assert len(links) >= 10, links                  # the pattern still finds README's links
    assert [p for p in links if not (ROOT / p).is_file()] == [], "README links to missing docs"
    fl = filelist.FileList()
    fl.allfiles = [str(Path(f).relative_to(ROOT)) for f in filelist.findall(str(ROOT / "docs"))]
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fl.process_template_line(line)
    shipped = set(fl.files)
    assert [p for p in links if p not in shipped] == [], "docs README links to are not in the sdist"
