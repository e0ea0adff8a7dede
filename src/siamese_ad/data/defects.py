"""Defect-like synthetic anomalies made from one image alone: scratches, stains, noise patches.

Training's anomalies are patches of other normal images blended in (synthesis.py), so a
validation set made the same way favours whatever fits that one family. Training never sees
these families; a validation set made of them (training/validation.py, yardstick "defects")
measures how a model generalises to kinds of defect it was not taught.

Every family changes the three channels alike (a grey image stays grey) and softens its edge.
The mask holds the pixels that moved by at least `change_threshold` grey levels in some channel,
with 1-pixel pinholes closed; outside it the image moved by less than that. Pixel sizes are
given at 256 px and scale with min(H, W) / 256.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from siamese_ad.data.synthesis import OBJECT_TYPES, foreground_mask, is_texture

DEFECT_FAMILIES = ("scratch", "stain", "noise")
_REFERENCE_SIDE = 256  # pixel sizes are given at this min(H, W)
_SCRATCH_STEPS = 32  # polyline segments of a scratch
_SUBPIXEL_BITS = 4  # cv2 drawing precision: 1/16 px
_HARMONICS = np.arange(2, 6)[:, None, None]  # a blob edge's perturbation: smooth, low orders
_MIN_RADIUS = 0.3  # of the blob's ellipse; the perturbed edge never reaches the centre
_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))  # fills 1-pixel pinholes


class DefectSynthesizer:
    """Paints one scratch, stain or noise patch into an image; no second image needed.

    Args:
        scratch_length: scratch length range, fractions of the image diagonal.
        scratch_width: line width range, px at 256 px (at least 1 px is drawn).
        scratch_delta: darkening or brightening range (sign at random), grey levels.
        scratch_turn: std of the heading change per segment, radians.
        blob_axes: axis length range of a stain or noise blob, fractions of min(H, W).
        blob_roughness: std of the blob edge's radial perturbation, relative to its radius.
        blob_softness: blur of the blob's edge, relative to its shorter semi-axis.
        stain_gains: a darkening gain range and a brightening one, one of them at random.
        noise_sigma: blur of the Gaussian noise that makes the texture, px at 256 px.
        noise_level: range of the texture's mean, grey levels.
        noise_contrast: range of the texture's std, grey levels.
        noise_alpha: range of the texture's blend weight inside the blob.
        change_threshold: a pixel is anomalous when some channel moved by this much or more.
        min_area: a defect marking fewer pixels than this fraction of the image is drawn anew.
        max_tries: draws before the last one is accepted, even (nearly) empty (flat dark images).
    """

    def __init__(
        self,
        *,
        scratch_length: tuple[float, float] = (0.15, 0.6),
        scratch_width: tuple[float, float] = (1.0, 4.0),
        scratch_delta: tuple[float, float] = (25.0, 70.0),
        scratch_turn: float = 0.15,
        blob_axes: tuple[float, float] = (0.04, 0.2),
        blob_roughness: float = 0.25,
        blob_softness: float = 0.15,
        stain_gains: tuple[tuple[float, float], ...] = ((0.55, 0.8), (1.25, 1.6)),
        noise_sigma: tuple[float, float] = (1.0, 4.0),
        noise_level: tuple[float, float] = (64.0, 192.0),
        noise_contrast: tuple[float, float] = (30.0, 60.0),
        noise_alpha: tuple[float, float] = (0.5, 0.9),
        change_threshold: int = 8,
        min_area: float = 0.001,
        max_tries: int = 10,
    ) -> None:
        if max_tries < 1:
            raise ValueError(f"max_tries={max_tries} must be at least 1")
        if not 0.0 <= min_area < 1.0:
            raise ValueError(f"min_area={min_area} must lie in [0, 1)")
        self.scratch_length = scratch_length
        self.scratch_width = scratch_width
        self.scratch_delta = scratch_delta
        self.scratch_turn = scratch_turn
        self.blob_axes = blob_axes
        self.blob_roughness = blob_roughness
        self.blob_softness = blob_softness
        self.stain_gains = stain_gains
        self.noise_sigma = noise_sigma
        self.noise_level = noise_level
        self.noise_contrast = noise_contrast
        self.noise_alpha = noise_alpha
        self.change_threshold = change_threshold
        self.min_area = min_area
        self.max_tries = max_tries

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        family: str | None = None,
        foreground: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paints one defect of `family` (one of DEFECT_FAMILIES; None: drawn at random).

        Args:
            image: (H, W, 3) uint8; not modified.
            rng: all randomness comes from it, so the same state gives the same defect.
            family: "scratch", "stain" or "noise".
            foreground: (H, W) bool or None; the defect's centre lies on it and the image
                changes only on it (objects).

        Returns:
            The defective image (H, W, 3) uint8 and its mask (H, W) bool. A draw whose mask
            covers less than `min_area` of the image is redrawn, up to `max_tries` times.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"need an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if family is None:
            family = DEFECT_FAMILIES[int(rng.integers(len(DEFECT_FAMILIES)))]
        paint = {"scratch": self._scratch, "stain": self._stain, "noise": self._noise}.get(family)
        if paint is None:
            raise ValueError(f"family={family!r}; choose one of {', '.join(DEFECT_FAMILIES)}")
        height, width = image.shape[:2]
        centres = np.arange(height * width)
        if foreground is not None:
            if foreground.shape != (height, width) or not foreground.any():
                raise ValueError(f"foreground must be a non-empty ({height}, {width}) bool mask")
            centres = np.flatnonzero(foreground)
        x = image.astype(np.float32)
        for _ in range(self.max_tries):
            centre = np.array(divmod(int(centres[rng.integers(centres.size)]), width), float)
            painted = paint(x, centre, rng)
            if foreground is not None:
                painted = np.where(foreground[..., None], painted, x)
            out = np.clip(np.rint(painted), 0, 255).astype(np.uint8)
            mask = self._mask(image, out, foreground)
            if mask.sum() >= self.min_area * mask.size:
                break
        return out, mask

    def _mask(
        self, image: np.ndarray, out: np.ndarray, foreground: np.ndarray | None
    ) -> np.ndarray:
        """(H, W) bool: pixels moved by >= change_threshold in some channel, pinholes closed."""
        moved = np.abs(out.astype(np.int16) - image).max(axis=2) >= self.change_threshold
        mask = cv2.morphologyEx(moved.astype(np.uint8), cv2.MORPH_CLOSE, _CLOSE).astype(bool)
        return mask if foreground is None else mask & foreground

    def _scratch(self, x: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A smooth random-walk polyline centred on `centre` (y, x), darkened or brightened."""
        height, width = x.shape[:2]
        scale = min(height, width) / _REFERENCE_SIDE
        step = rng.uniform(*self.scratch_length) * np.hypot(height, width) / _SCRATCH_STEPS
        heading = rng.uniform(0.0, 2 * np.pi) + np.cumsum(
            rng.normal(0.0, self.scratch_turn, _SCRATCH_STEPS)
        )
        moves = step * np.stack([np.cos(heading), np.sin(heading)], axis=1)  # (dx, dy)
        points = np.concatenate([np.zeros((1, 2)), np.cumsum(moves, axis=0)])
        points += centre[::-1] - points[_SCRATCH_STEPS // 2]
        thickness = max(1, round(rng.uniform(*self.scratch_width) * scale))
        canvas = np.zeros((height, width), np.uint8)
        pts = np.rint(points * (1 << _SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, 255, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
        profile = cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), max(0.5, 0.5 * scale))
        profile /= max(float(profile.max()), 1e-6)
        delta = rng.uniform(*self.scratch_delta) * (1.0 if rng.random() < 0.5 else -1.0)
        return x + (delta * profile)[..., None]

    def _stain(self, x: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A soft-edged irregular blob inside which the image is multiplied by a gain."""
        alpha = self._blob(x.shape[:2], centre, rng)
        gain = rng.uniform(*self.stain_gains[int(rng.integers(len(self.stain_gains)))])
        return x * (1.0 + (gain - 1.0) * alpha)[..., None]

    def _noise(self, x: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A grey low-pass noise texture blended into a soft-edged irregular blob (DRAEM-like)."""
        height, width = x.shape[:2]
        alpha = self._blob((height, width), centre, rng) * rng.uniform(*self.noise_alpha)
        sigma = rng.uniform(*self.noise_sigma) * min(height, width) / _REFERENCE_SIDE
        noise = rng.standard_normal((height, width)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), max(0.5, sigma))
        noise = (noise - noise.mean()) / max(float(noise.std()), 1e-6)
        texture = rng.uniform(*self.noise_level) + rng.uniform(*self.noise_contrast) * noise
        return x + alpha[..., None] * (texture[..., None] - x)

    def _blob(
        self, shape: tuple[int, int], centre: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """(H, W) float32 in [0, 1]: a rotated ellipse about `centre` (y, x), its edge perturbed
        by a few random low harmonics of the angle, then blurred."""
        semi = rng.uniform(*self.blob_axes, size=2) * min(shape) / 2
        angle = rng.uniform(0.0, np.pi)
        yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
        yy, xx = yy - centre[0], xx - centre[1]
        u = (xx * np.cos(angle) + yy * np.sin(angle)) / semi[0]
        v = (yy * np.cos(angle) - xx * np.sin(angle)) / semi[1]
        amplitude = rng.normal(0.0, self.blob_roughness, (len(_HARMONICS), 1, 1)) / _HARMONICS
        phase = rng.uniform(0.0, 2 * np.pi, (len(_HARMONICS), 1, 1))
        edge = 1.0 + (amplitude * np.cos(_HARMONICS * np.arctan2(v, u) + phase)).sum(axis=0)
        inside = (np.hypot(u, v) <= np.maximum(edge, _MIN_RADIUS)).astype(np.float32)
        return cv2.GaussianBlur(inside, (0, 0), max(0.5, self.blob_softness * semi.min()))


def defect_foregrounds(
    images: Sequence[np.ndarray], object_type: str = "auto"
) -> list[np.ndarray | None]:
    """Where each image's defect may go, decided as AnomalySynthesizer decides.

    Args:
        images: each (H, W, 3) uint8, of one category.
        object_type: "texture" (anywhere), "object" (the estimated foreground) or "auto"
            (`is_texture` over the images).

    Returns:
        Per image None (anywhere) or its (H, W) bool `foreground_mask`.
    """
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type={object_type!r}; choose one of {', '.join(OBJECT_TYPES)}")
    if object_type == "auto":
        object_type = "texture" if is_texture(images) else "object"
    if object_type == "texture":
        return [None] * len(images)
    return [foreground_mask(image) for image in images]
