"""Writes tiny fake MVTec 3D-AD categories for tests: a tilted plane, a disc, bumps and holes.

Coordinates mimic the real data set (metres, camera looking along +z): the background is a plane
tilted in x and y about 0.5 m away, the object a flat-topped disc 2 cm high in the middle. A "bump"
defect raises a Gaussian on the disc, a "dent" lowers one; holes are missing points (0, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from siamese_ad.data.sample import GOOD

DEFECT_SIGNS = {"bump": 1.0, "dent": -1.0}


@dataclass(frozen=True)
class FakeCloud:
    """One fake scan and its ground truth.

    Attributes:
        xyz: (H, W, 3) float32 point cloud, zero at holes.
        height: (H, W) float64 true perpendicular height above the background plane.
        object_mask: (H, W) bool, the disc.
        defect_mask: (H, W) bool, where the defect's height exceeds 10 % of its amplitude.
        holes: (H, W) bool, the missing points.
    """

    xyz: np.ndarray
    height: np.ndarray
    object_mask: np.ndarray
    defect_mask: np.ndarray
    holes: np.ndarray


def _gaussian(size: int, centre: np.ndarray, sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma**2))


def _hole_mask(
    size: int, rng: np.random.Generator, allowed: np.ndarray, count: int, side: int
) -> np.ndarray:
    """`count` square holes of `side` pixels fully inside `allowed`, plus one in a corner."""
    holes = np.zeros((size, size), dtype=bool)
    holes[:side, :side] = True
    placed = 0
    for _ in range(1000 * max(count, 1)):
        if placed == count:
            return holes
        r, c = rng.integers(0, size - side, size=2)
        if allowed[r : r + side, c : c + side].all():
            holes[r : r + side, c : c + side] = True
            placed += 1
    raise ValueError(f"no room for {count} holes in a {size}-pixel fake scan; use a larger size")


def fake_cloud(
    size: int,
    rng: np.random.Generator,
    *,
    defect: str = GOOD,
    tilt: tuple[float, float] = (0.3, -0.2),
    object_height: float = 0.02,
    defect_height: float = 0.006,
    holes: int = 2,
    noise: float = 0.0001,
) -> FakeCloud:
    """Builds one scan: tilted plane, centred disc, an optional defect, `holes` 2x2 holes."""
    rows, cols = np.mgrid[:size, :size]
    centre, radius = (size - 1) / 2, size / 4
    disc = (rows - centre) ** 2 + (cols - centre) ** 2 <= radius**2
    height = np.where(disc, object_height, 0.0)
    defect_shape = np.zeros((size, size))
    sigma = size / 24
    if defect != GOOD:
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius - 3 * sigma)
        spot = np.array([centre + dist * np.sin(angle), centre + dist * np.cos(angle)])
        defect_shape = _gaussian(size, spot, sigma)
        height = height + DEFECT_SIGNS[defect] * defect_height * defect_shape * disc
    flat_disc = disc & (defect_shape < 1e-3)
    inner = flat_disc & ((rows - centre) ** 2 + (cols - centre) ** 2 <= (radius - 2) ** 2)
    missing = _hole_mask(size, rng, inner, holes, side=2)
    x, y = np.meshgrid(np.linspace(-0.05, 0.05, size), np.linspace(-0.05, 0.05, size))
    slope = np.sqrt(1 + tilt[0] ** 2 + tilt[1] ** 2)
    z = 0.5 + tilt[0] * x + tilt[1] * y - height * slope + rng.normal(0, noise, (size, size))
    xyz = np.stack([x, y, z], axis=2).astype(np.float32)
    xyz[missing] = 0.0
    return FakeCloud(xyz, height, disc, defect_shape * disc > 0.1, missing)


def _render_rgb(cloud: FakeCloud, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: dark background, grey disc, reddish defect."""
    base = 40 + 150 * cloud.object_mask + rng.integers(0, 10, cloud.object_mask.shape)
    rgb = np.repeat(base[:, :, None], 3, axis=2)
    rgb[cloud.defect_mask, 0] = 230
    return rgb.astype(np.uint8)


def write_sample(folder: Path, stem: str, cloud: FakeCloud, rng: np.random.Generator) -> None:
    """Writes rgb/<stem>.png, xyz/<stem>.tiff and gt/<stem>.png (0 or 255) under `folder`."""
    for sub in ("rgb", "xyz", "gt"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(_render_rgb(cloud, rng)).save(folder / "rgb" / f"{stem}.png")
    tifffile.imwrite(folder / "xyz" / f"{stem}.tiff", cloud.xyz, photometric="rgb")
    gt = (cloud.defect_mask * 255).astype(np.uint8)
    Image.fromarray(gt).save(folder / "gt" / f"{stem}.png")


def write_fake_mvtec3d(
    root: str | Path,
    *,
    name: str = "fake3d",
    size: int = 48,
    train: int = 3,
    validation: int = 2,
    test_good: int = 2,
    defects: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Writes `<root>/<name>/{train,validation,test}/<type>/{rgb,xyz,gt}` and returns the category.

    Args:
        defects: test images per defect type, each type "bump" or "dent"; default one of each.
    """
    rng = np.random.default_rng(seed)
    category = Path(root) / name
    counts = {("train", GOOD): train, ("validation", GOOD): validation, ("test", GOOD): test_good}
    for defect, count in (defects or {"bump": 1, "dent": 1}).items():
        counts[("test", defect)] = count
    for (split, defect), count in counts.items():
        (category / split / defect / "rgb").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cloud = fake_cloud(size, rng, defect=defect)
            write_sample(category / split / defect, f"{i:03d}", cloud, rng)
    return category
