"""Synthetic anomalies after NSA (Schlueter et al.): patches cut from one normal image, resized
and blended into another, with the mask of the pixels the blend actually changed.

Images are uint8 arrays (H, W, 3), all of one size within a category. On textures a patch may
come from and go anywhere; on objects both its source and its destination lie on the foreground
that `foreground_mask` estimates, and the change is confined to the destination's foreground.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from siamese_ad.config import SynthesisConfig

OBJECT_TYPES = ("auto", "texture", "object")
BLENDS = ("poisson", "paste")
_CLONE_FLAGS = (cv2.NORMAL_CLONE, cv2.MIXED_CLONE)
_MIN_SIDE = 4  # patch sides in pixels; smaller ones would vanish in the mask cleanup
_MARGIN = 2  # context pixels around a Poisson patch; the ring next to it is the boundary
_OPEN = np.ones((3, 3), np.uint8)  # mask cleanup: drops isolated changed pixels
_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))  # and fills pinholes


def foreground_mask(
    image: np.ndarray,
    *,
    border: float = 0.04,
    min_contrast: float = 10.0,
    max_border_ratio: float = 0.3,
    min_area: float = 0.01,
    close_size: float = 0.03,
    keep_ratio: float = 0.2,
) -> np.ndarray:
    """Estimates the object's foreground from the image alone.

    The background colour is the median of a border strip; the per-pixel difference from it
    (max over channels, slightly blurred) is split by Otsu's threshold, closed morphologically,
    and the largest connected components are kept.

    Args:
        image: (H, W, 3) uint8.
        border: width of the border strip, as a fraction of the shorter side.
        min_contrast: Otsu thresholds below this (0-255) mean no distinct object.
        max_border_ratio: if the border is foreground at this fraction of the interior's rate
            or more, the image is a texture (or the object fills it).
        min_area: a foreground smaller than this fraction of the image is not trusted.
        close_size: closing kernel side, as a fraction of the shorter side.
        keep_ratio: components at least this fraction of the largest one's area are kept.

    Returns:
        (H, W) bool; all True when the estimate is degenerate (texture, no contrast).
    """
    h, w = image.shape[:2]
    side = min(h, w)
    width = max(1, round(border * side))
    edge = np.ones((h, w), bool)
    edge[width:-width, width:-width] = False
    background = np.median(image[edge], axis=0).astype(np.float32)
    diff = np.abs(image.astype(np.float32) - background).max(axis=2)
    diff = cv2.GaussianBlur(diff, (0, 0), sigmaX=max(0.5, 0.01 * side))
    threshold, binary = cv2.threshold(
        np.clip(diff, 0, 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    inner_rate = binary[~edge].mean()
    everything = np.ones((h, w), bool)
    if (
        threshold < min_contrast
        or inner_rate < min_area
        or binary[edge].mean() >= max_border_ratio * inner_rate
    ):
        return everything
    k = max(3, round(close_size * side) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.size == 0:
        return everything
    mask = np.isin(labels, np.flatnonzero(areas >= keep_ratio * areas.max()) + 1)
    return mask if mask.mean() >= min_area else everything


def is_texture(
    images: Sequence[np.ndarray], *, max_images: int = 8, min_coverage: float = 0.9
) -> bool:
    """Decides texture vs object: on textures the foreground covers (nearly) the whole image.

    Args:
        images: normal images, each (H, W, 3) uint8; up to `max_images`, evenly spaced, are used.
        min_coverage: mean foreground fraction from which the category counts as a texture.
    """
    if len(images) == 0:
        raise ValueError("is_texture needs at least one image")
    picks = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).round())
    coverage = np.mean([foreground_mask(images[int(i)]).mean() for i in picks])
    return bool(coverage >= min_coverage)


def _poisson_blend(
    image: np.ndarray, patch: np.ndarray, blend: np.ndarray, y: int, x: int, flag: int
) -> np.ndarray:
    """Poisson-blends `patch` into `image` at (y, x) with cv2.seamlessClone.

    Works on a crop with `_MARGIN` reflected pixels of context, so patches may touch the image
    border, and stays fast. Returns the blended (h, w, 3) region; `image` is not modified.
    """
    h, w = blend.shape
    m = _MARGIN
    padded = cv2.copyMakeBorder(image, m, m, m, m, cv2.BORDER_REFLECT_101)
    canvas = np.ascontiguousarray(padded[y : y + h + 2 * m, x : x + w + 2 * m])
    source = canvas.copy()
    source[m : m + h, m : m + w] = patch
    mask = np.zeros(canvas.shape[:2], np.uint8)
    mask[m - 1 : m + h + 1, m - 1 : m + w + 1] = 255  # bounding box = patch + boundary ring
    mask[m : m + h, m : m + w] = np.where(blend, 255, 0)
    bx, by, bw, bh = cv2.boundingRect(mask)
    result = cv2.seamlessClone(source, canvas, mask, (bx + bw // 2, by + bh // 2), flag)
    return result[m : m + h, m : m + w]


class AnomalySynthesizer:
    """Makes NSA-style synthetic anomalies from a pool of normal images.

    Args:
        images: the normal pool, each (H, W, 3) uint8 of one size; sources and destinations.
        object_type: "texture" (anywhere), "object" (foreground only) or "auto" (`is_texture`).
        min_patches, max_patches: how many patches a sample gets (inclusive range).
        min_size, max_size: patch height and width as fractions of the image height and width.
        blend: "poisson" (cv2.seamlessClone, normal or mixed at random) or "paste".
        scale_range: the patch is resized by a factor drawn uniformly from this range.
        max_aspect: the patch aspect ratio lies in [1 / max_aspect, max_aspect].
        change_threshold: a pixel counts as changed when some channel moved more than this.
        min_changed: a patch is kept when at least this fraction of its region changed.
        min_foreground: objects only; the share of a patch region on both foregrounds.
        max_tries: attempts per patch before it is given up.
        jitter: probability that a patch is made defect-like before blending (`jitter_patch`:
            its contrast scaled, inverted or noised); 0 draws nothing extra from the generator.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        *,
        object_type: str = "auto",
        min_patches: int = 1,
        max_patches: int = 4,
        min_size: float = 0.05,
        max_size: float = 0.25,
        blend: str = "poisson",
        scale_range: tuple[float, float] = (0.7, 1.3),
        max_aspect: float = 2.0,
        change_threshold: int = 10,
        min_changed: float = 0.1,
        min_foreground: float = 0.5,
        max_tries: int = 10,
        jitter: float = 0.0,
    ) -> None:
        self.images = _check_pool(images)
        if object_type not in OBJECT_TYPES:
            choices = ", ".join(OBJECT_TYPES)
            raise ValueError(f"object_type={object_type!r}; choose one of {choices}")
        if blend not in BLENDS:
            raise ValueError(f"blend={blend!r}; choose one of {', '.join(BLENDS)}")
        if not 1 <= min_patches <= max_patches:
            raise ValueError("need 1 <= min_patches <= max_patches")
        if not 0.0 < min_size <= max_size < 1.0:
            raise ValueError("need 0 < min_size <= max_size < 1")
        self.patches = (min_patches, max_patches)
        self.sizes = (min_size, max_size)
        self.blend = blend
        self.scale_range = scale_range
        self.max_aspect = max_aspect
        self.change_threshold = change_threshold
        self.min_changed = min_changed
        self.min_foreground = min_foreground
        self.max_tries = max_tries
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter={jitter} must be a probability in [0, 1]")
        self.jitter = jitter
        if object_type == "auto":
            object_type = "texture" if is_texture(self.images) else "object"
        self.object_type = object_type
        self.masks: list[np.ndarray] | None = None
        self._centres: list[np.ndarray] = []  # flat indices of foreground pixels, per image
        if object_type == "object":
            self.masks = [foreground_mask(image) for image in self.images]
            self._centres = [np.flatnonzero(mask) for mask in self.masks]

    @classmethod
    def from_config(
        cls, images: Sequence[np.ndarray], config: SynthesisConfig, object_type: str = "auto"
    ) -> AnomalySynthesizer:
        """Builds a synthesizer from `SynthesisConfig` (and `DataConfig.object_type`)."""
        return cls(
            images,
            object_type=object_type,
            min_patches=config.min_patches,
            max_patches=config.max_patches,
            min_size=config.min_size,
            max_size=config.max_size,
            blend=config.blend,
            jitter=config.jitter,
        )

    def __call__(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Blends 1..max_patches patches from other pool images into `images[index]`.

        Returns:
            The anomalous image (H, W, 3) uint8 and its mask (H, W) bool, True where a blend
            changed the image (by more than `change_threshold`, cleaned up morphologically);
            outside the mask the image equals the destination exactly. The mask is empty only
            when every try of every patch changed (nearly) nothing.
        """
        if not 0 <= index < len(self.images):
            raise IndexError(f"index {index} out of range for a pool of {len(self.images)}")
        destination = self.images[index]
        out = destination.copy()
        mask = np.zeros(destination.shape[:2], bool)
        for _ in range(rng.integers(self.patches[0], self.patches[1] + 1)):
            for _ in range(self.max_tries):
                if self._add_patch(out, mask, index, rng):
                    break
        return out, mask

    def _add_patch(
        self, out: np.ndarray, mask: np.ndarray, index: int, rng: np.random.Generator
    ) -> bool:
        """One try: cut, resize and blend a patch; False if rejected.

        Writes into `out` only where the blend changed it, and marks those pixels in `mask`.
        """
        height, width = out.shape[:2]
        source = int(rng.integers(len(self.images) - 1))
        source += source >= index  # never the destination
        fraction = rng.uniform(*self.sizes)
        aspect = np.exp(rng.uniform(-np.log(self.max_aspect), np.log(self.max_aspect)))
        h = int(np.clip(round(fraction * height * np.sqrt(aspect)), _MIN_SIDE, height))
        w = int(np.clip(round(fraction * width / np.sqrt(aspect)), _MIN_SIDE, width))
        sy, sx = self._place(source, h, w, rng)
        scale = rng.uniform(*self.scale_range)
        dh = int(np.clip(round(h * scale), _MIN_SIDE, height))
        dw = int(np.clip(round(w * scale), _MIN_SIDE, width))
        patch = cv2.resize(self.images[source][sy : sy + h, sx : sx + w], (dw, dh))
        if self.jitter and rng.random() < self.jitter:
            patch = jitter_patch(patch, rng)
        dy, dx = self._place(index, dh, dw, rng)
        flag = _CLONE_FLAGS[int(rng.integers(len(_CLONE_FLAGS)))]
        blend = np.ones((dh, dw), bool)
        if self.masks is not None:
            # resized like the patch: only pixels interpolated from foreground alone count
            on_source = self.masks[source][sy : sy + h, sx : sx + w].astype(np.float32)
            on_source = cv2.resize(on_source, (dw, dh)) > 0.999
            blend = on_source & self.masks[index][dy : dy + dh, dx : dx + dw]
            if blend.mean() < self.min_foreground:
                return False
        before = out[dy : dy + dh, dx : dx + dw]
        if self.blend == "poisson":
            after = _poisson_blend(out, patch, blend, dy, dx, flag)
        else:
            after = np.where(blend[..., None], patch, before)
        changed = np.abs(after.astype(np.int16) - before).max(axis=2) > self.change_threshold
        changed = cv2.morphologyEx((changed & blend).astype(np.uint8), cv2.MORPH_CLOSE, _CLOSE)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, _OPEN).astype(bool) & blend
        if changed.sum() < self.min_changed * blend.sum():
            return False
        before[changed] = after[changed]  # `before` is a view into `out`
        mask[dy : dy + dh, dx : dx + dw] |= changed
        return True

    def _place(self, image: int, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of an (h, w) box inside the image; on objects centred on foreground."""
        height, width = self.images[image].shape[:2]
        if self.masks is None:
            return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
        centres = self._centres[image]
        cy, cx = divmod(int(centres[rng.integers(centres.size)]), width)
        return int(np.clip(cy - h // 2, 0, height - h)), int(np.clip(cx - w // 2, 0, width - w))


def jitter_patch(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A defect-like version of an (h, w, 3) uint8 patch, one of three at random: its contrast
    about its mean scaled by 2-4x or 0.1-0.4x, its intensities inverted, or Gaussian noise (sigma
    20-50) added. Poisson blending keeps gradients, not offsets, so each changes gradients."""
    x = patch.astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        gain = rng.uniform(2.0, 4.0) if rng.random() < 0.5 else rng.uniform(0.1, 0.4)
        x = (x - x.mean()) * gain + x.mean()
    elif kind == 1:
        x = 255.0 - x
    else:
        x = x + rng.normal(0.0, rng.uniform(20.0, 50.0), size=x.shape[:2])[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def _check_pool(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Checks the pool: two or more (H, W, 3) uint8 images of one size."""
    if len(images) < 2:
        raise ValueError(
            f"anomaly synthesis needs at least 2 normal images (a patch never comes from its "
            f"destination), got {len(images)}"
        )
    pool = [np.ascontiguousarray(image) for image in images]
    shape = pool[0].shape
    for i, image in enumerate(pool):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i}: need (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if image.shape != shape:
            raise ValueError(f"image {i} has shape {image.shape}, image 0 {shape}; resize first")
    return pool
