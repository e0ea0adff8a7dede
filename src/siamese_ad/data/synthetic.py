"""A deterministic synthetic category in the MVTec AD layout, for the offline demo and the tests.

Normal images are a procedural brushed-and-woven metal surface: oriented band-limited noise
(brushing streaks) plus a regular weave, with per-image phase shifts, a small brightness,
contrast and illumination jitter, and sensor noise. Defects are painted onto such a base with an
alpha map `a` in [0, 1]; the ground-truth mask is `a > 0.5`, and alpha below the threshold is cut
to zero, so the mask is exactly the set of pixels the defect changed.

Layout written by `make_synthetic_category`::

    <root>/train/good/000.png
    <root>/test/good/000.png
    <root>/test/<defect>/000.png
    <root>/ground_truth/<defect>/000_mask.png   (0/255, same size as the image)
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from siamese_ad.data.sample import GOOD, DataError
from siamese_ad.io import atomic_write_text

MARKER = ".siamese_ad_synthetic.json"
_MARKER_ID = "siamese_ad.data.synthetic"
_SUPERSAMPLE = 4
_MASK_THRESHOLD = 0.5
_MAX_COUNT = 100_000  # a recorded image count above it is not one this module wrote


def _oriented_noise(size: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise elongated along `angle` (radians), shape (size, size), unit std."""
    freq = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    along = fx * np.cos(angle) + fy * np.sin(angle)
    across = -fx * np.sin(angle) + fy * np.cos(angle)
    gain = np.exp(-0.5 * ((along / 0.012) ** 2 + (across / 0.18) ** 2))
    gain[0, 0] = 0.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) * gain
    noise = np.real(np.fft.ifft2(spectrum))
    return noise / (noise.std() + 1e-8)


def make_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """One normal image of the category.

    Args:
        size: side of the square image in pixels.
        rng: the random generator; the same state gives the same image.

    Returns:
        (size, size, 3) uint8 RGB image.
    """
    angle = np.deg2rad(rng.uniform(-3.0, 3.0))
    streaks = _oriented_noise(size, angle, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period = size / 16.0
    phase_u, phase_v = rng.uniform(0.0, 2.0 * np.pi, size=2)
    weave = np.sin(2 * np.pi * u / period + phase_u) * np.sin(2 * np.pi * v / period + phase_v)
    slope = rng.uniform(-0.03, 0.03, size=2)
    light = 1.0 + slope[0] * (xx / size - 0.5) + slope[1] * (yy / size - 0.5)
    contrast = rng.uniform(0.9, 1.1)
    lum = (0.045 * streaks + 0.035 * weave) * contrast
    colour = np.array([0.56, 0.58, 0.62]) + rng.uniform(-0.02, 0.02)
    image = (colour[None, None, :] + lum[..., None]) * light[..., None]
    image = image + rng.normal(0.0, 0.012, size=image.shape)
    return _to_uint8(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _coverage(size: int, draw: Callable[[np.ndarray, int], None]) -> np.ndarray:
    """Anti-aliased coverage of a shape drawn at `_SUPERSAMPLE`x resolution, (size, size) in [0, 1].

    `draw(canvas, scale)` paints 255 on a (size*scale, size*scale) uint8 canvas.
    """
    big = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)
    draw(big, _SUPERSAMPLE)
    small = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float64) / 255.0


