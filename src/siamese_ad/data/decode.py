"""Decoding image files into uint8 NumPy arrays, without torch (shared by the ONNX predict path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from siamese_ad.data.sample import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_image(path: Path) -> Image.Image:
    """Opens and fully decodes an image; unreadable files raise DataError."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(
            f"cannot read image {path}: {err}. Replace or remove the file "
            f"(readable formats: {', '.join(IMAGE_SUFFIXES)})."
        ) from err
    return img


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL mode (1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F) -> (H, W, 3) uint8."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reads an image of any mode and size.

    Returns:
        A (size, size, 3) uint8 array (bilinear resize) and the original (height, width).
    """
    rgb = to_rgb_uint8(open_image(Path(path)))
    original = (int(rgb.shape[0]), int(rgb.shape[1]))
    if original != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return np.array(rgb, copy=True), original


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Expands folders into their images; keeps files as given; rejects missing paths."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"folder {item} holds no images (png, jpg, bmp, tif, webp)")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item} does not exist; give image files or folders of images")
    return paths
