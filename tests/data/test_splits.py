"""Splits: the seeded few-shot choice, real anomalies moved to training, no train/test overlap."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamese_ad.data.sample import GOOD, CategoryData, DataError, Sample
from siamese_ad.data.splits import SplitManifest, exclude_trained, make_split, relative_key


def fake_category(root: Path, n_train: int = 20, n_defect: int = 4) -> CategoryData:
    """Records only (no files are needed): n_train normals, 3 good and 2 x n_defect test images."""
    train = [Sample(root / "train" / GOOD / f"{i:03d}.png", 0) for i in range(n_train)]
    test = [Sample(root / "test" / GOOD / f"{i:03d}.png", 0) for i in range(3)]
    for defect in ("crack", "hole"):
        test += [
            Sample(root / "test" / defect / f"{i:03d}.png", 1, defect) for i in range(n_defect)
        ]
    return CategoryData("fake", root, train, test)


def _names(samples: list[Sample]) -> list[str]:
    return [s.key for s in samples]


def test_full_shot_trains_on_every_normal_and_scores_every_test_image(tmp_path: Path) -> None:
    data = fake_category(tmp_path)
    split = make_split(data, shots=0, real_anomalies=0, seed=0)
    assert split.train == data.train
    assert split.anomalies == [] and split.test == data.test
    assert split.manifest.train == [f"train/good/{i:03d}.png" for i in range(20)]


def test_shots_is_a_seeded_subset(tmp_path: Path) -> None:
    data = fake_category(tmp_path)
    first = make_split(data, shots=5, real_anomalies=0, seed=7)
    again = make_split(data, shots=5, real_anomalies=0, seed=7)
    other = make_split(data, shots=5, real_anomalies=0, seed=8)
    assert len(first.train) == 5 and len(set(first.train)) == 5
    assert set(first.train) <= set(data.train)
    assert first.train == again.train
    assert first.train != other.train
    assert first.manifest.train == [relative_key(s, tmp_path) for s in first.train]


def test_more_shots_than_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="21-shot"):
        make_split(fake_category(tmp_path), shots=21, real_anomalies=0, seed=0)


def test_real_anomalies_leave_the_test_split(tmp_path: Path) -> None:
    data = fake_category(tmp_path)
    split = make_split(data, shots=0, real_anomalies=2, seed=3)
    assert sorted(s.defect for s in split.anomalies) == ["crack", "crack", "hole", "hole"]
    assert all(s.label == 1 for s in split.anomalies)
    assert not set(split.anomalies) & set(split.test)
    assert set(split.anomalies) | set(split.test) == set(data.test)
    assert split.manifest.anomalies == [relative_key(s, tmp_path) for s in split.anomalies]
    again = make_split(data, shots=0, real_anomalies=2, seed=3)
    assert _names(again.anomalies) == _names(split.anomalies)


def test_real_anomalies_must_leave_some_to_score(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="crack"):
        make_split(fake_category(tmp_path, n_defect=2), shots=0, real_anomalies=2, seed=0)


def test_exclude_trained_drops_the_manifest_anomalies(tmp_path: Path) -> None:
    data = fake_category(tmp_path)
    split = make_split(data, shots=0, real_anomalies=1, seed=0)
    kept = exclude_trained(data.test, split.manifest, tmp_path)
    assert kept == split.test
    assert len(kept) == len(data.test) - 2


def test_exclude_trained_refuses_a_training_image(tmp_path: Path) -> None:
    data = fake_category(tmp_path)
    manifest = make_split(data, shots=4, real_anomalies=0, seed=0).manifest
    leaked = Sample(tmp_path / manifest.train[2], 0)
    with pytest.raises(DataError, match=str(leaked.image.name)):
        exclude_trained([*data.test, leaked], manifest, tmp_path)
    # an unused normal training image may be scored
    unused = next(s for s in data.train if relative_key(s, tmp_path) not in manifest.train)
    assert exclude_trained([unused], manifest, tmp_path) == [unused]


def test_manifest_round_trips_through_a_dict(tmp_path: Path) -> None:
    manifest = make_split(fake_category(tmp_path), shots=3, real_anomalies=1, seed=1).manifest
    assert SplitManifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.trained_on() == set(manifest.train) | set(manifest.anomalies)
