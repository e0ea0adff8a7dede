"""Decoding images and masks from disk into fixed-size tensors, whatever their mode and size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from siamese_ad.data.sample import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(
            f"cannot read image {path}: {err}. Replace or remove the file "
            f"(readable formats: {', '.join(IMAGE_SUFFIXES)})."
        ) from err
    return img


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL mode (1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F) -> (H, W, 3) uint8."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


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
    path = Path(path)
    img = _open(path)
    rgb = _to_rgb_uint8(img)
    original = rgb.shape[:2]
    if original != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).contiguous(), original


def load_mask(
    path: str | Path, size: int, image_hw: tuple[int, int], image_path: Path
) -> torch.Tensor:
    """Reads a ground-truth mask (non-zero = anomalous) and resizes it with nearest neighbour.

    Returns:
        A (size, size) bool tensor.
    """
    path = Path(path)
    img = _open(path)
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


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
