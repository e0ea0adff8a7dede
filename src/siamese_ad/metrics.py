"""Anomaly detection metrics on numpy arrays: AUROC, ROC points, F1-max, the PRO curve and AUPRO.

Conventions: a higher score means more anomalous; a sample (or pixel) is predicted anomalous
when its score is >= the threshold. Every distinct score is a threshold, and equal scores form
one threshold step, so ties are never split by sort order. Curves are returned as their corners:
points of a horizontal run between two thresholds are left out, which changes neither the
piecewise-linear curve nor its area. Each metric sorts the scores once, O(P log P) in the number
of scores P, and only the anomalous ones with their positions: sorting the values of the normal
ones (and counting them with binary search) is several times faster for 10^7 pixels.

AUPRO follows the official MVTec AD evaluation protocol: ground-truth regions are the 8-connected
components of each image's mask, the false positive rate is taken over all normal pixels of the
whole set, the per-region overlap is averaged over all regions of the whole set, and the curve is
integrated with the trapezoid rule from FPR 0 to `fpr_limit` (interpolated linearly at the limit)
and divided by `fpr_limit`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _as_binary(values: np.ndarray, name: str) -> np.ndarray:
    """Checks that `values` holds only 0/1 (or bool) and returns it as a bool array."""
    values = np.asarray(values)
    if values.dtype != bool and not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{name} must hold only 0 and 1 (or bool); convert with `{name} > 0`")
    return values.astype(bool, copy=False)


def _check_scores(scores: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got dtype {scores.dtype}")
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores


def _check_pair(
    scores: np.ndarray, labels: np.ndarray, ndim: int, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validates a scores/labels pair of equal shape with `ndim` dimensions; returns them flat."""
    scores = _check_scores(scores, names[0])
    labels = _as_binary(labels, names[1])
    if scores.ndim != ndim or scores.shape != labels.shape:
        raise ValueError(
            f"{names[0]} {scores.shape} and {names[1]} {labels.shape} must have the same shape "
            f"with {ndim} dimension(s)"
        )
    if scores.size == 0:
        raise ValueError(f"{names[0]} is empty")
    return scores.ravel(), labels.ravel()


def _require_both_classes(labels: np.ndarray, name: str) -> None:
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        present = "1 (anomalous)" if positives else "0 (normal)"
        raise ValueError(f"{name} holds only class {present}; both 0 and 1 are needed")


