"""What `Detector.predict` accepts, made into model input, and its maps made back to image size.

An image is a path (str or Path), a PIL image, or a NumPy array: (H, W) or (H, W, 3), uint8, or
float in [0, 1]. Each becomes an (h, w, 3) uint8 picture at the model's input size, resized
bilinearly as image files are read for training and evaluation (data/decode.py), and remembers
its original (H, W).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from siamese_ad.config import ImageSize
from siamese_ad.data.decode import fit_rgb, read_rgb, to_rgb_uint8
from siamese_ad.data.sample import DataError

ImageInput: TypeAlias = str | Path | Image.Image | np.ndarray
SINGLE = (str, Path, Image.Image, np.ndarray)  # one image, not a collection of them


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3), uint8 or float in [0, 1] -> (H, W, 3) uint8.

    Raises:
        DataError: another shape or dtype, or float values outside [0, 1] (NaN included).
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise DataError(f"an image array must be (H, W) or (H, W, 3), not {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise DataError("a float image array must hold values in [0, 1]")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DataError(f"an image array must be uint8 or float in [0, 1], not {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array


def to_picture(
    image: ImageInput, size: ImageSize, fit: str = "stretch"
) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> the (h, w, 3) uint8 picture the model sees at `size` (a side, or (h, w)),
    stretched or letterboxed as `fit` says (data/fit.py), and the original (H, W)."""
    if isinstance(image, str | Path):
        return read_rgb(image, size, fit)
    if isinstance(image, Image.Image):
        rgb = to_rgb_uint8(image)
    elif isinstance(image, np.ndarray):
        rgb = array_to_rgb(image)
    else:
        raise DataError(
            f"cannot read an image from {type(image).__name__}: give a path, a PIL image or a "
            "NumPy array"
        )
    picture = np.ascontiguousarray(fit_rgb(rgb, size, fit))
    return picture, (int(rgb.shape[0]), int(rgb.shape[1]))


def batches(
    images: ImageInput | Iterable[ImageInput],
    size: ImageSize,
    batch_size: int,
    fit: str = "stretch",
) -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
    """Reads `images` lazily, batch_size at a time: (B, 3, h, w) uint8 at `size` (fitted as
    `fit` says) and the B original sizes.

    A single path, PIL image or array is one image.
    """
    items = iter([images] if isinstance(images, SINGLE) else images)
    while chunk := list(islice(items, batch_size)):
        pictures, sizes = zip(*(to_picture(item, size, fit) for item in chunk), strict=True)
        yield torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2), list(sizes)


def resize_map(amap: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) anomaly map -> (H, W) float32 at `size` = (H, W), bilinear; a new array."""
    if tuple(amap.shape) == tuple(size):
        return amap.float().numpy().copy()
    up = F.interpolate(amap[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()
