"""Metrics against hand-computed values, scikit-learn and a slow reference AUPRO."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from siamese_ad.metrics import (
    aupro,
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_curve,
    roc_points,
)


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Slow, obviously correct AUPRO: one full pass over the data per distinct threshold."""
    regions = []
    for index, mask in enumerate(masks):
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions += [(index, labeled == k) for k in range(1, count + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        predicted = maps >= threshold
        fpr = (predicted & normal).sum() / normal.sum()
        pro = np.mean([predicted[index][region].mean() for index, region in regions])
        points.append((fpr, pro))
    fprs, pros = (np.array(values) for values in zip(*points, strict=True))
    below = fprs <= fpr_limit
    last_inside, first_outside = np.flatnonzero(below)[-1], np.flatnonzero(~below)
    fprs_cut, pros_cut = list(fprs[below]), list(pros[below])
    if fprs[last_inside] < fpr_limit:
        nxt = first_outside[0]
        weight = (fpr_limit - fprs[last_inside]) / (fprs[nxt] - fprs[last_inside])
        fprs_cut.append(fpr_limit)
        pros_cut.append(pros[last_inside] + weight * (pros[nxt] - pros[last_inside]))
    return float(np.trapezoid(pros_cut, fprs_cut) / fpr_limit)


def random_blob_masks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """(count, size, size) bool masks with a few random discs and single pixels per image."""
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((count, size, size), dtype=bool)
    for mask in masks:
        for _ in range(rng.integers(0, 3)):
            center, radius = rng.integers(0, size, 2), rng.uniform(1.0, size / 4)
            mask |= (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2
        mask[tuple(rng.integers(0, size, (2, rng.integers(0, 3))))] = True
    masks[0, 0, 0] = True
    masks[-1, -1, -1] = False
    return masks


def two_image_set() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 images: region R1 (2 px) in image 0, region R2 (4 px) in image 1, 26 normal px."""
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.zeros((2, 4, 4))
    masks[0, 0, 0:2] = True
    maps[0, 0, 0], maps[0, 0, 1] = 0.9, 0.5
    masks[1, 2:4, 2:4] = True
    maps[1, 2, 2:4], maps[1, 3, 2:4] = 0.8, 0.3
    maps[0, 3, 3] = 0.7
    maps[1, 0, 0] = 0.4
    return maps, masks


def test_two_image_set_matches_hand_computation():
    # Thresholds 0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0 give (FPR, PRO):
    # (0, 1/4), (0, 1/2), (1/26, 1/2), (1/26, 3/4), (2/26, 3/4), (2/26, 1), (1, 1).
    # Area to 0.3: 1/2 * 1/26 + 3/4 * 1/26 + 1 * (0.3 - 2/26) = 0.3 - 0.75/26.
    maps, masks = two_image_set()
    fprs, pros = pro_curve(maps, masks, fpr_limit=0.3)
    np.testing.assert_allclose(fprs, [0, 0, 0, 1 / 26, 1 / 26, 2 / 26, 2 / 26, 0.3])
    np.testing.assert_allclose(pros, [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1])
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(1 - 0.75 / (26 * 0.3))


def test_perfect_and_inverted_scores():
    _, masks = two_image_set()
    perfect = masks.astype(float)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(-perfect, masks) == pytest.approx(0.0)
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert image_auroc(scores, labels) == pytest.approx(1.0)
    assert image_auroc(-scores, labels) == pytest.approx(0.0)


def test_all_equal_scores_give_half():
    labels = np.array([0, 1, 0, 1, 1])
    assert image_auroc(np.full(5, 0.7), labels) == pytest.approx(0.5)
    fpr, tpr = roc_points(np.full(5, 0.7), labels)
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True
    # One threshold: the curve jumps from (0, 0) to (1, 1), so PRO at FPR 0.3 is 0.3.
    assert aupro(np.ones((1, 4, 4)), masks, fpr_limit=0.3) == pytest.approx(0.15)


def test_image_auroc_hand_case_and_sklearn():
    # Positives 0.35, 0.8 beat negatives 0.1, 0.4 in 3 of 4 pairs.
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert image_auroc(scores, labels) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200).astype(float)
    labels = (rng.random(200) < 0.3 + 0.1 * scores).astype(int)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_roc_points_hand_case():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    fpr, tpr = roc_points(scores, labels)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])


def test_f1_max_hand_case():
    # Thresholds 0.8, 0.4, 0.35, 0.1 give F1 = 2/3, 1/2, 4/5, 2/3.
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    best, threshold = f1_max(scores, labels)
    assert best == pytest.approx(0.8)
    assert threshold == pytest.approx(0.35)


def test_diagonal_pixels_are_one_region():
    # Regions {(0,0), (1,1)} and {(3,3)}: at threshold 1 the PRO is (1/2 + 0) / 2 = 1/4
    # (4-connectivity would give three regions and PRO 1/3).
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0
    fprs, pros = pro_curve(maps, masks, fpr_limit=1.0)
    np.testing.assert_allclose(fprs, [0, 0, 1])
    np.testing.assert_allclose(pros, [0, 0.25, 1])
    # PRO rises linearly from 1/4 to 1, reaching 0.475 at FPR 0.3.
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx((0.25 + 0.475) / 2)


@pytest.mark.parametrize("limit", [0.1, 0.3, 0.5, 1.0])
def test_interpolation_at_limit_is_linear(limit):
    # The curve is the straight line from (0, 0) to (1, 1): area limit^2 / 2.
    masks = np.zeros((1, 2, 2), dtype=bool)
    masks[0, 0, 0] = True
    fprs, pros = pro_curve(np.zeros((1, 2, 2)), masks, fpr_limit=limit)
    assert fprs[-1] == pytest.approx(limit)
    assert pros[-1] == pytest.approx(limit)
    assert aupro(np.zeros((1, 2, 2)), masks, fpr_limit=limit) == pytest.approx(limit / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [None, 7])
def test_aupro_matches_slow_reference(seed, levels):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, count=4, size=12)
    maps = rng.random(masks.shape) + 0.5 * masks * rng.random(masks.shape)
    if levels is not None:
        maps = np.round(maps * levels) / levels
    for limit in (0.05, 0.3, 1.0):
        assert aupro(maps, masks, limit) == pytest.approx(reference_aupro(maps, masks, limit))


@pytest.mark.parametrize("levels", [None, 5])
def test_pixel_auroc_matches_sklearn_with_and_without_ties(levels):
    rng = np.random.default_rng(5)
    masks = random_blob_masks(rng, count=4, size=16)
    maps = rng.random(masks.shape) + 0.7 * masks
    if levels is not None:
        maps = np.round(maps * levels) / levels
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected)
    fpr, tpr = roc_points(maps.ravel(), masks.ravel().astype(int))
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all((np.diff(fpr) != 0) | (np.diff(tpr) != 0))  # corners only, no repeats


def test_random_maps_score_far_below_perfect():
    rng = np.random.default_rng(3)
    masks = random_blob_masks(rng, count=8, size=32)
    random_score = aupro(rng.random(masks.shape), masks)
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert random_score < 0.3
    assert pixel_auroc(rng.random(masks.shape), masks) == pytest.approx(0.5, abs=0.05)


def test_curve_is_monotone_and_bounded():
    rng = np.random.default_rng(4)
    masks = random_blob_masks(rng, count=5, size=16)
    fprs, pros = pro_curve(rng.random(masks.shape), masks, fpr_limit=1.0)
    assert np.all(np.diff(fprs) >= 0) and np.all(np.diff(pros) >= 0)
    assert fprs[0] == pros[0] == 0.0
    assert fprs[-1] == pytest.approx(1.0) and pros[-1] == pytest.approx(1.0)


def test_errors():
    with pytest.raises(ValueError, match="only class"):
        image_auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="same shape"):
        image_auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        image_auroc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        image_auroc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no anomalous region"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="no normal pixel"):
        aupro(np.zeros((1, 4, 4)), np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="fpr_limit"):
        pro_curve(np.zeros((1, 4, 4)), np.eye(4)[None], fpr_limit=0.0)
    with pytest.raises(ValueError, match="no anomalous sample"):
        f1_max(np.array([0.1, 0.2]), np.array([0, 0]))


@pytest.mark.slow
def test_aupro_is_fast_on_a_realistic_set():
    rng = np.random.default_rng(5)
    masks = np.zeros((200, 256, 256), dtype=bool)
    masks[::2, 100:140, 60:120] = True
    maps = rng.random(masks.shape, dtype=np.float32) + masks
    start = time.perf_counter()
    assert aupro(maps, masks) == pytest.approx(1.0)
    assert time.perf_counter() - start < 10.0
