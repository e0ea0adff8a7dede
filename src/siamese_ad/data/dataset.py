"""Reading a category from disk once into memory: each image is decoded a single time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from siamese_ad.config import ImageSize, as_hw
from siamese_ad.data.folder import read_folder
from siamese_ad.data.images import load_image, load_mask
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import CategoryData, DataError, Sample

READERS: dict[str, Callable[[Path], CategoryData]] = {"mvtec": read_mvtec, "folder": read_folder}


def read_category(root: str | Path, fmt: str) -> CategoryData:
    """Reads a category with the reader registered for `fmt` (mvtec, folder, mvtec3d)."""
    if fmt == "mvtec3d":
        from siamese_ad.data.mvtec3d import read_mvtec3d

        return read_mvtec3d(root)
    if fmt not in READERS:
        raise DataError(
            f"unknown data format {fmt!r}; choose one of {', '.join([*READERS, 'mvtec3d'])}"
        )
    return READERS[fmt](Path(root))


@dataclass
class ImageSet:
    """Decoded images of a list of samples.

    Attributes:
        samples: the records, in order.
        images: (N, 3, H, W) uint8, at the config's image size.
        masks: (N, H, W) bool ground truth; all False where unknown or normal.
        has_mask: (N,) bool, True where the pixel truth is known (normal images, or a mask file).
        originals: (N, 2) long, each image's original (height, width); None where unknown.
    """

    samples: list[Sample]
    images: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    originals: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)


ImageLoader = Callable[[Sample, ImageSize], tuple[torch.Tensor, tuple[int, int]]]


def rgb_loader(sample: Sample, size: ImageSize) -> tuple[torch.Tensor, tuple[int, int]]:
    """Loads the sample's image file: (3, h, w) uint8 at `size` and the original (H, W)."""
    return load_image(sample.image, size)


def fitted_loader(fit: str) -> ImageLoader:
    """The image-file loader for data.fit `fit`: `rgb_loader` for "stretch", else one that
    letterboxes each image (data/fit.py)."""
    if fit == "stretch":
        return rgb_loader

    def load(sample: Sample, size: ImageSize) -> tuple[torch.Tensor, tuple[int, int]]:
        return load_image(sample.image, size, fit)

    return load


def load_images(
    samples: list[Sample],
    size: ImageSize,
    loader: ImageLoader = rgb_loader,
    desc: str = "images",
) -> ImageSet:
    """Decodes every sample once into memory at `size` (a side, or (height, width)), checking
    each mask against its image."""
    if not samples:
        raise DataError(f"no {desc} to load: check the data folder and the split settings")
    height, width = as_hw(size)
    images = torch.empty(len(samples), 3, height, width, dtype=torch.uint8)
    masks = torch.zeros(len(samples), height, width, dtype=torch.bool)
    has_mask = torch.zeros(len(samples), dtype=torch.bool)
    originals = torch.zeros(len(samples), 2, dtype=torch.long)
    for i, sample in enumerate(tqdm(samples, desc=f"loading {desc}", leave=False, unit="img")):
        images[i], original = loader(sample, size)
        originals[i] = torch.tensor(original)
        if sample.mask is not None:
            masks[i] = load_mask(sample.mask, size, original, sample.image)
            has_mask[i] = True
        elif sample.label == 0:
            has_mask[i] = True
    return ImageSet(samples, images, masks, has_mask, originals)
