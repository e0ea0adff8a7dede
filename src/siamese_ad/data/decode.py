"""Decoding image files into uint8 NumPy arrays, without torch (shared by the ONNX predict path)."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from siamese_ad.config import ImageSize, as_hw
from siamese_ad.data.fit import letterbox
from siamese_ad.data.sample import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 1 << 30  # larger images are refused by name (1 Gi pixels: 3 GiB decoded as RGB)
LARGE_PIXELS = 89_478_485  # Pillow's bomb limit: larger images are read reduced (`open_image`)
_REDUCIBLE = {"1": "L", "P": "RGB", "PA": "RGB", "I;16": "I", "I;16B": "I", "I;16L": "I"}
_PIL_LIMIT = threading.Lock()  # held while Pillow's global limit is lifted for one open


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(
        f"cannot read image {path}: {err}. Replace or remove the file "
        f"(readable formats: {', '.join(IMAGE_SUFFIXES)})."
    )


def open_header(path: Path) -> Image.Image:
    """Opens an image lazily (its header only), checked against MAX_PIXELS instead of Pillow's
    decompression-bomb limit, which is lifted for this one call and restored at once.

    Raises:
        DataError: the file is unreadable, or has more than MAX_PIXELS pixels (named).
    """
    try:
        with _PIL_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (OSError, UnidentifiedImageError) as err:
        raise _unreadable(path, err) from err
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise DataError(
            f"image {path} is {img.width} x {img.height} pixels, more than the "
            f"{MAX_PIXELS:,} this reader decodes; crop or downscale it first."
        )
    return img


def open_image(
    path: Path, size: ImageSize | None = None, uniform: bool = False
) -> tuple[Image.Image, tuple[int, int]]:
    """Opens and fully decodes an image of up to MAX_PIXELS pixels.

    With `size` given (a side, or (height, width)), an image of more than LARGE_PIXELS is decoded
    reduced, to no less than that size: JPEGs by DCT scaling while decoding, other formats by a
    box reduction by whole factors after it (with `uniform`, one factor for both axes, which keeps
    the aspect ratio). Smaller images are decoded as they are.

    Returns:
        The image and its original (height, width).

    Raises:
        DataError: unreadable files and files over MAX_PIXELS, by name.
    """
    with open_header(path) as img:
        original = (img.height, img.width)
        large = size is not None and img.width * img.height > LARGE_PIXELS
        if large:
            height, width = as_hw(size)
            img.draft(None, (width, height))
        try:
            img.load()
        except (OSError, UnidentifiedImageError) as err:
            raise _unreadable(path, err) from err
        if not large:
            return img, original
        if img.mode in _REDUCIBLE:
            img = img.convert(_REDUCIBLE[img.mode])
        factors = (max(1, img.width // width), max(1, img.height // height))
        if uniform:
            factors = (min(factors), min(factors))
        return img.reduce(factors) if factors != (1, 1) else img, original


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL mode (1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F) -> (H, W, 3) uint8."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def resize_rgb(rgb: np.ndarray, size: ImageSize) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 at `size` (a side, or (h, w)), bilinear; a new array
    unless it already has that size."""
    height, width = as_hw(size)
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def fit_rgb(rgb: np.ndarray, size: ImageSize, fit: str = "stretch") -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 at `size`, stretched or letterboxed (data/fit.py)."""
    if fit == "pad":
        rgb = letterbox(rgb, as_hw(size))
    return resize_rgb(rgb, size)


def read_rgb(
    path: str | Path, size: ImageSize, fit: str = "stretch"
) -> tuple[np.ndarray, tuple[int, int]]:
    """Reads an image of any mode and size.

    Args:
        path: the image file.
        size: the side of the square output, or its (height, width).
        fit: "stretch" or "pad" (data/fit.py).

    Returns:
        An (h, w, 3) uint8 array (bilinear resize) and the original (height, width).
    """
    img, original = open_image(Path(path), size, uniform=fit == "pad")
    return np.array(fit_rgb(to_rgb_uint8(img), size, fit), copy=True), original


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_folders(folder: Path) -> list[Path]:
    """Folders directly inside `folder`, sorted by name, links to other folders included.

    A link to `folder` itself or to a folder above it would loop (or read the same images under
    another name); it is skipped with a warning naming it.
    """
    here = folder.resolve()
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        target = path.resolve()
        if path.is_symlink() and (target == here or target in here.parents):
            warnings.warn(
                f"skipped {path}: it links to {target}, a folder that holds it, "
                "so reading it would loop; remove the link or point it elsewhere",
                stacklevel=2,
            )
            continue
        found.append(path)
    return found


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
