"""Depth from MVTec 3D-AD point clouds: background plane removed, holes filled, cached as PNG.

A point cloud is an (H, W, 3) float32 array of (x, y, z) per pixel; a missing point is (0, 0, 0).
The camera looks along +z, so "above the background plane" means towards the camera.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from siamese_ad.data.sample import DataError
from siamese_ad.io import atomic_write_bytes

CACHE_VERSION = 1  # bump when the preprocessing changes, so old cache entries are not reused


@dataclass(frozen=True)
class DepthParams:
    """Preprocessing settings; every field enters the cache key.

    Attributes:
        border: width in pixels of the image border ring the background plane is fitted on.
        iterations: RANSAC hypotheses.
        threshold: distance to the plane (point-cloud units; MVTec 3D-AD stores metres) below
            which a point is background.
        sample_points: most border points RANSAC scores each hypothesis on.
        high_percentile: foreground height percentile that maps to 1.
    """

    border: int = 10
    iterations: int = 200
    threshold: float = 0.005
    sample_points: int = 4096
    high_percentile: float = 99.0


def valid_points(xyz: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where the point is present (not all three coordinates zero)."""
    return np.any(xyz != 0, axis=2)


def load_xyz(path: str | Path) -> np.ndarray:
    """Reads an (H, W, 3) float32 point cloud; non-finite coordinates become missing points.

    Raises:
        DataError: the file is unreadable, not H x W x 3, or holds no valid points.
    """
    try:
        xyz = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise DataError(f"cannot read point cloud {path}: {err}; replace the file") from err
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise DataError(
            f"{path} has shape {xyz.shape}; an MVTec 3D-AD point cloud is H x W x 3 (x, y, z)"
        )
    xyz = np.asarray(xyz, dtype=np.float32)
    xyz[~np.all(np.isfinite(xyz), axis=2)] = 0.0
    if not valid_points(xyz).any():
        raise DataError(f"{path} has no valid points (every point is zero); replace the file")
    return xyz


def _border_points(xyz: np.ndarray, border: int) -> np.ndarray:
    """(N, 3) float64 valid points in the border ring of the given width."""
    ring = np.zeros(xyz.shape[:2], dtype=bool)
    ring[:border], ring[-border:], ring[:, :border], ring[:, -border:] = True, True, True, True
    return xyz[ring & valid_points(xyz)].astype(np.float64)


def _refine(points: np.ndarray) -> np.ndarray:
    """Least-squares plane through (N, 3) points: [nx, ny, nz, d] with a unit normal."""
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    return np.append(normal, -normal @ centre)


def fit_background_plane(
    xyz: np.ndarray,
    rng: np.random.Generator,
    *,
    border: int = 10,
    iterations: int = 200,
    threshold: float = 0.005,
    sample_points: int = 4096,
) -> np.ndarray:
    """Fits the background plane by RANSAC on the border ring, refined by least squares.

    Args:
        xyz: (H, W, 3) point cloud; the object is assumed to sit away from the border.
        rng: generator for the RANSAC samples.

    Returns:
        (4,) float64 [nx, ny, nz, d] with a unit normal pointing towards the camera (nz < 0);
        n . p + d is the signed height of point p above the plane.

    Raises:
        DataError: fewer than three valid points in the border ring.
    """
    points = _border_points(xyz, border)
    if len(points) < 3:
        raise DataError(f"only {len(points)} valid points in the {border}-pixel border; widen it")
    if len(points) > sample_points:
        points = points[rng.choice(len(points), sample_points, replace=False)]
    origin = points.mean(axis=0)
    centred = points - origin
    a, b, c = (centred[i] for i in rng.integers(0, len(points), size=(3, iterations)))
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = normals / np.maximum(lengths, 1e-30)
    offsets = -np.einsum("ij,ij->i", normals, a)
    inlier_counts = (np.abs(centred @ normals.T + offsets) < threshold).sum(axis=0)
    inlier_counts[lengths[:, 0] <= 1e-30] = -1
    best = int(np.argmax(inlier_counts))
    plane = np.append(normals[best], offsets[best])
    for _ in range(2):
        inliers = np.abs(centred @ plane[:3] + plane[3]) < threshold
        if inliers.sum() >= 3:
            plane = _refine(centred[inliers])
    plane[3] -= plane[:3] @ origin
    return -plane if plane[2] > 0 else plane


