"""Decoding images and masks from disk into fixed-size tensors, whatever their mode and size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from siamese_ad.data.decode import IMAGE_SUFFIXES, list_images, open_image, read_rgb
from siamese_ad.data.sample import DataError

__all__ = ["IMAGE_SUFFIXES", "image_size_of", "list_images", "load_image", "load_mask"]


def image_size_of(path: Path) -> tuple[int, int]:
    """Returns (height, width) from the file header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {path}: {err}. Replace or remove the file.") from err


def load_image(path: str | Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reads an image of any mode and size.

    Returns:
        A (3, size, size) uint8 tensor and the original (height, width).
    """
    rgb, original = read_rgb(path, size)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), original


def load_mask(
    path: str | Path, size: int, image_hw: tuple[int, int], image_path: Path
) -> torch.Tensor:
    """Reads a ground-truth mask (non-zero = anomalous) and resizes it with nearest neighbour.

    Returns:
        A (size, size) bool tensor.
    """
    path = Path(path)
    img = open_image(path)
    if (img.height, img.width) != tuple(image_hw):
        raise DataError(
            f"mask {path} is {img.width}x{img.height} but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]}; a mask must have its image's size."
        )
    arr = np.asarray(img.convert("L")) > 0
    if arr.shape != (size, size):
        pil = Image.fromarray(arr.astype(np.uint8) * 255)
        arr = np.asarray(pil.resize((size, size), Image.Resampling.NEAREST)) > 0
    return torch.from_numpy(np.ascontiguousarray(arr))
