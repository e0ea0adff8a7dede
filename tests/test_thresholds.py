"""Thresholds chosen on validation only: F1 cut, quantile fallback, normalised score, split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from siamese_ad.config import Config, ConfigError
from siamese_ad.data.sample import CategoryData, DataError, Sample
from siamese_ad.data.splits import hold_out_validation, make_split
from siamese_ad.thresholds import (
    Thresholds,
    choose_thresholds,
    f1_threshold,
    select_threshold,
)


def _f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    tp = np.sum(predicted & labels)
    return 2 * tp / (predicted.sum() + labels.sum())


def test_f1_cut_separates_a_separable_set_midway() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1])
    cut = f1_threshold(scores, labels)
    assert cut == pytest.approx(0.55)
    assert np.array_equal(scores > cut, labels.astype(bool))


def test_f1_cut_is_the_best_of_all_cuts_on_an_overlapping_set() -> None:
    scores = np.array([0.1, 0.4, 0.5, 0.6, 0.9])
    labels = np.array([0, 1, 0, 1, 1]).astype(bool)
    threshold, method = select_threshold(scores, labels, quantile=0.99)
    assert method == "f1"
    assert threshold == pytest.approx(0.25)  # >= 0.4 is best (F1 6/7): midway to 0.1
    best = max(_f1(scores > c, labels) for c in np.concatenate([[0.0], scores]))
    assert _f1(scores > threshold, labels) == pytest.approx(best) == pytest.approx(6 / 7)


def test_quantile_fallback_without_anomalies() -> None:
    scores = np.arange(101, dtype=float)
    threshold, method = select_threshold(scores, np.zeros(101), quantile=0.9)
    assert method == "quantile" and threshold == pytest.approx(90.0)
    top, _ = select_threshold(scores, np.zeros(101), quantile=1.0)
    assert not np.any(scores > top)


def test_choose_thresholds_pixel_f1_and_quantile() -> None:
    maps = np.zeros((2, 4, 4))
    maps[1, :2, :2] = 5.0
    masks = maps > 1.0
    th = choose_thresholds(
        np.array([1.0, 5.0]), np.array([0, 1]), maps, masks, np.array([True, True]), 0.99
    )
    assert th.pixel_method == "f1" and np.array_equal(maps > th.pixel, masks)
    assert th.image_method == "f1" and th.n_normal == 1 and th.n_anomalous == 1
    normal = choose_thresholds(
        np.array([1.0, 2.0, 3.0]),
        np.zeros(3),
        np.random.default_rng(0).random((3, 8, 8)),
        np.zeros((3, 8, 8), bool),
        np.ones(3, bool),
        0.95,
    )
    assert normal.image_method == normal.pixel_method == "quantile"
    assert normal.centre == 2.0 and normal.image == pytest.approx(2.9)


def test_normalised_score_is_one_half_at_the_threshold_and_monotone() -> None:
    th = Thresholds(2.0, 0.5, 1.0, 1.0, "quantile", "quantile", 0.99, 10, 0)
    assert th.normalise(np.array([2.0]))[0] == 0.5
    assert th.normalise(np.array([1.0]))[0] == pytest.approx(0.1)
    grid = np.linspace(-50, 50, 2001)
    values = th.normalise(grid)
    assert np.all(np.diff(values) >= 0) and np.all(np.diff(values[900:1100]) > 0)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert np.array_equal(th.decide(grid), values > 0.5)
    assert Thresholds.from_dict(th.to_dict()) == th


def test_degenerate_validation_still_gives_a_finite_normaliser() -> None:
    th = choose_thresholds(
        np.array([3.0, 3.0]),
        np.zeros(2),
        np.ones((2, 4, 4)),
        np.zeros((2, 4, 4), bool),
        np.ones(2, bool),
        0.99,
    )
    assert th.spread == 1.0 and th.normalise(np.array([3.0]))[0] == 0.5


def _category(n_train: int, validation: int = 0) -> CategoryData:
    root = Path("/data/cat")
    train = [Sample(root / "train/good" / f"{i:03d}.png", 0) for i in range(n_train)]
    val = [Sample(root / "validation/good" / f"{i:03d}.png", 0) for i in range(validation)]
    test = [Sample(root / "test/good/000.png", 0), Sample(root / "test/cut/000.png", 1, "cut")]
    return CategoryData("cat", root, train, test, val)


def test_validation_is_held_out_of_train_deterministically() -> None:
    data = _category(20)
    split = make_split(data, shots=4, real_anomalies=0, seed=3, validation_fraction=0.1)
    again = make_split(data, shots=4, real_anomalies=0, seed=3, validation_fraction=0.1)
    assert len(split.validation) == 2 and len(split.train) == 4
    assert split.manifest.to_dict() == again.manifest.to_dict()
    assert not set(split.manifest.validation) & set(split.manifest.train)
    assert all(key.startswith("train/good/") for key in split.manifest.validation)
    assert make_split(data, 0, 0, 3, validation_fraction=0.0).validation == []


def test_a_validation_split_of_the_data_set_is_used_as_it_is() -> None:
    train, val = hold_out_validation(_category(10, validation=3), fraction=0.2, seed=0)
    assert len(train) == 10 and [s.image.parts[-3] for s in val] == ["validation"] * 3
    with pytest.raises(DataError, match="validation_fraction"):
        hold_out_validation(_category(1), fraction=0.1, seed=0)


def test_config_bounds() -> None:
    cfg = Config()
    assert cfg.data.validation_fraction == 0.1 and cfg.scoring.threshold_quantile == 0.99
    cfg.data.validation_fraction = 0.5
    with pytest.raises(ConfigError, match="validation_fraction"):
        cfg.validate()
