"""Training and validation data: (compressed, original) patch pairs made on the fly.

Reproducibility design: every training sample has a global index ``i`` (``step * global_batch
+ position``) and everything random about it -- which image, crop position, flips/rotation and
codec quality -- is drawn from ``numpy.random.default_rng([seed, i])``.  Batches therefore do not
depend on the number of DataLoader workers, on the number of DDP processes (each rank takes its
slice of the global batch), or on whether a run was resumed: step ``s`` always sees the same
samples.  Compression runs inside DataLoader workers (it is the expensive part).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError, ImageReadError
from ..io.codecs import CodecSpec, parse_spec, with_threads
from ..io.images import list_images, read_image, to_tensor




def parse_quality_range(text: Union[str, int, Sequence[int]]) -> List[int]:
    """``"5-50"`` -> [5..50]; ``"10"`` -> [10]; ``"10,20,40"`` -> [10, 20, 40].

    Comma-separated items may themselves be ranges and may overlap: a quality is drawn uniformly
    from the resulting list, so ``"5-50,5-30"`` draws qualities 5-30 twice as often as 31-50.
    """
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        vals = [int(v) for v in text]
        if not vals:
            raise ValueError("empty quality list")
        return vals
    vals = []
    try:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            if "-" in item[1:]:
                k = item.index("-", 1)
                lo, hi = int(item[:k]), int(item[k + 1:])
                if lo > hi:
                    raise ValueError
                if hi - lo > 1000:               # before it is made into a list (the codec then
                    raise OverflowError          # names the qualities out of its range)
                vals += list(range(lo, hi + 1))
            else:
                vals.append(int(item))
    except OverflowError:
        raise ValueError(f"bad quality {text!r}: qualities lie within 0-100") from None
    except ValueError:
        raise ValueError(f"bad quality {text!r}: use a number (10), a range (5-50) or a list of "
                         f"them (10,20,40 or 5-50,5-30)") from None
    if not vals:
        raise ValueError(f"bad quality {text!r}")
    return vals


@dataclasses.dataclass
class LoadReport:
    found: int = 0
    loaded: int = 0
    unreadable: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    too_small: List[str] = dataclasses.field(default_factory=list)
    padded: List[str] = dataclasses.field(default_factory=list)

    def summary(self, folder) -> str:
        msg = f"{folder}: {self.loaded} image{'' if self.loaded == 1 else 's'}"
        extra = []
        if self.unreadable:
            extra.append(f"{len(self.unreadable)} unreadable skipped")
        if self.too_small:
            extra.append(f"{len(self.too_small)} smaller than the patch skipped")
        if self.padded:
            extra.append(f"{len(self.padded)} smaller than the patch padded")
        return msg + (f" ({', '.join(extra)})" if extra else "")


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = max(0, h - img.shape[0]), max(0, w - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if ph < img.shape[0] and pw < img.shape[1] else "edge"
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode)


def shrink(img: np.ndarray, n: int) -> np.ndarray:
    """``img`` (H x W x C uint8) ``n`` times smaller: each pixel the mean of an n x n block, rounded
    half up (a last partial block: the mean of what it has).  For originals that are JPEGs
    themselves (CBSD432's are quality 95): their own coding noise mostly averages out, so a network
    trained for high qualities is not taught to put it back."""
    h, w = img.shape[:2]
    hh, ww = -(-h // n), -(-w // n)
    padded = np.zeros((hh * n, ww * n) + img.shape[2:], np.float64)
    padded[:h, :w] = img
    sums = padded.reshape(hh, n, ww, n, *img.shape[2:]).sum(axis=(1, 3))
    rows = np.minimum(n, h - n * np.arange(hh))
    cols = np.minimum(n, w - n * np.arange(ww))
    count = (rows[:, None] * cols[None, :]).reshape((hh, ww) + (1,) * (img.ndim - 2))
    return np.floor(sums / count + 0.5).astype(np.uint8)


def _fit(img: np.ndarray, min_size: int, small: str) -> Optional[np.ndarray]:
    """``img`` itself when both sides are at least ``min_size``; else padded to it
    (``small="pad"``) or None (``small="skip"``)."""
    if not min_size or (img.shape[0] >= min_size and img.shape[1] >= min_size):
        return img
    if small == "skip":
        return None
    return _pad_to(img, max(min_size, img.shape[0]), max(min_size, img.shape[1]))


def with_shrunk(images: List[np.ndarray], names: List[str], n: int, min_size: int, small: str,
                warn) -> Tuple[List[np.ndarray], List[str]]:
    """The images and each of them shrunk ``n`` times (:func:`shrink`) after them, named
    ``name@1/n`` (``train --also-shrunk``); a shrunk copy smaller than ``min_size`` is padded or
    skipped as :func:`load_folder` does."""
    out_i, out_n, small_ones = list(images), list(names), 0
    for img, name in zip(images, names):
        s = shrink(img, n)
        fitted = _fit(s, min_size, small)
        small_ones += fitted is not s
        if fitted is not None:
            out_i.append(fitted)
            out_n.append(f"{name}@1/{n}")
    if small_ones:
        warn(f"{'skipped' if small == 'skip' else 'padded'} {small_ones} photo(s) smaller than "
             f"{min_size}x{min_size} once shrunk {n}x (--also-shrunk)")
    return out_i, out_n


def load_folder(folder: Union[str, os.PathLike], min_size: int = 0, small: str = "pad",
                warn=None, limit: Optional[int] = None,
                reduce: int = 1) -> Tuple[List[np.ndarray], List[str], LoadReport]:
    """Read all images of ``folder`` into memory (RGB uint8).

    ``reduce`` > 1 shrinks each image that many times first (:func:`shrink`).  Unreadable files
    are named (via ``warn``) and skipped; images with a side smaller than ``min_size`` (after
    shrinking) are padded (``small="pad"``) or skipped (``small="skip"``).  ``limit`` counts the
    images kept, in name order, not the files tried.  Raises
    :class:`DataError` for a missing or empty folder or when nothing is readable.
    """
    if warn is None:
        def warn(msg):
            print(f"warning: {msg}", file=sys.stderr)
    folder = Path(folder)
    if not folder.exists():
        from ..io.datasets import missing_folder_message
        raise DataError(missing_folder_message(folder, "training data"))
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    paths = list_images(folder)
    if not paths:
        paths = list_images(folder, recursive=True)
    if not paths:
        raise DataError(f"no image files in {folder}")
    rep = LoadReport()
    images, names = [], []
    for p in paths:
        if limit is not None and len(images) >= limit:    # ``limit`` usable images, not files
            break
        rep.found += 1
        try:
            img = read_image(p)
        except ImageReadError as e:
            warn(f"skipping unreadable image {e.path}: {e.reason}")
            rep.unreadable.append((str(p), e.reason))
            continue
        if reduce > 1:
            img = shrink(img, reduce)
        fitted = _fit(img, min_size, small)
        if fitted is not img:
            (rep.too_small if fitted is None else rep.padded).append(str(p))
        if fitted is None:
            continue
        images.append(fitted)
        names.append(p.name)
    rep.loaded = len(images)
    if rep.too_small:
        warn(f"skipped {len(rep.too_small)} image(s) smaller than {min_size}x{min_size} in {folder}")
    if rep.padded:
        warn(f"padded {len(rep.padded)} image(s) smaller than {min_size}x{min_size} in {folder}")
    if not images:
        raise DataError(f"no usable images in {folder} ({len(rep.unreadable)} unreadable, "
                        f"{len(rep.too_small)} too small)")
    return images, names, rep


@dataclasses.dataclass(frozen=True)
class Mix:
    """Per-sample probabilities of the full-range variations (``train --mix``):

    * ``none``: no compression at all (the target is the input: a never-compressed photo must
      come back unchanged); the sample's quality is reported as 100;
    * ``444``: JPEG with 4:4:4 chroma instead of the codec's 4:2:0 (JPEG only);
    * ``offset``: the patch cut from a larger compressed crop at a random offset (1..7, 1..7),
      so the coding grid is not aligned with the network's 8-pixel grid (a cropped photo);
    * ``double``: compressed twice, first at another quality drawn from the same list (a
      re-saved photo);
    * ``dark``: the patch darkened before coding, every value times a factor drawn log-uniformly
      in [:data:`EXPOSURE_MIN`, 1/2] (an underexposed or night photo: CBSD432 has few dark
      areas, and a network trained on it alone added up to a level of brightness to them);
    * ``bright``: the same towards white, 255 - factor x (255 - value) (an overexposed photo);
    * ``sharpen``: the patch sharpened (:func:`sharpen`, radius drawn log-uniformly in
      [:data:`SHARPEN_RADIUS`], percent uniformly in [:data:`SHARPEN_PERCENT`]) before its coding,
      as phones' pipelines, editors and web resizers do; the sharpened patch is the target (the
      network must keep the sharpening, not undo it).  With ``double`` drawn too, the sharpening
      comes between the two codings: a camera's JPEG edited, then saved again -- the target is
      the sharpened first decode, with the first coding's noise sharpened in it.

    All zero: exactly the samples of a run without ``--mix`` (no extra random draws); ``dark``
    and ``bright`` draw after the others, and ``sharpen`` after them, so a mix without them gives
    the samples it gave before they existed."""
    none: float = 0.0
    s444: float = 0.0
    offset: float = 0.0
    double: float = 0.0
    dark: float = 0.0
    bright: float = 0.0
    sharpen: float = 0.0

    @property
    def active(self) -> bool:
        return any(dataclasses.astuple(self))


# the darkest exposure factor of --mix dark / bright (a photo's 0-255 range down to 0-5)
EXPOSURE_MIN = 1.0 / 50


def expose(img: np.ndarray, factor: float, bright: bool = False) -> np.ndarray:
    """uint8 ``img`` darkened (every value times ``factor``, rounded), or with ``bright`` moved
    towards white the same way (255 - factor x (255 - value))."""
    x = img.astype(np.float32)
    if bright:
        return np.clip(255.0 - np.rint((255.0 - x) * np.float32(factor)), 0, 255).astype(np.uint8)
    return np.clip(np.rint(x * np.float32(factor)), 0, 255).astype(np.uint8)


# --mix sharpen: the unsharp mask's radius (pixels, drawn log-uniformly) and percent (uniformly)
SHARPEN_RADIUS = (0.5, 2.5)
SHARPEN_PERCENT = (50, 250)


def _log_uniform(rng, lo: float, hi: float) -> float:
    """A draw of ``rng`` log-uniform in [lo, hi]."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sharpen(img: np.ndarray, radius: float, percent: int) -> np.ndarray:
    """uint8 RGB ``img`` through Pillow's UnsharpMask of ``radius`` and ``percent``, threshold 0
    (what editors call unsharp masking)."""
    from PIL import Image, ImageFilter
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).filter(
        ImageFilter.UnsharpMask(float(radius), int(percent), 0)))


