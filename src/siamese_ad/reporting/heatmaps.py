"""Heat-map pictures: image | ground truth | anomaly map | overlay, one PNG per image."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from PIL import Image

from siamese_ad.io import atomic_write

if TYPE_CHECKING:  # torch-free at run time: the ONNX predict path uses panel()
    from siamese_ad.data.dataset import ImageSet

OVERLAY_ALPHA = 0.5
# zlib level of the PNGs: 1 rather than Pillow's default 6 writes much faster for slightly
# larger files (docs/performance.md: "Evaluation beyond the network").
PNG_COMPRESSION = 1
PNG_THREADS = min(4, os.cpu_count() or 1)
_LUT = (matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colorize(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 with the jet colour map over [vmin, vmax]."""
    scale = max(vmax - vmin, 1e-12)
    idx = np.clip((amap - vmin) / scale * 255.0, 0, 255).astype(np.uint8)
    return _LUT[idx]


def panel(
    image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, mask: np.ndarray | None
) -> np.ndarray:
    """Side by side: image, ground truth (or grey when unknown), colour map, overlay.

    Args:
        image: (H, W, 3) uint8.
        amap: (H, W) float anomaly map.
        vmin, vmax: colour range, shared across a set so pictures compare.
        mask: (H, W) bool ground truth, or None.

    Returns:
        (H, 4 W, 3) uint8.
    """
    heat = colorize(amap, vmin, vmax)
    overlay = (image * (1 - OVERLAY_ALPHA) + heat * OVERLAY_ALPHA).astype(np.uint8)
    if mask is None:
        truth = np.full_like(image, 128)
    else:
        truth = np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)
    return np.concatenate([image, truth, heat, overlay], axis=1)


def colour_range(maps: np.ndarray) -> tuple[float, float]:
    """A shared colour range for a set of maps: from their minimum to their maximum."""
    return float(maps.min()), float(maps.max())


# Heat-map names join the defect folder and the image file name with PANEL_SEPARATOR; inside
# each part the separator and the escape character are escaped, so a name stands for exactly one
# (defect, file name) pair: "a_b/c.png" -> "a_b+c.png.png", "a/b_c.png" -> "a+b_c.png.png".
# Neither character is percent-decoded in a URL path, so the HTML report's links still work.
PANEL_SEPARATOR = "+"
_ESCAPES = {"~": "~7E", "+": "~2B"}


def _escape(part: str) -> str:
    return "".join(_ESCAPES.get(char, char) for char in part)


def panel_name(defect: str, image: Path) -> str:
    """The heat-map file name of one test image: `<defect>+<file name with suffix>.png`.

    Unique for every (defect, file name) pair: the suffix is kept (000.png and 000.jpg get
    different names) and "+" and "~" inside either part are escaped as "~2B" and "~7E".
    """
    return f"{_escape(defect)}{PANEL_SEPARATOR}{_escape(image.name)}.png"


def save_png(path: Path, picture: np.ndarray) -> None:
    """(H, W) or (H, W, 3) uint8 -> a PNG at `path`, atomically (siamese_ad/io.py: each call
    has its own temporary file, so concurrent writes of one path never share one)."""
    image = Image.fromarray(picture)
    atomic_write(path, lambda fh: image.save(fh, format="PNG", compress_level=PNG_COMPRESSION))


def save_pngs(jobs: Iterable[tuple[Path, Callable[[], np.ndarray]]]) -> None:
    """Renders (the callable) and writes each (path, picture) on a few threads: Pillow's encoder
    and numpy release the GIL, so on 2 cores this is nearly twice as fast as one loop."""
    with ThreadPoolExecutor(PNG_THREADS) as pool:
        for _ in pool.map(lambda job: save_png(job[0], job[1]()), jobs):
            pass


def write_panels(out_dir: Path, images: ImageSet, maps: np.ndarray) -> list[Path]:
    """Writes one panel PNG per image of `images` (maps (N, H, W)); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vmin, vmax = colour_range(maps)

    def render(i: int) -> np.ndarray:
        mask = images.masks[i].numpy() if bool(images.has_mask[i]) else None
        return panel(images.images[i].permute(1, 2, 0).numpy(), maps[i], vmin, vmax, mask)

    paths = [out_dir / panel_name(s.defect, s.image) for s in images.samples]
    save_pngs((path, lambda i=i: render(i)) for i, path in enumerate(paths))
    return paths