def _scratch(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin bright or dark curve, 2-4 px wide at 128 px. Returns (target (H, W, 3), alpha)."""
    size = base.shape[0]
    width = max(2.0, rng.uniform(2.0, 4.0) * size / 128.0)
    n_seg = 5
    seg_len = rng.uniform(0.25, 0.45) * size / n_seg
    heading = rng.uniform(0.0, np.pi)
    points = [rng.uniform(0.2, 0.8, size=2) * size]
    for _ in range(n_seg):
        heading += rng.normal(0.0, 0.3)
        points.append(points[-1] + seg_len * np.array([np.cos(heading), np.sin(heading)]))

    def draw(canvas: np.ndarray, scale: int) -> None:
        pts = np.rint(np.array(points) * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, 255, thickness=round(width * scale))

    alpha = _coverage(size, draw)
    level = rng.uniform(0.92, 0.98) if rng.random() < 0.5 else rng.uniform(0.06, 0.14)
    target = level + rng.normal(0.0, 0.015, size=base.shape)
    return target, alpha


def _spot(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A filled ellipse of a clearly different colour. Returns (target (H, W, 3), alpha)."""
    size = base.shape[0]
    centre = rng.uniform(0.15, 0.85, size=2) * size
    axes = rng.uniform(0.045, 0.09, size=2) * size
    tilt = rng.uniform(0.0, 180.0)

    def draw(canvas: np.ndarray, scale: int) -> None:
        c = tuple(int(x) for x in np.rint(centre * scale))
        a = tuple(int(x) for x in np.rint(axes * scale))
        cv2.ellipse(canvas, c, a, tilt, 0.0, 360.0, 255, thickness=-1)

    palette = np.array([[0.55, 0.26, 0.10], [0.16, 0.13, 0.11], [0.20, 0.40, 0.22]])
    colour = palette[rng.integers(len(palette))]
    shading = 0.5 * (base - base.mean(axis=(0, 1), keepdims=True))
    return colour[None, None, :] + shading, _coverage(size, draw)


def _stain(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged colour-shifted region made of a few Gaussian blobs. Returns (target, alpha)."""
    size = base.shape[0]
    centre = rng.uniform(0.2, 0.8, size=2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    field = np.zeros((size, size))
    for _ in range(rng.integers(2, 5)):
        cx, cy = centre + rng.normal(0.0, 0.05 * size, size=2)
        sigma = rng.uniform(0.03, 0.05) * size
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma**2))
        field = field + blob
    alpha = np.clip(1.6 * field, 0.0, 1.0)
    tints = np.array([[1.0, 0.78, 0.45], [0.62, 0.70, 1.0], [0.80, 0.55, 0.55]])
    tint = tints[rng.integers(len(tints))] * rng.uniform(0.75, 0.85)
    return base * tint[None, None, :], alpha


DEFECTS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "spot": _spot,
    "stain": _stain,
}


def paint_defect(
    base: np.ndarray, defect: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paints one defect onto a normal image.

    Args:
        base: (H, W, 3) uint8 RGB image, H == W.
        defect: one of `DEFECTS`.
        rng: the random generator that places and colours the defect.

    Returns:
        image: (H, W, 3) uint8, equal to `base` wherever the mask is 0.
        mask: (H, W) uint8 in {0, 255}, 255 exactly where the defect was painted.
    """
    if defect not in DEFECTS:
        raise DataError(f"unknown synthetic defect {defect!r}; choose from {', '.join(DEFECTS)}")
    if base.ndim != 3 or base.shape[2] != 3 or base.shape[0] != base.shape[1]:
        raise DataError(f"base image must be (S, S, 3), got {base.shape}")
    base_f = base.astype(np.float64) / 255.0
    target, alpha = DEFECTS[defect](base_f, rng)
    inside = alpha > _MASK_THRESHOLD
    alpha = np.where(inside, alpha, 0.0)[..., None]
    painted = _to_uint8(base_f + alpha * (target - base_f))
    image = np.where(inside[..., None], painted, base)
    return image, inside.astype(np.uint8) * 255


def _rng(seed: int, group: str, index: int) -> np.random.Generator:
    """An independent generator per image, stable under changes to the other arguments."""
    return np.random.default_rng([seed, zlib.crc32(group.encode()), index])


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), out):
        raise DataError(f"cannot write {path}")


def _good_path(split: str, index: int) -> Path:
    return Path(split, GOOD, f"{index:03d}.png")


def _defect_paths(defect: str, index: int) -> tuple[Path, Path]:
    """(image, mask) of one defective test image, relative to the category folder."""
    name = f"{index:03d}"
    return Path("test", defect, f"{name}.png"), Path("ground_truth", defect, f"{name}_mask.png")


def _layout(arguments: Any) -> tuple[set[Path], set[Path]] | None:
    """(files, folders) that make_synthetic_category writes with `arguments`, relative to the
    root; None when they are not arguments it records (a marker edited or written by hand)."""
    try:
        counts = [arguments[k] for k in ("n_train", "n_test_good", "n_test_defect")]
        defects = list(arguments["defects"])
        if not set(defects) <= set(DEFECTS):
            return None
    except (KeyError, TypeError):
        return None
    if not all(type(c) is int and 0 <= c <= _MAX_COUNT for c in counts):
        return None
    n_train, n_test_good, n_test_defect = counts
    files = {Path(MARKER)}
    files.update(_good_path("train", i) for i in range(n_train))
    files.update(_good_path("test", i) for i in range(n_test_good))
    for defect in defects:
        for i in range(n_test_defect):
            files.update(_defect_paths(defect, i))
    folders = {parent for f in files for parent in f.parents if parent != Path(".")}
    return files, folders


