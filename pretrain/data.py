"""Pre-training data (paper §3.2, App. A.1): unlabelled 256x256 face crops from image folders or
list files, SwAV multi-crop / MoCo-v2 augmentation, a resumable deterministic sampler, and
skipping of unreadable files.

Augmentation facts (anchors_frl_swav.md §2.6): per crop RandomResizedCrop(size, scale), flip 0.5,
ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, grayscale 0.2, Gaussian blur radius U(0.1, 2)
with p 0.5, normalisation mean (0.485, 0.456, 0.406), std (0.228, 0.224, 0.225) (SwAV's 0.228,
kept by FRL; downstream tasks normalise the same way). MoCo-v2 is the same recipe with two
224 crops at scale (0.2, 1) and s = 0.5.

Check a dataset before a long run:
    python -m pretrain.data --check --root DIR_OR_LIST [--root ...] [--limit N] [--out grid.png]
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from common.files import rgb8
from common.logger import log

MEAN = (0.485, 0.456, 0.406)
STD = (0.228, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def list_images(sources) -> list:
    """Image paths from one or several sources, in order; each source is a folder (searched
    recursively, sorted) or a text file with one path per line (relative paths are relative to
    the file's folder; blank lines and lines starting with '#' are ignored)."""
    sources = [sources] if isinstance(sources, str) else list(sources or [])
    if not sources:
        raise ValueError("data.root is empty: give an image folder, a list file, or a list of them")
    paths = []
    for src in sources:
        if os.path.isdir(src):
            found = []
            for folder, _, files in os.walk(src, followlinks=True):
                found += [os.path.join(folder, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                raise ValueError(f"{src}: folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            paths += sorted(found)
        elif os.path.isfile(src):
            base = os.path.dirname(os.path.abspath(src))
            with open(src) as f:
                lines = [ln.strip() for ln in f]
            listed = [os.path.join(base, ln) for ln in lines if ln and not ln.startswith("#")]
            if not listed:
                raise ValueError(f"{src}: list file names no images")
            paths += listed
        else:
            raise FileNotFoundError(f"data source not found: {src} (expected an image folder or a list file)")
    return paths


def load_rgb(path: str):
    """The image at ``path`` as 8-bit RGB (grayscale, 16-bit, CMYK, palette, RGBA converted), or None
    when it cannot be read (missing, zero bytes, truncated, not an image)."""
    try:
        with Image.open(path) as img:
            img.load()
            return rgb8(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


class UnreadableLog:
    """Logs the first ``first`` unreadable images of one dataset copy by path (each DataLoader worker has its
    own copy); the epoch log counts all of them."""

    def __init__(self, first: int = 10):
        self.first, self.seen = first, 0

    def __call__(self, path) -> None:
        self.seen += 1
        if self.seen <= self.first:
            log(f"unreadable image skipped: {path}"
                + (" (further ones are only counted)" if self.seen == self.first else ""))


class RandomBlur:
    """PIL Gaussian blur with probability p and radius ~ U(lo, hi) drawn from torch's RNG."""

    def __init__(self, *, p: float = 0.5, radius=(0.1, 2.0)):
        self.p, self.radius = p, radius

    def __call__(self, img):
        if torch.rand(()) >= self.p:
            return img
        radius = float(torch.empty(()).uniform_(*self.radius))
        return img.filter(ImageFilter.GaussianBlur(radius))


class MultiCropTransform:
    """``counts[i]`` crops of ``sizes[i]`` px at RandomResizedCrop scale ``scales[i]`` each, with
    flip, colour distortion of strength ``color_strength``, grayscale and blur; returns the
    list of normalised crop tensors, largest crops first as configured."""

    def __init__(self, *, sizes, counts, scales, color_strength: float = 1.0, jitter_p: float = 0.8,
                 grayscale_p: float = 0.2, blur_p: float = 0.5, mean=MEAN, std=STD):
        if not len(sizes) == len(counts) == len(scales):
            raise ValueError(f"multi-crop: sizes {sizes}, counts {counts}, scales {scales} differ in length")
        s = color_strength
        self.pipelines = []
        for size, count, scale in zip(sizes, counts, scales):
            pipe = T.Compose([
                T.RandomResizedCrop(size, scale=tuple(scale)),
                T.RandomHorizontalFlip(0.5),
                T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_p),
                T.RandomGrayscale(grayscale_p),
                RandomBlur(p=blur_p),
                T.ToTensor(),
                T.Normalize(mean, std)])
            self.pipelines += [pipe] * count

    def __call__(self, img) -> list:
        return [pipe(img) for pipe in self.pipelines]


class ImageDataset(torch.utils.data.Dataset):
    """Unlabelled images. Indexed by (index, seed) pairs from EpochSampler: the augmentation of a
    sample is a function of its seed only (not of the worker, rank or position), so a resumed
    run and a run on any number of processes see the same crops. Unreadable images give None.
    A transform with a ``load(path)`` method decodes its own input (pretrain/fast_multicrop.py)."""

    def __init__(self, paths: list, transform):
        self.paths, self.transform = paths, transform
        self.report_unreadable = UnreadableLog()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, seed = key
        img = getattr(self.transform, "load", load_rgb)(self.paths[index])
        if img is None:
            self.report_unreadable(self.paths[index])
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img)


class EpochSampler(torch.utils.data.Sampler):
    """Yields this rank's (index, seed) pairs of one epoch: a permutation of all samples that is a
    function of (seed, epoch), cut into global batches of ``batch_size * world_size``; rank r
    takes the r-th slice of each global batch, so the global batch does not depend on the
    world size. The tail that does not fill a global batch is dropped. ``set_epoch(e, start)``
    skips the first ``start`` batches (resuming inside an epoch)."""

    def __init__(self, n_samples: int, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n_samples, batch_size, rank, world_size, seed
        self.iters_per_epoch = n_samples // (batch_size * world_size)
        if self.iters_per_epoch < 1:
            raise ValueError(f"{n_samples} images are fewer than one global batch "
                             f"({batch_size} x {world_size} processes)")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_iter: int = 0) -> None:
        self.epoch, self.start = epoch, start_iter

    def __len__(self) -> int:
        return (self.iters_per_epoch - self.start) * self.batch_size

    def permutation(self, rng) -> np.ndarray:
        """The epoch's sample order, drawn from ``rng`` (overridden by pretrain.shards)."""
        return rng.permutation(self.n)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self.permutation(rng)
        seeds = rng.integers(0, 2**63 - 1, size=self.n)  # per position
        b, gb = self.batch_size, self.batch_size * self.world_size
        pos = (np.arange(self.start, self.iters_per_epoch)[:, None] * gb + self.rank * b + np.arange(b)).ravel()
        return iter(zip(order[pos].tolist(), seeds[pos].tolist()))


def collate_skip_bad(batch: list) -> tuple:
    """Drop the None samples (unreadable files): (list of crop tensors, one n x 3 x H x W per crop
    position, or None when nothing was readable; number of samples dropped)."""
    good = [s for s in batch if s is not None]
    crops = [torch.stack(c) for c in zip(*good)] if good else None
    return crops, len(batch) - len(good)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check a pre-training image set.")
    parser.add_argument("--check", action="store_true", required=True)
    parser.add_argument("--root", action="append", required=True, help="image folder or list file (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="read at most this many images (0: all)")
    parser.add_argument("--out", default="pretrain_check.png", help="PNG grid of augmented crops")
    args = parser.parse_args(argv)
    from torchvision.utils import save_image
    paths = list_images(args.root)
    checked = paths[: args.limit] if args.limit else paths
    modes, sizes, bad = {}, {}, []
    for p in checked:
        try:
            with Image.open(p) as img:
                img.load()
                modes[img.mode] = modes.get(img.mode, 0) + 1
                sizes[img.size] = sizes.get(img.size, 0) + 1
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            bad.append(p)
    print(f"{len(paths)} images listed, {len(checked)} checked: modes {modes}, unreadable {len(bad)}")
    print("sizes (most common):", sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
    for p in bad[:20]:
        print("  unreadable:", p)
    transform = MultiCropTransform(sizes=[224], counts=[8], scales=[(0.14, 1.0)])
    good = [p for p in checked[:64] if p not in bad][:6]
    rows = [torch.stack(ImageDataset([p], transform)[(0, i)]) for i, p in enumerate(good)]
    if rows:
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        save_image(torch.cat(rows) * std + mean, args.out, nrow=8)
        print(f"augmented crops of {len(rows)} images (one row each): {args.out}")


if __name__ == "__main__":
    main()
