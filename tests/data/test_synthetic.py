"""Tests for the synthetic MVTec-layout category generator."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from siamese_ad.data.sample import DataError
from siamese_ad.data.synthetic import (
    DEFECTS,
    MARKER,
    make_synthetic_category,
    make_texture,
    paint_defect,
)

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_defect": 2, "size": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _local_colour_outlier(path: Path) -> float:
    """Largest distance of a 5x5-averaged colour from the image's mean colour (0-1 scale)."""
    smooth = cv2.blur(cv2.imread(str(path)).astype(np.float64) / 255.0, (5, 5))
    return float(np.linalg.norm(smooth - smooth.mean(axis=(0, 1)), axis=2).max())


def test_default_layout_counts_and_speed(tmp_path: Path) -> None:
    start = time.perf_counter()
    root = make_synthetic_category(tmp_path / "cat")
    assert time.perf_counter() - start < 5.0
    assert root == tmp_path / "cat"
    assert len(list((root / "train" / "good").glob("*.png"))) == 60
    assert len(list((root / "test" / "good").glob("*.png"))) == 20
    assert sorted(p.name for p in (root / "test").iterdir()) == ["good", "scratch", "spot", "stain"]
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == ["scratch", "spot", "stain"]
    for defect in ("scratch", "spot", "stain"):
        names = sorted(p.name for p in (root / "test" / defect).iterdir())
        assert names == [f"{i:03d}.png" for i in range(10)]


def test_images_and_masks_match(tmp_path: Path) -> None:
    root = make_synthetic_category(tmp_path / "cat", **SMALL)
    good = cv2.imread(str(root / "train" / "good" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert good.shape == (64, 64, 3) and good.dtype == np.uint8
    for defect in DEFECTS:
        for i in range(2):
            image = cv2.imread(str(root / "test" / defect / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED)
            mask_path = root / "ground_truth" / defect / f"{i:03d}_mask.png"
            mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert image.shape == (64, 64, 3)
            assert mask.shape == (64, 64) and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}
            assert 0.002 < (mask > 0).mean() < 0.08


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _files(make_synthetic_category(tmp_path / "a", **SMALL, seed=3))
    second = _files(make_synthetic_category(tmp_path / "b", **SMALL, seed=3))
    rewritten = _files(make_synthetic_category(tmp_path / "a", **SMALL, seed=3))
    other = _files(make_synthetic_category(tmp_path / "c", **SMALL, seed=4))
    assert first == second == rewritten
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first)


def test_good_images_vary_but_share_statistics() -> None:
    images = [make_texture(64, np.random.default_rng([0, i])).astype(float) for i in range(8)]
    assert all(np.abs(images[0] - im).mean() > 5.0 for im in images[1:])
    means = np.array([im.mean(axis=(0, 1)) for im in images])
    stds = np.array([im.std() for im in images])
    assert np.ptp(means, axis=0).max() < 15.0
    assert stds.max() / stds.min() < 1.5


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_paint_defect_changes_exactly_the_mask(defect: str) -> None:
    rng = np.random.default_rng(7)
    base = make_texture(64, rng)
    image, mask = paint_defect(base, defect, rng)
    inside = mask > 0
    diff = np.abs(image.astype(int) - base.astype(int)).max(axis=2)
    assert inside.any()
    assert np.array_equal(image[~inside], base[~inside])
    assert (diff[inside] > 0).mean() > 0.95
    assert diff[inside].mean() > 25.0


def test_defects_are_local_colour_outliers(tmp_path: Path) -> None:
    args = {"n_train": 0, "n_test_good": 20, "n_test_defect": 8, "size": 128}
    root = make_synthetic_category(tmp_path / "cat", **args)
    good = [_local_colour_outlier(p) for p in (root / "test" / "good").glob("*.png")]
    for defect in DEFECTS:
        scores = [_local_colour_outlier(p) for p in (root / "test" / defect).glob("*.png")]
        assert min(scores) > max(good), defect


def test_refuses_unrelated_non_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a synthetic category"):
        make_synthetic_category(folder, **SMALL)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_rewrite_replaces_previous_category(tmp_path: Path) -> None:
    root = make_synthetic_category(tmp_path / "cat", **SMALL)
    assert (root / MARKER).is_file()
    make_synthetic_category(root, **{**SMALL, "n_train": 1}, defects=("spot",))
    assert len(list((root / "train" / "good").glob("*.png"))) == 1
    assert sorted(p.name for p in (root / "test").iterdir()) == ["good", "spot"]
    assert sorted(p.name for p in (root / "ground_truth").iterdir()) == ["spot"]


def test_unknown_defect_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="scratch, spot, stain"):
        make_synthetic_category(tmp_path / "cat", **SMALL, defects=("crack",))
    with pytest.raises(DataError, match="scratch, spot, stain"):
        paint_defect(np.zeros((32, 32, 3), np.uint8), "crack", np.random.default_rng(0))
