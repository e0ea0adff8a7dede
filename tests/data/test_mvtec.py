"""The MVTec AD reader on fake category trees: what it finds, and the errors for broken layouts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import GOOD, DataError

SIDE = 16


def _png(path: Path, value: int = 128, side: int = SIDE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(path)
    return path


def _mask(path: Path, box: slice = slice(4, 8), side: int = SIDE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((side, side), np.uint8)
    mask[box, box] = 255
    Image.fromarray(mask).save(path)
    return path


def fake_mvtec(root: Path) -> Path:
    """3 train, 2 good test, 2 crack (masks *_mask.png), 1 hole (mask named like the image)."""
    for i in range(3):
        _png(root / "train" / GOOD / f"{i:03d}.png", 100 + i)
    for i in range(2):
        _png(root / "test" / GOOD / f"{i:03d}.png", 110 + i)
        _png(root / "test" / "crack" / f"{i:03d}.png", 200 + i)
        _mask(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    _png(root / "test" / "hole" / "000.png", 50)
    _mask(root / "ground_truth" / "hole" / "000.png", slice(0, 2))
    (root / "train" / GOOD / "notes.txt").write_text("not an image")
    return root


def test_reads_counts_labels_defects_and_masks(tmp_path: Path) -> None:
    data = read_mvtec(fake_mvtec(tmp_path / "bottle"))
    assert data.name == "bottle"
    assert [s.image.name for s in data.train] == ["000.png", "001.png", "002.png"]
    assert all(s.label == 0 and s.defect == GOOD and s.mask is None for s in data.train)
    assert len(data.test) == 5
    assert data.defect_types == ["crack", "hole"]
    by_key = {s.key: s for s in data.test}
    assert by_key["good/000.png"].label == 0 and by_key["good/000.png"].mask is None
    crack = by_key["crack/001.png"]
    assert crack.label == 1
    assert crack.mask == tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png"
    assert by_key["hole/000.png"].mask == tmp_path / "bottle" / "ground_truth" / "hole" / "000.png"


def test_loaded_masks_follow_the_samples(tmp_path: Path) -> None:
    data = read_category(fake_mvtec(tmp_path / "bottle"), "mvtec")
    images = load_images(data.test, 8, desc="test")
    assert images.images.shape == (5, 3, 8, 8)
    assert images.labels.tolist() == [s.label for s in data.test]
    assert bool(images.has_mask.all())  # good images are all-normal, defects have masks
    for sample, mask in zip(data.test, images.masks, strict=True):
        expected = {GOOD: 0, "crack": 4, "hole": 1}[sample.defect]  # 8 px: boxes halve
        assert int(mask.sum()) == expected
    first_good = [s.key for s in data.test].index("good/000.png")
    assert torch.equal(images.images[first_good], torch.full((3, 8, 8), 110, dtype=torch.uint8))


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        read_mvtec(missing)


def test_data_set_root_instead_of_category_is_refused(tmp_path: Path) -> None:
    fake_mvtec(tmp_path / "mvtec" / "bottle")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "mvtec"))):
        read_mvtec(tmp_path / "mvtec")


def test_empty_train_folder_names_it(tmp_path: Path) -> None:
    root = fake_mvtec(tmp_path / "bottle")
    for p in (root / "train" / GOOD).iterdir():
        p.unlink()
    with pytest.raises(DataError, match=re.escape(str(root / "train" / GOOD))):
        read_mvtec(root)


def test_empty_test_folder_names_it(tmp_path: Path) -> None:
    root = tmp_path / "bottle"
    _png(root / "train" / GOOD / "000.png")
    (root / "test" / GOOD).mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(str(root / "test"))):
        read_mvtec(root)


def test_defect_image_without_mask_is_kept_with_a_warning(tmp_path: Path) -> None:
    root = fake_mvtec(tmp_path / "bottle")
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.warns(UserWarning, match="1 of 3 defective test images"):
        data = read_mvtec(root)
    crack = {s.key: s for s in data.test}["crack/001.png"]
    assert crack.label == 1 and crack.mask is None
    images = load_images(data.test, SIDE)
    known = dict(zip([s.key for s in data.test], images.has_mask.tolist(), strict=True))
    assert known == {**dict.fromkeys(known, True), "crack/001.png": False}


def test_mask_of_wrong_size_is_caught_when_loading(tmp_path: Path) -> None:
    root = fake_mvtec(tmp_path / "bottle")
    _mask(root / "ground_truth" / "crack" / "000_mask.png", side=SIDE * 2)
    data = read_mvtec(root)
    with pytest.raises(DataError, match=r"000_mask\.png"):
        load_images(data.test, 8)


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mvtec"):
        read_category(tmp_path, "coco")
