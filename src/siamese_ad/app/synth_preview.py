"""`siamese-ad synth-preview`: a grid of synthetic anomalies and their masks, to check synthesis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from siamese_ad.config import AUTO_SIZE, ImageSize, SynthesisConfig, preset
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.images import fitted_image_size
from siamese_ad.data.synthesis import AnomalySynthesizer
from siamese_ad.io import atomic_write
from siamese_ad.models.teacher import input_multiple

MASK_TINT = np.array([255, 0, 0], dtype=np.float32)


def preview_grid(images: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Rows of (synthetic image, image with the mask tinted red), side by side.

    Args:
        images: each (H, W, 3) uint8.
        masks: each (H, W) bool.

    Returns:
        (rows * H, 4 * W, 3) uint8, two samples per row.
    """
    tiles = []
    for image, mask in zip(images, masks, strict=True):
        tinted = image.astype(np.float32)
        tinted[mask] = 0.5 * tinted[mask] + 0.5 * MASK_TINT
        tiles.append(np.concatenate([image, tinted.astype(np.uint8)], axis=1))
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 2], axis=1) for i in range(0, len(tiles), 2)]
    return np.concatenate(rows, axis=0)


def synth_preview(
    root: str | Path,
    fmt: str,
    out: str | Path,
    count: int,
    image_size: ImageSize,
    object_type: str,
    seed: int,
    synthesis: SynthesisConfig | None = None,
) -> Path:
    """Synthesises `count` anomalies from the category's normal training images; writes a PNG."""
    data = read_category(root, fmt)
    if image_size == AUTO_SIZE:  # as the cpu preset's train fits it to every normal image
        cpu = preset("cpu").model
        multiple = input_multiple(cpu.backbone, cpu.teacher_stages)
        image_size = fitted_image_size([s.image for s in data.train], multiple)
    normals = load_images(data.train, image_size, desc="training images").images
    arrays = [img.permute(1, 2, 0).numpy() for img in normals]
    synth = AnomalySynthesizer.from_config(arrays, synthesis or SynthesisConfig(), object_type)
    rng = np.random.default_rng(seed)
    samples = [synth(int(rng.integers(len(arrays))), rng) for _ in range(count)]
    grid = preview_grid([s[0] for s in samples], [s[1] for s in samples])
    out = Path(out)
    image_format = Image.registered_extensions().get(out.suffix.lower())
    if image_format is None:
        raise ValueError(f"--out {out}: not an image file name; use a .png file")
    atomic_write(out, lambda fh: Image.fromarray(grid).save(fh, format=image_format))
    return out