def plane_height(xyz: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """(H, W) float32 signed height of each point above the plane; NaN at missing points."""
    height = xyz.astype(np.float64) @ plane[:3] + plane[3]
    height[~valid_points(xyz)] = np.nan
    return height.astype(np.float32)


def fill_holes(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Fills missing pixels from the inside out with the mean of their known 3x3 neighbours.

    Args:
        values: (H, W) map; entries under `missing` are ignored.
        missing: (H, W) bool, True where a value must be filled.

    Returns:
        (H, W) float32 map with every pixel known.
    """
    known = ~missing
    if not known.any():
        raise ValueError("fill_holes needs at least one known pixel")
    filled = np.where(known, values, 0.0).astype(np.float32)
    while not known.all():
        weights = known.astype(np.float32)
        sums = cv2.boxFilter(filled, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        counts = cv2.boxFilter(weights, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        grow = ~known & (counts > 0)
        filled[grow] = sums[grow] / counts[grow]
        known = known | grow
    return filled


def depth_map(
    xyz: np.ndarray, rng: np.random.Generator, params: DepthParams = DepthParams()
) -> np.ndarray:
    """Height above the background plane, holes filled, scaled to [0, 1].

    Background (within `params.threshold` of the plane, or below it) is 0; the foreground is
    divided by its `high_percentile` height and clipped, so the plane stays at 0 and dents on a
    flat top stay visible.

    Args:
        xyz: (H, W, 3) point cloud.
        rng: generator for the plane fit.

    Returns:
        (H, W) float32 in [0, 1].
    """
    plane = fit_background_plane(
        xyz,
        rng,
        border=params.border,
        iterations=params.iterations,
        threshold=params.threshold,
        sample_points=params.sample_points,
    )
    height = plane_height(xyz, plane)
    missing = np.isnan(height)
    height[~missing & (height <= params.threshold)] = 0.0
    height = fill_holes(height, missing)
    foreground = height > 0
    out = np.zeros_like(height)
    if foreground.any():
        top = float(np.percentile(height[foreground], params.high_percentile))
        out[foreground] = np.clip(height[foreground] / top, 0.0, 1.0)
    return out


def depth_to_image(depth: np.ndarray) -> np.ndarray:
    """Renders an (H, W) depth in [0, 1] as an (H, W, 3) uint8 image for an RGB teacher."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    gray = np.round(np.clip(depth, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


class DepthCache:
    """Depth images computed once per point-cloud file and stored as PNG under `cache_dir`.

    An entry's name hashes the file's absolute path, size and modification time with the
    preprocessing parameters and seed, so an edited file or a changed setting misses the cache.
    Each cloud gets a fresh generator seeded with `seed`, so its depth depends only on its content.
    Nothing is written outside `cache_dir`. `computed` counts the clouds processed (cache misses).
    """

    def __init__(self, cache_dir: str | Path, params: DepthParams = DepthParams(), seed: int = 0):
        self.cache_dir = Path(cache_dir)
        self.params = params
        self.seed = seed
        self.computed = 0

    def key(self, xyz_path: str | Path) -> str:
        """The cache key of a point-cloud file as it is now on disk."""
        path = Path(xyz_path).resolve()
        try:
            stat = path.stat()
        except OSError as err:
            raise DataError(f"cannot read point cloud {path}: {err}") from err
        fields = sorted(asdict(self.params).items())
        text = f"v{CACHE_VERSION}|{path}|{stat.st_size}|{stat.st_mtime_ns}|{fields}|{self.seed}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path_for(self, xyz_path: str | Path) -> Path:
        """Where the cached PNG of a point-cloud file lives (it may not exist yet)."""
        return self.cache_dir / f"{self.key(xyz_path)}.png"

    def get(self, xyz_path: str | Path) -> np.ndarray:
        """(H, W, 3) uint8 depth image of a point-cloud file, computed on a cache miss."""
        entry = self.path_for(xyz_path)
        if entry.is_file():
            try:
                with Image.open(entry) as image:
                    return np.asarray(image.convert("RGB"))
            except OSError:
                pass  # a damaged entry is recomputed and replaced below
        rng = np.random.default_rng(self.seed)
        image = depth_to_image(depth_map(load_xyz(xyz_path), rng, self.params))
        self.computed += 1
        self._write(entry, image)
        return image

    def _write(self, entry: Path, image: np.ndarray) -> None:
        """Writes a PNG atomically (siamese_ad/io.py)."""
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        atomic_write_bytes(entry, buffer.getvalue())
