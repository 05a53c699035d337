"""``restore`` takes from a folder the images that ``eval`` and ``train`` read from it: one list
of extensions (``io.images.IMAGE_EXTENSIONS``).  Two lists had drifted apart: ``eval --data DIR``
read a ``.jp2`` photo that ``restore DIR`` skipped without a word."""
from pathlib import Path

import numpy as np
from PIL import Image

from fastreshuffle.inference.files import collect_inputs
from fastreshuffle.io.images import IMAGE_EXTENSIONS, list_images


def test_restore_and_eval_take_the_same_files_from_a_folder(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for ext in sorted(IMAGE_EXTENSIONS):
        (tmp_path / f"img{ext.replace('.', '_')}{ext}").write_bytes(b"not decoded here")
    Image.fromarray(a).save(tmp_path / "photo.jp2")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    got = collect_inputs([tmp_path], suffix="_restored", recursive=False)
    restored = sorted(Path(p) for p, _ in got.files)
    assert restored == list_images(tmp_path)
    assert tmp_path / "photo.jp2" in restored and len(restored) == len(IMAGE_EXTENSIONS) + 1
