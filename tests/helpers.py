"""Helpers shared by several test modules (the tests folder is on sys.path through its conftest)."""
from __future__ import annotations

import base64

import numpy as np
from PIL import Image


# A JPEG of 24 x 16 pixels, arithmetic-coded (cjpeg -arithmetic -quality 50; Pillow writes none)
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19i"
    "Z2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2P/yQARCAAQABgDASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD7suVkC5H3+M0mOWzlPyIVZIELAxpi"
    "d0A/ErusQmNBfiRRDDs3jOKMsYD/2Q==")


def cpu_flags() -> set:
    """The CPU's flags from /proc/cpuinfo (empty where there is none): for skipping tests of
    kernels independently of the kernels' own detection, which the tests then check."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def make_images(folder, n=4, size=48, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        f = rng.uniform(3, 9, 3)
        img = np.stack([128 + 100 * np.sin(x / f[0] + i), 128 + 100 * np.cos(y / f[1]),
                        128 + 100 * np.sin((x + y) / f[2])], -1) + rng.normal(0, 4, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def model_pair(preset, seed=0, dtype=None, device="cpu"):
    """A ReshuffleNet of ``preset`` with perturbed biases (so every path sees non-trivial values)
    and a FastReshuffleNet holding the same state_dict, both on ``device`` / ``dtype``."""
    import torch

    from fastreshuffle import FastReshuffleNet, ReshuffleNet, ReshuffleNetConfig
    torch.manual_seed(seed)
    ref = ReshuffleNet(ReshuffleNetConfig.preset(preset))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    fast = FastReshuffleNet(ref.config)
    fast.load_state_dict(ref.state_dict())
    dtype = dtype or torch.float32
    return ref.to(device, dtype), fast.to(device, dtype)


def photo(h=48, w=72):
    """A smooth asymmetric picture (so a wrong rotation or flip is far from the right one)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 40 + 180 * x / w
    g = 40 + 180 * y / h
    b = 128 + 60 * np.sin(x / 7.0) * (y > h / 3)
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def png16_bytes(arr: np.ndarray, ctype: int | None = None, interlace: bool = False) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB or grey with alpha): ``arr``
    uint16, H x W (grey), H x W x 2 (grey + alpha), H x W x 3 (RGB) or H x W x 4 (RGBA); ``ctype``
    the PNG colour type (default: from the shape); ``interlace``: Adam7."""
    import struct
    import zlib

    if ctype is None:
        ctype = 0 if arr.ndim == 2 else {2: 4, 3: 2, 4: 6}[arr.shape[2]]

    def chunk(k, p):
        return struct.pack(">I", len(p)) + k + p + struct.pack(">I", zlib.crc32(k + p))
    be = arr.astype(">u2")
    if interlace:
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
        raw = b"".join(b"\0" + row.tobytes() for y0, x0, dy, dx in passes for row in be[y0::dy, x0::dx])
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in be)
    h, w = arr.shape[:2]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, int(interlace)))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