def _recorded_layout(root: Path) -> tuple[set[Path], set[Path]] | None:
    """The layout recorded by the marker in `root`; None without a valid siamese-ad marker."""
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("generator") != _MARKER_ID:
        return None
    return _layout(marker.get("arguments"))


def _entries(root: Path) -> list[tuple[Path, str]]:
    """Everything under `root` as (relative path, "dir" | "file" | "link"); links, to files or
    folders, are not followed."""
    out = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        for names, kind in ((dirs, "dir"), (files, "file")):
            for name in names:
                link = (Path(folder) / name).is_symlink()
                out.append((here / name, "link" if link else kind))
    return out


def _prepare_root(root: Path) -> None:
    """Empties a previous synthetic category at `root`; refuses any other non-empty folder.

    Only what the generator wrote (the files and folders the arguments recorded in its marker
    give) is removed, and only when nothing else is there: a folder that holds any other file,
    folder or link is refused and left as it is.
    """
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} exists and is not a folder; choose another path")
    if not root.exists() or not any(root.iterdir()):
        return
    layout = _recorded_layout(root)
    if layout is None:
        raise DataError(
            f"{root} is not empty and is not a synthetic category written by siamese-ad "
            f"(no {MARKER}); refusing to write there: choose an empty or new folder"
        )
    ours = {"file": layout[0], "dir": layout[1], "link": set()}
    entries = _entries(root)
    foreign = sorted(str(rel) for rel, kind in entries if rel not in ours[kind])
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if foreign[3:] else "")
        raise DataError(
            f"{root} holds files the synthetic category did not write ({shown}); refusing to "
            "rewrite it: move them out, or choose another folder"
        )
    for rel, kind in entries:
        if kind == "file":
            (root / rel).unlink()
    folders = [rel for rel, kind in entries if kind == "dir"]
    for rel in sorted(folders, key=lambda p: -len(p.parts)):  # deepest first
        (root / rel).rmdir()


def make_synthetic_category(
    root: str | Path,
    *,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 10,
    size: int = 128,
    seed: int = 0,
    defects: tuple[str, ...] = ("scratch", "spot", "stain"),
) -> Path:
    """Writes a synthetic category in the MVTec AD layout; the same arguments give the same bytes.

    Args:
        root: the category folder; it must be new, empty or a previous synthetic category
            (which is then rewritten).
        n_train: normal training images.
        n_test_good: normal test images.
        n_test_defect: anomalous test images per defect type.
        size: image side in pixels (square RGB images).
        seed: seeds every image; a different seed gives different images.
        defects: defect types, each one of `DEFECTS`.

    Returns:
        `root` as a Path.
    """
    unknown = [d for d in defects if d not in DEFECTS]
    if unknown:
        raise DataError(f"unknown synthetic defect(s) {unknown}; choose from {', '.join(DEFECTS)}")
    if size < 32:
        raise DataError(f"size={size} is too small; use at least 32 pixels")
    root = Path(root)
    _prepare_root(root)
    root.mkdir(parents=True, exist_ok=True)
    args = {
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
        "size": size,
        "seed": seed,
        "defects": list(defects),
    }
    # First, so that a run cut short leaves a folder the next run recognises and clears.
    marker = {"generator": _MARKER_ID, "version": 1, "arguments": args}
    atomic_write_text(root / MARKER, json.dumps(marker, indent=2) + "\n")
    for split, count in (("train", n_train), ("test", n_test_good)):
        for i in range(count):
            image = make_texture(size, _rng(seed, f"{split}/{GOOD}", i))
            _write_png(root / _good_path(split, i), image)
    for defect in defects:
        for i in range(n_test_defect):
            rng = _rng(seed, f"test/{defect}", i)
            image, mask = paint_defect(make_texture(size, rng), defect, rng)
            image_path, mask_path = _defect_paths(defect, i)
            _write_png(root / image_path, image)
            _write_png(root / mask_path, mask)
    return root