def parse_mix(text: Optional[str]) -> Mix:
    """``"none=0.1,444=0.25,offset=0.5,double=0.15,dark=0.1"`` -> :class:`Mix` (omitted items are 0)."""
    if not text:
        return Mix()
    names = {("444" if f.name == "s444" else f.name): f.name for f in dataclasses.fields(Mix)}
    kw = {}
    for item in str(text).split(","):
        k, eq, v = item.strip().partition("=")
        if k not in names or not eq:
            raise ValueError(f"bad --mix item {item!r}: use NAME=P with NAME one of {sorted(names)}")
        try:
            p = float(v)
        except ValueError:
            raise ValueError(f"bad --mix item {item!r}: {v!r} is not a probability") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bad --mix item {item!r}: a probability must be in [0, 1]")
        if names[k] in kw:
            raise ValueError(f"bad --mix: {k} is given twice")
        kw[names[k]] = p
    return Mix(**kw)


class PatchPairs(Dataset):
    """Random (compressed, original) patch pairs; ``dataset[i]`` is a pure function of (seed, i).

    Returns ``(compressed, original, quality)``: two float32 tensors (3, P, P) in [0, 1]
    and the codec quality (float tensor) used for that sample (100 for an uncompressed one).
    ``mix``: the full-range variations, see :class:`Mix`.
    """

    def __init__(self, images: List[np.ndarray], patch: int = 128, codec: Union[str, CodecSpec] = "jpeg",
                 qualities: Sequence[int] = (10,), seed: int = 0, flips: bool = True, rot90: bool = False,
                 length: int = 2 ** 62, mix: Optional[Mix] = None, threads: Optional[int] = None):
        if patch <= 0 or patch % 8:
            raise ValueError(f"patch size must be a positive multiple of 8, got {patch}")
        if not images:
            raise DataError("no training images")
        self.images = [_pad_to(im, patch, patch) for im in images]
        self.patch = int(patch)
        self.codec = with_threads(parse_spec(codec), threads)   # threads: see encoder_threads
        self.qualities = [int(q) for q in qualities]
        self.seed = int(seed)
        self.flips = flips
        self.rot90 = rot90
        self.length = int(length)
        self.mix = mix or Mix()
        if self.mix.s444 and self.codec.name != "jpeg":
            raise ValueError(f"--mix 444 is for JPEG (the codec is {self.codec.name})")
        # the offset variation cuts the patch from a crop 8 pixels larger
        self.images = [_pad_to(im, patch + 8, patch + 8) for im in self.images] if self.mix.offset else self.images

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Tuple[np.ndarray, np.ndarray, int]:
        rng = np.random.default_rng([self.seed, int(index)])
        img = self.images[int(rng.integers(len(self.images)))]
        p = self.patch
        if self.mix.active:
            return self._sample_mixed(rng, img)
        y = int(rng.integers(img.shape[0] - p + 1))
        x = int(rng.integers(img.shape[1] - p + 1))
        crop = img[y:y + p, x:x + p]
        if self.flips:
            if rng.random() < 0.5:
                crop = crop[::-1]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        if self.rot90:
            crop = np.rot90(crop, int(rng.integers(4)))
        q = self.qualities[int(rng.integers(len(self.qualities)))]
        crop = np.ascontiguousarray(crop)
        coded = self.codec.with_quality(q)(crop)
        return coded.image, crop, q

    def _sample_mixed(self, rng, img: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
        m, p = self.mix, self.patch
        # draws in a fixed order, every one taken whatever the outcome (reproducible)
        none, s444, offset, double = (rng.random() < m.none, rng.random() < m.s444,
                                      rng.random() < m.offset, rng.random() < m.double)
        dy, dx = (int(v) for v in rng.integers(1, 8, size=2))
        if not offset:
            dy = dx = 0
        size = p + 8 if m.offset else p
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        crop = img[y:y + size, x:x + size]
        flip_v, flip_h, rot = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
        if self.flips:
            crop = crop[::-1] if flip_v else crop
            crop = crop[:, ::-1] if flip_h else crop
        if self.rot90:
            crop = np.rot90(crop, rot)
        q = self.qualities[int(rng.integers(len(self.qualities)))]
        q0 = self.qualities[int(rng.integers(len(self.qualities)))]
        crop = np.ascontiguousarray(crop)
        if m.dark or m.bright:     # drawn last: a mix without them keeps its old samples
            dark, bright = rng.random() < m.dark, rng.random() < m.bright
            factor = _log_uniform(rng, EXPOSURE_MIN, 0.5)
            if dark and bright:    # both: one of them, with equal chance
                bright = rng.random() >= 0.5
            if dark or bright:
                crop = expose(crop, factor, bright=bright)
        spec = self.codec.with_sampling("444") if s444 else self.codec
        if m.sharpen:              # drawn after dark / bright, for the same reason
            sharp = rng.random() < m.sharpen
            radius = _log_uniform(rng, *SHARPEN_RADIUS)
            percent = int(rng.integers(SHARPEN_PERCENT[0], SHARPEN_PERCENT[1] + 1))
            if sharp:              # the target is the sharpened patch (after a first coding, if double)
                if double and not none:
                    crop, double = spec.with_quality(q0)(crop).image, False
                crop = sharpen(crop, radius, percent)
        if none:
            coded, q = crop, 100
        else:
            coded = crop
            if double:
                coded = spec.with_quality(q0)(coded).image
            coded = spec.with_quality(q)(coded).image
        return (np.ascontiguousarray(coded[dy:dy + p, dx:dx + p]),
                np.ascontiguousarray(crop[dy:dy + p, dx:dx + p]), q)

    def __getitem__(self, index: int):
        comp, orig, q = self.sample(index)
        return to_tensor(comp), to_tensor(orig), torch.tensor(float(q))


class _Version(NamedTuple):
    image: int        # index into the training images
    flip_v: bool
    flip_h: bool
    rot: int          # quarter turns (np.rot90), after the flips
    quality: int


def _orient(img: np.ndarray, v: _Version) -> np.ndarray:
    img = img[::-1] if v.flip_v else img
    img = img[:, ::-1] if v.flip_h else img
    return np.ascontiguousarray(np.rot90(img, v.rot) if v.rot else img)


def _encode_version(job) -> np.ndarray:
    """Worker of :class:`WholeImagePairs`: one oriented image, coded whole (module-level: pickled)."""
    img, version, spec = job
    return spec.with_quality(version.quality)(_orient(img, version)).image


class WholeImagePairs(Dataset):
    """Patch pairs cut from *whole* coded images (``train --encode whole``), as photos are coded.

    :class:`PatchPairs` codes each patch on its own, so every patch sits at an image border of
    the codec: intra prediction (HEVC) has no neighbours above and to the left, and block
    decisions see only the patch.  Here each training image gets ``versions`` coded versions,
    each with its own orientation (flips / 90-degree turns, applied *before* coding, so the
    codec's prediction directions stay those of real files) and quality drawn from
    ``qualities``, all fixed by ``seed``.  They are coded once (``processes`` at a time; cached
    as ``.npy`` in ``cache_dir`` when given, keyed by image content, orientation and codec), and
    sample ``i`` is a ``patch x patch`` crop at a multiple of 8 from the origin -- the coding grid
    stays on the network's 8-pixel grid, as for tiles of a whole photo -- drawn from
    ``default_rng([seed, i])``.  Returns ``(compressed, original, quality)`` like PatchPairs.
    """

    def __init__(self, images: List[np.ndarray], patch: int = 96, codec: Union[str, CodecSpec] = "hevc",
                 qualities: Sequence[int] = (15,), seed: int = 0, versions: int = 4, flips: bool = True,
                 rot90: bool = False, cache_dir=None, processes: int = 1, length: int = 2 ** 62, say=None,
                 threads: Optional[int] = None):
        if patch <= 0 or patch % 8:
            raise ValueError(f"patch size must be a positive multiple of 8, got {patch}")
        if versions < 1:
            raise ValueError(f"--versions must be at least 1, got {versions}")
        if not images:
            raise DataError("no training images")
        self.images = [_pad_to(im, patch, patch) for im in images]
        self.patch, self.seed, self.length = int(patch), int(seed), int(length)
        self.codec = with_threads(parse_spec(codec), None)   # the cache key: the same bytes for any threads
        qualities = [int(q) for q in qualities]
        self.versions = []
        for i in range(len(self.images)):
            for k in range(int(versions)):
                rng = np.random.default_rng([self.seed, 0x5EED, i, k])
                fv, fh, rot, qi = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4)), int(rng.integers(len(qualities)))
                self.versions.append(_Version(i, bool(fv and flips), bool(fh and flips), rot if rot90 else 0,
                                              qualities[qi]))
        self.coded = self._code_all(cache_dir, max(1, int(processes)), say, with_threads(self.codec, threads))

    def _cache_path(self, cache_dir: Path, v: _Version) -> Path:
        import hashlib
        h = hashlib.sha1(self.images[v.image].tobytes())
        h.update(repr((self.images[v.image].shape, str(self.codec.with_quality(v.quality)),
                       v.flip_v, v.flip_h, v.rot)).encode())
        return cache_dir / f"{h.hexdigest()}.npy"

    def _code_all(self, cache_dir, processes: int, say, coder: CodecSpec) -> List[np.ndarray]:
        coded: List[Optional[np.ndarray]] = [None] * len(self.versions)
        paths = None
        if cache_dir is not None:
            cache_dir = Path(cache_dir)
            cache_dir.mkdir(parents=True, exist_ok=True)
            paths = [self._cache_path(cache_dir, v) for v in self.versions]
            for j, path in enumerate(paths):
                if path.is_file():
                    try:
                        c = np.load(path, allow_pickle=False)
                    except (ValueError, OSError, EOFError) as e:   # a damaged entry is coded again
                        if say:
                            say(f"coded cache {path} unreadable ({e}); coding it again")
                        continue
                    # an entry of another shape (a file put there, or damaged into another valid
                    # array) is coded again too: cropped as it is, it failed later with a traceback
                    img = self.images[self.versions[j].image]
                    h, w = img.shape[:2]
                    want = ((w, h) if self.versions[j].rot % 2 else (h, w)) + img.shape[2:]
                    if c.shape != want or c.dtype != img.dtype:
                        if say:
                            say(f"coded cache {path} is not this image's ({c.dtype} {c.shape}, not "
                                f"{img.dtype} {want}); coding it again")
                        continue
                    coded[j] = c
        todo = [j for j, c in enumerate(coded) if c is None]
        if todo and say:
            say(f"coding {len(todo)} of {len(coded)} whole-image versions ({self.codec}) with {processes} "
                f"process(es){'; cached in ' + str(cache_dir) if cache_dir is not None else ''}")
        jobs = ((self.images[self.versions[j].image], self.versions[j], coder) for j in todo)
        pool = None
        if processes > 1 and len(todo) > 1:
            import multiprocessing
            pool = multiprocessing.get_context("fork").Pool(processes, initializer=_pool_worker_init)
        try:
            results = pool.imap(_encode_version, jobs, chunksize=4) if pool else map(_encode_version, jobs)
            for j, c in zip(todo, results):
                coded[j] = c
                if paths is not None:
                    _save_npy(paths[j], c)
        finally:
            if pool:
                pool.terminate()
        return coded

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Tuple[np.ndarray, np.ndarray, int]:
        rng = np.random.default_rng([self.seed, int(index)])
        j = int(rng.integers(len(self.versions)))
        v, coded = self.versions[j], self.coded[j]
        h, w = coded.shape[:2]
        p = self.patch
        y = 8 * int(rng.integers((h - p) // 8 + 1))
        x = 8 * int(rng.integers((w - p) // 8 + 1))
        orig = _orient(self.images[v.image], v)
        return (np.ascontiguousarray(coded[y:y + p, x:x + p]), np.ascontiguousarray(orig[y:y + p, x:x + p]),
                v.quality)

    def __getitem__(self, index: int):
        comp, orig, q = self.sample(index)
        return to_tensor(comp), to_tensor(orig), torch.tensor(float(q))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Write atomically (a run stopped mid-write leaves no truncated cache file)."""
    from ..io.safe_write import atomic_write_bytes
    import io
    b = io.BytesIO()
    np.save(b, arr)
    atomic_write_bytes(path, b.getvalue(), overwrite=True)


class StepBatchSampler(Sampler):
    """Yields, for steps ``start..steps-1``, this rank's slice of the global batch of indices."""

    def __init__(self, start_step: int, steps: int, global_batch: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world} processes")
        self.start, self.steps, self.gb = int(start_step), int(steps), int(global_batch)
        self.rank, self.world = int(rank), int(world)
        self.local = self.gb // self.world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[List[int]]:
        for s in range(self.start, self.steps):
            base = s * self.gb + self.rank * self.local
            yield list(range(base, base + self.local))


def encoder_threads(processes: int) -> int:
    """x265 threads for each of ``processes`` coding processes (0: the main process codes): the
    CPUs shared out among them.  x265's default is one per CPU in *every* process, and it builds
    that pool for every image: with 15 data workers on 16 CPUs, 15 x 16 threads, twice the CPU
    time per 96x96 patch of one thread (docs/gpu_runs.md)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, int(processes)))


def _quiet_exit(_signum, _frame) -> None:
    os._exit(0)


def _handle_end_signals(handler) -> None:
    """SIGTERM and SIGHUP to ``handler``, but for one already ignored (SIGHUP under nohup), which
    stays ignored as in the command (cli/_common.py): a worker ending on it would leave the
    command running without it, which torch reports."""
    import signal
    for sig in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, sig) and signal.getsignal(getattr(signal, sig)) is not signal.SIG_IGN:
            signal.signal(getattr(signal, sig), handler)


def worker_init(_worker_id: int) -> None:
    """A DataLoader worker: one thread, and SIGTERM / SIGHUP end it quietly (exit status 0).
    ``timeout``, Slurm and ``kill -TERM -PGID`` signal the whole process group: a worker that
    died *of* the signal made torch raise "DataLoader worker ... is killed by signal" over the
    command's own handling of it (exit 1, the last steps unsaved), while a worker that ends with
    status 0 is not an error to torch, and the command saves the step reached.  (Ignoring the
    signal instead left a worker that the DataLoader's own terminate() could not end: a hang.)
    Ctrl-C, which the terminal also sends to the whole group, is the command's to handle: the
    worker ignores it (a second Ctrl-C in its cleanup printed tracebacks, and torch then raised
    "DataLoader worker ... exited unexpectedly" at exit); the command's end stops the workers.
    A pipe to the command broken as it ends (the thread handing a batch's memory over) is not
    printed either: the command is going, and says why."""
    import signal
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _handle_end_signals(_quiet_exit)
    sys.excepthook = _quiet_broken_pipe


def _quiet_broken_pipe(kind, value, tb) -> None:
    """A worker's ``sys.excepthook`` (multiprocessing's resource sharer reports through it):
    a broken pipe or reset connection is the command ending, said by the command itself."""
    if issubclass(kind, (BrokenPipeError, ConnectionResetError)):
        return
    sys.__excepthook__(kind, value, tb)


def _pool_worker_init() -> None:
    """A coding worker of ``--encode whole``: one thread; an interrupt is the parent's to handle
    (it ends the pool), so the worker ignores Ctrl-C and dies quietly on SIGTERM / SIGHUP instead
    of printing the command's handlers' tracebacks (it inherited them with the fork)."""
    import signal
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _handle_end_signals(signal.SIG_DFL)


def center_crop(img: np.ndarray, size: Optional[int], multiple: int = 8) -> np.ndarray:
    """Center crop to at most ``size`` x ``size`` and down to a multiple of ``multiple``."""
    h, w = img.shape[:2]
    th = min(h, size) if size else h
    tw = min(w, size) if size else w
    th -= th % multiple
    tw -= tw % multiple
    if th <= 0 or tw <= 0:
        return img
    y, x = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(img[y:y + th, x:x + tw])


class ValidationSet:
    """Fixed (compressed, original) pairs for validation: center crops, compressed once."""

    def __init__(self, images: List[np.ndarray], codec: Union[str, CodecSpec], qualities: Sequence[int],
                 crop: Optional[int] = 256):
        spec = parse_spec(codec)
        self.items = []  # (quality, compressed uint8, original uint8)
        for q in qualities:
            for im in images:
                orig = center_crop(im, crop)
                self.items.append((int(q), spec.with_quality(int(q))(orig).image, orig))
        self.qualities = [int(q) for q in qualities]

    def __len__(self) -> int:
        return len(self.items)
