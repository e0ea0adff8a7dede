"""MVTec 3D-AD reader on a fake category tree, and its errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from fake_mvtec3d import write_fake_mvtec3d
from PIL import Image

from siamese_ad.data.mvtec3d import read_mvtec3d
from siamese_ad.data.sample import GOOD, DataError


@pytest.fixture
def category(tmp_path):
    return write_fake_mvtec3d(
        tmp_path, size=32, train=3, validation=2, test_good=2, defects={"bump": 2, "dent": 1}
    )


def test_reads_counts_labels_and_splits(category):
    data = read_mvtec3d(category)
    assert data.name == "fake3d" and data.root == category
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 2, 5)
    assert data.defect_types == ["bump", "dent"]
    for sample in data.train + data.validation:
        assert sample.label == 0 and sample.defect == GOOD and sample.mask is None
    labels = {s.key: s.label for s in data.test}
    assert labels == {
        "bump/000.png": 1,
        "bump/001.png": 1,
        "dent/000.png": 1,
        "good/000.png": 0,
        "good/001.png": 0,
    }
    for sample in data.train + data.validation + data.test:
        assert sample.image.parent.name == "rgb" and sample.image.is_file()
        assert sample.xyz == sample.image.parent.parent / "xyz" / f"{sample.image.stem}.tiff"
    for sample in data.test:
        mask = np.asarray(Image.open(sample.mask))
        assert mask.shape == (32, 32) and (mask.max() > 0) == (sample.label == 1)
    assert all(s.image.parts[-4] == "validation" for s in data.validation)


def test_missing_xyz_names_the_file(category):
    (category / "test" / "bump" / "xyz" / "001.tiff").unlink()
    with pytest.raises(DataError, match=r"bump/xyz/001\.tiff"):
        read_mvtec3d(category)


def test_size_mismatch_names_the_file(category):
    path = category / "train" / "good" / "xyz" / "002.tiff"
    tifffile.imwrite(path, np.ones((30, 32, 3), np.float32), photometric="rgb")
    with pytest.raises(DataError, match=r"good/xyz/002\.tiff is 30x32 .* is 32x32"):
        read_mvtec3d(category)


def test_xyz_without_three_channels_names_the_file(category):
    path = category / "validation" / "good" / "xyz" / "000.tiff"
    tifffile.imwrite(path, np.ones((32, 32), np.float32))
    with pytest.raises(DataError, match=r"validation/good/xyz/000\.tiff has shape"):
        read_mvtec3d(category)


def test_missing_test_mask_names_the_file(category):
    (category / "test" / "good" / "gt" / "001.png").unlink()
    with pytest.raises(DataError, match=r"good/gt/001\.png is missing"):
        read_mvtec3d(category)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_missing_split_folder_names_it(category, split):
    shutil.rmtree(category / split)
    with pytest.raises(DataError, match=f"split folder .*{split} is missing"):
        read_mvtec3d(category)


def test_empty_category_is_an_error(tmp_path):
    category = write_fake_mvtec3d(tmp_path, train=0, validation=0, test_good=0, defects={})
    with pytest.raises(DataError, match=r"fake3d/train holds no rgb"):
        read_mvtec3d(category)


def test_defect_type_in_train_is_an_error(category):
    shutil.copytree(category / "test" / "bump", category / "train" / "bump")
    with pytest.raises(DataError, match=r"train/bump: train/ may hold only good"):
        read_mvtec3d(category)


def test_empty_validation_is_allowed(tmp_path):
    category = write_fake_mvtec3d(tmp_path, size=32, train=1, validation=0, test_good=1)
    data = read_mvtec3d(category)
    assert data.validation == [] and len(data.train) == 1 and len(data.test) == 3
