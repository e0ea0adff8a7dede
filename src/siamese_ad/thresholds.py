"""Decision thresholds chosen on validation images only, never on the test set.

Image and pixel thresholds are F1-optimal where the validation images include anomalies (and,
for pixels, their masks), else the `scoring.threshold_quantile` quantile of the normal validation
scores (pixels). An image (pixel) is anomalous when its score is strictly above the threshold.
`train` chooses them at its end and stores them in the checkpoint (payload["extra"][EXTRA_KEY],
in the precision of scoring.bf16; with it on, float32 ones also under FLOAT32_KEY for export);
everything after training only reads them.

Normalised score: a logistic map of the raw score s,

    n(s) = 1 / (1 + exp(-ln(9) * (s - t) / (t - c)))

with t the image threshold and c the median normal validation score: n(c) = 0.1, n(t) = 0.5
exactly, n(t + (t - c)) = 0.9, strictly increasing, always in (0, 1). When t <= c (degenerate
validation scores) the spread t - c is replaced by the normal scores' standard deviation, or 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit

from siamese_ad import metrics
from siamese_ad.data.sample import DataError

if TYPE_CHECKING:  # only annotated: the ONNX runner imports this module without torch
    from siamese_ad.data.dataset import ImageSet

EXTRA_KEY = "thresholds"  # where a checkpoint's payload["extra"] holds them
# float32 ones for the exported graph, stored beside EXTRA_KEY's when scoring.bf16 made those
# bf16 ones (a bf16 run's scores differ from float32 ones by bf16 rounding)
FLOAT32_KEY = "thresholds_float32"
LOGIT_AT_CENTRE = float(np.log(9.0))  # n(centre) = 0.1


@dataclass
class Thresholds:
    """Image and pixel decision thresholds and what they were chosen from.

    Attributes:
        image: an image is anomalous when its score > image.
        pixel: a pixel is anomalous when its map value > pixel.
        centre: median image score of the normal validation images (anchor of `normalise`).
        spread: the scale of `normalise`, image - centre when positive.
        image_method, pixel_method: "f1" or "quantile".
        quantile: the quantile used by the "quantile" method.
        n_normal, n_anomalous: validation images behind the choice.
    """

    image: float
    pixel: float
    centre: float
    spread: float
    image_method: str
    pixel_method: str
    quantile: float
    n_normal: int
    n_anomalous: int

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """(N,) raw image scores -> (N,) in (0, 1), exactly 0.5 at the threshold (module doc)."""
        z = (np.asarray(scores, dtype=np.float64) - self.image) / self.spread
        return expit(LOGIT_AT_CENTRE * z)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """(N,) raw image scores -> (N,) bool, True = anomalous."""
        return np.asarray(scores) > self.image

    def mask(self, maps: np.ndarray) -> np.ndarray:
        """Anomaly maps of any shape, e.g. (N, H, W) -> bool of that shape, True = anomalous."""
        return np.asarray(maps) > self.pixel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Thresholds:
        return cls(**raw)


def stored_thresholds(payload: Mapping[str, Any]) -> Thresholds | None:
    """The thresholds a checkpoint payload holds; None for a run trained without validation
    images, or before `train` chose them."""
    raw = (payload.get("extra") or {}).get(EXTRA_KEY)
    return Thresholds.from_dict(raw) if raw else None


def float32_thresholds(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The stored thresholds (Thresholds.to_dict()) for float32 scoring, as the exported graph
    does: FLOAT32_KEY's for a run that scored in bf16, else the checkpoint's own; None without."""
    extra = payload.get("extra") or {}
    return extra.get(FLOAT32_KEY) or extra.get(EXTRA_KEY) or None


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The F1-optimal cut for the rule `score > cut`: midway between the F1-max threshold and the
    next lower distinct score (or just below it when it is the lowest score).

    Args:
        scores: (N,) scores; labels: (N,) 0/1 with at least one 1.
    """
    _, best = metrics.f1_max(scores, labels)
    lower = scores[scores < best]
    if lower.size == 0:
        return float(np.nextafter(best, -np.inf))
    return float((best + lower.max()) / 2.0)


def select_threshold(scores: np.ndarray, labels: np.ndarray, quantile: float) -> tuple[float, str]:
    """F1-optimal when both classes are present, else the `quantile` of the normal scores.

    Args:
        scores: (N,) scores (images, or flattened pixels).
        labels: (N,) 0/1.

    Returns:
        (threshold, method) with method "f1" or "quantile".
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.any() and not labels.all():
        return f1_threshold(scores, labels), "f1"
    normal = scores[~labels]
    if normal.size == 0:
        raise ValueError("no normal score to take a quantile of; validation needs normal images")
    return float(np.quantile(normal, quantile)), "quantile"


def _spread(threshold: float, centre: float, normal: np.ndarray) -> float:
    if threshold > centre:
        return threshold - centre
    std = float(np.std(normal))
    return std if std > 0 else 1.0


def choose_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    has_mask: np.ndarray,
    quantile: float,
) -> Thresholds:
    """Image and pixel thresholds from validation outputs.

    Args:
        scores: (N,) image scores; labels: (N,) 0/1.
        maps: (N, H, W) anomaly maps; masks: (N, H, W) bool ground truth.
        has_mask: (N,) bool, True where the pixel truth is known.
        quantile: used where a class is missing (module doc).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if (~labels).sum() == 0:
        raise DataError("validation holds no normal image; thresholds need normal images")
    image, image_method = select_threshold(scores, labels, quantile)
    known = np.asarray(has_mask, dtype=bool)
    pixel, pixel_method = select_threshold(maps[known], masks[known], quantile)
    normal = scores[~labels]
    centre = float(np.median(normal))
    return Thresholds(
        image=image,
        pixel=pixel,
        centre=centre,
        spread=_spread(image, centre, normal),
        image_method=image_method,
        pixel_method=pixel_method,
        quantile=quantile,
        n_normal=int((~labels).sum()),
        n_anomalous=int(labels.sum()),
    )


def thresholds_for(
    images: ImageSet, scores: np.ndarray, maps: np.ndarray, quantile: float
) -> Thresholds:
    """`choose_thresholds` on the outputs (scores (N,), maps (N, H, W)) of decoded validation
    images, whose labels, masks and has_mask give the truth."""
    return choose_thresholds(
        scores,
        images.labels.numpy(),
        maps,
        images.masks.numpy(),
        images.has_mask.numpy(),
        quantile,
    )
