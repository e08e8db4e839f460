"""Keeps benchmark test images out of the self-distillation pool (paper §4 "Self-distillation ...").

The unlabelled pool is built from several datasets that overlap (e.g. 300W-LP holds iBUG, AFLW2000
images are AFLW images: shared/research/anchors_landmarks_3d.md §1.6, which asks to "exclude every
evaluation image"). A test image may enter a pool under its own path, through a symlink, or as a
copy under another name, so the test images are matched three ways:

- resolved path (``os.path.realpath``);
- sha256 of the file bytes (only pool files whose size equals a test file's size are hashed);
- sha256 of the decoded RGB pixels, for test images stored inside .mat files (COFW-68's
  ``COFW_test.mat``); only pool images of the same width and height are decoded.
"""
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from distill.pool import read_pool
from landmarks import formats

# Every benchmark test split of the landmark datasets (anchors §1.1-1.4; Tables 5-6).
TEST_SPLITS = {"300w": ("full", "private"), "wflw": ("test",), "aflw19": ("full",), "cofw68": ("test",)}


class LeakageError(RuntimeError):
    """A benchmark test image was found in the unlabelled pool."""


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def pixel_sha256(array):
    """sha256 of an image's RGB pixels (grayscale repeated to 3 channels) and its shape."""
    a = np.asarray(array, dtype=np.uint8)
    a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
    return hashlib.sha256(repr(a.shape).encode() + np.ascontiguousarray(a).tobytes()).hexdigest()


def _decoded_sha256(path):
    try:
        with Image.open(path) as im:
            return pixel_sha256(np.asarray(im.convert("RGB")))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _size_hw(path):
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _parallel(fn, items, workers=8):
    with ThreadPoolExecutor(max_workers=workers) as pool:     # hashlib and PIL release the GIL
        return list(pool.map(fn, items))


@dataclass
class ExcludedImages:
    """The test images of some benchmarks: resolved paths, file sizes / hashes, pixel hashes."""
    paths: dict = field(default_factory=dict)        # realpath -> "dataset/split/key"
    sizes: set = field(default_factory=set)          # byte sizes of the test files
    hashes: dict = field(default_factory=dict)       # file sha256 -> "dataset/split/key"
    shapes: set = field(default_factory=set)         # (H, W) of in-.mat test images
    pixels: dict = field(default_factory=dict)       # pixel sha256 -> "dataset/split/key"
    counts: dict = field(default_factory=dict)       # dataset -> number of test images

    @classmethod
    def build(cls, roots):
        """Index of every test split (``TEST_SPLITS``) of each ``{dataset: root}``; 300W's private
        set is skipped when absent, any other missing split is an error."""
        index = cls()
        for dataset, root in roots.items():
            if dataset not in TEST_SPLITS:
                raise ValueError(f"no test splits known for {dataset!r}; expected one of {sorted(TEST_SPLITS)}")
            files, n = {}, 0
            for split in TEST_SPLITS[dataset]:
                try:
                    samples = formats.load_split(dataset, root, split)
                except formats.DatasetFormatError:
                    if (dataset, split) != ("300w", "private"):
                        raise
                    continue
                for key, image in zip(samples.keys, samples.images):
                    label = f"{dataset}/{split}/{key}"
                    n += 1
                    if isinstance(image, np.ndarray):
                        index.shapes.add(tuple(image.shape[:2]))
                        index.pixels[pixel_sha256(image)] = label
                    else:
                        files.setdefault(os.path.realpath(image), label)
            index.paths.update(files)
            index.sizes.update(os.path.getsize(p) for p in files)
            index.hashes.update(zip(_parallel(file_sha256, list(files)), files.values()))
            index.counts[dataset] = n
        return index


def find_leaks(paths, index):
    """[(pool position, test image label, how)] for pool ``paths`` that are test images of ``index``."""
    leaks = []
    real = [os.path.realpath(p) for p in paths]
    for i, r in enumerate(real):
        if r in index.paths:
            leaks.append((i, index.paths[r], "same file as"))
    found = {i for i, _, _ in leaks}
    sizes = [os.path.getsize(r) if os.path.isfile(r) else -1 for r in real]
    candidates = [i for i, s in enumerate(sizes) if s in index.sizes and i not in found]
    for i, digest in zip(candidates, _parallel(lambda i: file_sha256(real[i]), candidates)):
        if digest in index.hashes:
            leaks.append((i, index.hashes[digest], "byte-identical to"))
            found.add(i)
    if index.pixels:
        rest = [i for i in range(len(real)) if i not in found and sizes[i] >= 0]
        shapes = _parallel(lambda i: _size_hw(real[i]), rest)
        candidates = [i for i, s in zip(rest, shapes) if s in index.shapes]
        for i, digest in zip(candidates, _parallel(lambda i: _decoded_sha256(real[i]), candidates)):
            if digest in index.pixels:
                leaks.append((i, index.pixels[digest], "same pixels as"))
    return sorted(leaks)


def assert_no_leak(paths, index, *, where):
    """Raise ``LeakageError`` naming the first offending entries if any pool image is a test image."""
    leaks = find_leaks(paths, index)
    if leaks:
        shown = "\n".join(f"  {paths[i]}: {how} {test}" for i, test, how in leaks[:10])
        raise LeakageError(f"{where}: {len(leaks)} unlabelled image(s) are benchmark test images "
                           f"({', '.join(sorted(index.counts))}):\n{shown}\nrebuild the pool with "
                           f"python -m distill.pool ... --exclude-test-of DATASET")


def checked_pool(*, list_path, dataset, root, exclude):
    """The pool list, after checking that no test image of ``dataset`` (and of ``exclude``:
    "dataset=root" strings) is in it, by resolved path and by content."""
    entries = read_pool(list_path)
    roots = {dataset: root}
    for item in exclude:
        name, _, other = item.partition("=")
        if not other:
            raise ValueError(f"unlabeled.exclude entry {item!r}: expected DATASET=ROOT")
        roots[name] = other
    assert_no_leak(entries.paths, ExcludedImages.build(roots), where=list_path)
    return entries