def _descending_steps(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts scores once, highest first, and marks the last position of each tie group.

    Args:
        scores: (P,) scores.

    Returns:
        order: (P,) indices that sort `scores` in descending order.
        step_ends: (T,) positions in the sorted order where a threshold step ends, one per
            distinct score (T distinct scores), in descending score order.
    """
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    step_ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    return order, step_ends


def _cumulative_counts(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positive counts at every distinct threshold, highest threshold first.

    Args:
        scores: (P,) scores.
        labels: (P,) bool, True = anomalous.

    Returns:
        thresholds (T,), true positives (T,) and false positives (T,) for `score >= threshold`.
    """
    order, step_ends = _descending_steps(scores)
    sorted_labels = labels[order]
    true_positives = np.cumsum(sorted_labels, dtype=np.int64)[step_ends]
    false_positives = (step_ends + 1) - true_positives
    return scores[order][step_ends], true_positives, false_positives


def _corner_points(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The curve (normals >= t, positive weight >= t) over every distinct threshold t, from the
    highest threshold down, as its corners.

    Between two consecutive distinct positive scores a_k > a_(k+1) only normals enter, so the
    curve runs flat from (normals >= a_k, W_k) to (normals > a_(k+1), W_k); every corner is one
    of these two points of some k, W_k being the positive weight at or above a_k.

    Args:
        scores: (P,) scores.
        positive: (P,) bool, True = anomalous; at least one of each.
        weights: (P,) weight of each pixel (used on the positives), or None for 1.

    Returns:
        x (K,) normal counts (float) and y (K,) cumulative positive weights, from (0, 0) to
        (number of normals, total positive weight), consecutive points distinct.
    """
    normal_sorted = np.sort(scores[~positive])  # values only: much faster than an argsort
    positive_scores = scores[positive]
    order, step_ends = _descending_steps(positive_scores)
    thresholds = positive_scores[order][step_ends]
    mass = np.ones(order.size) if weights is None else weights[positive][order]
    reached = np.cumsum(mass, dtype=np.float64)[step_ends]
    n = normal_sorted.size
    above = n - np.searchsorted(normal_sorted, thresholds, side="right")
    at_or_above = n - np.searchsorted(normal_sorted, thresholds, side="left")
    x = np.empty(2 * thresholds.size + 2)
    y = np.empty_like(x)
    x[0], y[0] = 0.0, 0.0
    x[1:-1:2], y[1:-1:2] = above, np.concatenate(([0.0], reached[:-1]))
    x[2:-1:2], y[2:-1:2] = at_or_above, reached
    x[-1], y[-1] = n, reached[-1]
    keep = np.append(True, (np.diff(x) != 0) | (np.diff(y) != 0))
    return x[keep], y[keep]


def area_under(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the piecewise linear curve through the points (x, y), x non-decreasing."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's corners, starting at (0, 0) and ending at (1, 1).

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 (normal) or 1 (anomalous).

    Returns:
        fpr (K,) and tpr (K,), both non-decreasing; K is at most 2 (distinct scores) + 1.
    """
    scores, labels = _check_pair(scores, labels, 1, ("scores", "labels"))
    return _roc(scores, labels, "labels")


def _roc(scores: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """ROC points of flat (P,) scores and bool labels, `name` naming the labels in errors."""
    _require_both_classes(labels, name)
    false_positives, true_positives = _corner_points(scores, labels)
    return false_positives / false_positives[-1], true_positives / true_positives[-1]


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of image scores; ties count one half.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 (normal) or 1 (anomalous); both classes must be present.

    Returns:
        AUROC in [0, 1].
    """
    fpr, tpr = roc_points(scores, labels)
    return area_under(fpr, tpr)


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """Area under the ROC curve over all pixels of a set of anomaly maps.

    Args:
        maps: (N, H, W) anomaly maps.
        masks: (N, H, W) ground truth, bool or 0/1 (1 = anomalous); both classes must be present.

    Returns:
        AUROC in [0, 1].
    """
    scores, labels = _check_pair(maps, masks, 3, ("maps", "masks"))
    return area_under(*_roc(scores, labels, "masks"))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best F1 score over all thresholds and the threshold that reaches it.

    Args:
        scores: (N,) anomaly scores.
        labels: (N,) 0 (normal) or 1 (anomalous); at least one must be anomalous.

    Returns:
        (best F1, threshold): predicting `score >= threshold` as anomalous gives the best F1;
        among equal F1 values the highest threshold is returned.
    """
    scores, labels = _check_pair(scores, labels, 1, ("scores", "labels"))
    if not labels.any():
        raise ValueError("labels holds no anomalous sample; F1 is undefined")
    thresholds, true_positives, false_positives = _cumulative_counts(scores, labels)
    f1 = 2 * true_positives / (true_positives + false_positives + true_positives[-1])
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-pixel PRO increments from the 8-connected ground-truth regions of every image.

    Args:
        masks: (N, H, W) bool ground truth.

    Returns:
        weights: (N * H * W,) 1 / (region size * number of regions) on anomalous pixels, else 0.
        normal: (N * H * W,) bool, True on normal pixels.
        num_regions: number of regions over the whole set.
    """
    labeled = np.zeros(masks.shape, dtype=np.int64)
    num_regions = 0
    for index, mask in enumerate(masks):
        image_labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        labeled[index] = np.where(image_labels > 0, image_labels + num_regions, 0)
        num_regions += count
    labeled = labeled.ravel()
    sizes = np.bincount(labeled, minlength=num_regions + 1).astype(np.float64)
    inverse_sizes = np.zeros_like(sizes)
    inverse_sizes[1:] = 1.0 / (sizes[1:] * max(num_regions, 1))
    return inverse_sizes[labeled], labeled == 0, num_regions


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit={fpr_limit!r} must be in (0, 1]")


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """The per-region overlap (PRO) curve of the MVTec AD protocol, cut at `fpr_limit`.

    Args:
        maps: (N, H, W) anomaly maps.
        masks: (N, H, W) ground truth, bool or 0/1 (1 = anomalous).
        fpr_limit: the largest false positive rate kept, in (0, 1]; the last point is linearly
            interpolated at exactly this rate.

    Returns:
        fprs (K,) and pros (K,): the curve's corners from (0, 0), FPR non-decreasing, ending at
        FPR == fpr_limit.

    Raises:
        ValueError: bad shapes or values, no anomalous region, or no normal pixel.
    """
    _check_fpr_limit(fpr_limit)
    masks = _as_binary(masks, "masks")
    scores, _ = _check_pair(maps, masks, 3, ("maps", "masks"))
    weights, normal, num_regions = _region_weights(masks)
    num_normal = int(normal.sum())
    if num_regions == 0:
        raise ValueError("masks holds no anomalous region; AUPRO is undefined")
    if num_normal == 0:
        raise ValueError("masks holds no normal pixel; AUPRO is undefined")
    normals, pros = _corner_points(scores, ~normal, weights)
    return _cut_curve(normals / num_normal, np.minimum(pros, 1.0), fpr_limit)


def _cut_curve(fprs: np.ndarray, pros: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the points with FPR <= limit and adds one interpolated linearly at FPR == limit.

    Args:
        fprs: (K,) non-decreasing, starting at 0 and ending at 1.
        pros: (K,) values at those rates.
        limit: rate in (0, 1].

    Returns:
        The cut curve, fprs (K',) and pros (K',).
    """
    inside = int(np.searchsorted(fprs, limit, side="right"))
    if fprs[inside - 1] == limit:
        return fprs[:inside], pros[:inside]
    left, right = inside - 1, inside
    slope = (pros[right] - pros[left]) / (fprs[right] - fprs[left])
    pro_at_limit = pros[left] + slope * (limit - fprs[left])
    return np.append(fprs[:inside], limit), np.append(pros[:inside], pro_at_limit)


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to `fpr_limit`, divided by `fpr_limit` (MVTec AD protocol).

    Args:
        maps: (N, H, W) anomaly maps.
        masks: (N, H, W) ground truth, bool or 0/1 (1 = anomalous).
        fpr_limit: the false positive rate where integration stops, in (0, 1].

    Returns:
        Normalised AUPRO in [0, 1]; 1 means every region is fully found before any false positive.
    """
    fprs, pros = pro_curve(maps, masks, fpr_limit)
    return area_under(fprs, pros) / fpr_limit
