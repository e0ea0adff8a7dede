"""Decoding images and masks from disk into fixed-size tensors, whatever their mode and size."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from siamese_ad.config import AUTO_AREA, ImageSize, as_hw
from siamese_ad.data.decode import (
    IMAGE_SUFFIXES,
    list_images,
    open_header,
    open_image,
    read_rgb,
)
from siamese_ad.data.sample import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "MASK_THRESHOLD",
    "fitted_image_size",
    "image_size_of",
    "list_images",
    "load_image",
    "load_mask",
    "mask_to_bool",
]

MASK_THRESHOLD = 127  # grey mask values above it are defect (0/1 masks: 1 is defect)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def image_size_of(path: Path) -> tuple[int, int]:
    """Returns (height, width) from the file header."""
    with open_header(path) as img:
        return img.height, img.width


def fitted_image_size(paths: Sequence[Path], multiple: int, area: int = AUTO_AREA) -> ImageSize:
    """The input size `data.image_size: auto` gives: the median height / width ratio of the
    images at `paths` (read from their headers), at about `area` pixels, each side rounded to
    the nearest multiple of `multiple` (at least one multiple).

    Square images give a square size (256 for the default area); KolektorSDD's (500 wide, about
    1250 tall) give (384, 192) for multiple 64. One shape serves every image: those of other
    ratios are still stretched to it, less than to a square when the ratios are alike.

    Raises:
        DataError: an unreadable image (named), or no paths.
    """
    if not paths:
        raise DataError("no training images to fit data.image_size auto to")
    ratio = float(np.median([h / w for h, w in (image_size_of(Path(p)) for p in paths)]))
    height, width = (
        max(multiple, round(math.sqrt(area * r) / multiple) * multiple) for r in (ratio, 1 / ratio)
    )
    return height if height == width else (height, width)


def load_image(
    path: str | Path, size: ImageSize, fit: str = "stretch"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reads an image of any mode and size, fitted to `size` (a side, or (height, width)) as
    `fit` says ("stretch" or "pad", data/fit.py).

    Returns:
        A (3, h, w) uint8 tensor and the original (height, width).
    """
    rgb, original = read_rgb(path, size, fit)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), original


def mask_to_bool(values: np.ndarray, path: Path) -> np.ndarray:
    """Grey mask values (uint8) -> defect where > MASK_THRESHOLD; 0/1 masks (max 1): where 1.

    Warns, naming `path`, when the values are neither within {0, 255} nor within {0, 1}
    (anti-aliased edges, JPEG noise, label indices): they are thresholded, not taken as is.
    """
    present = set(np.unique(values).tolist())
    if not (present <= {0, 255} or present <= {0, 1}):
        shown = ", ".join(str(v) for v in sorted(present)[:6]) + (
            ", ..." if len(present) > 6 else ""
        )
        warnings.warn(
            f"mask {path} holds values other than 0/255 or 0/1 ({shown}); read as defect "
            f"where > {MASK_THRESHOLD}. Save masks as 0 (normal) and 255 (defect).",
            stacklevel=3,
        )
    if max(present) == 1:
        return values >= 1
    return values > MASK_THRESHOLD


def _mask_values(img: Image.Image) -> np.ndarray:
    """A mask's values as (H, W) uint8: grey modes as grey (16-bit clipped at 255), colour
    modes (RGB, palette, ...) as their brightest channel, so a pure red mark is 255, not 76."""
    if img.mode in _GREY_MODES:
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB")).max(axis=2)


def load_mask(
    path: str | Path, size: ImageSize, image_hw: tuple[int, int], image_path: Path
) -> torch.Tensor:
    """Reads a ground-truth mask and resizes it to `size` (a side, or (h, w)), nearest neighbour.

    Values > MASK_THRESHOLD are defect (for 0/1 masks: 1); see `mask_to_bool`. Colour masks
    are read by their brightest channel.

    Returns:
        An (h, w) bool tensor.
    """
    path = Path(path)
    img, _ = open_image(path)
    if (img.height, img.width) != tuple(image_hw):
        raise DataError(
            f"mask {path} is {img.width}x{img.height} but its image {image_path} is "
            f"{image_hw[1]}x{image_hw[0]}; a mask must have its image's size."
        )
    arr = mask_to_bool(_mask_values(img), path)
    height, width = as_hw(size)
    if arr.shape != (height, width):
        pil = Image.fromarray(arr.astype(np.uint8) * 255)
        arr = np.asarray(pil.resize((width, height), Image.Resampling.NEAREST)) > 0
    return torch.from_numpy(np.ascontiguousarray(arr))
