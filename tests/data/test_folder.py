"""The plain folder reader: good/ with a held-out share, defect folders, optional masks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.folder import read_folder
from siamese_ad.data.sample import GOOD, DataError


def _png(path: Path, side: int = 12, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), value, np.uint8)).save(path)
    return path


def fake_folder(root: Path, n_good: int = 10) -> Path:
    """good/00..09, dent/ with a mask for d0 only (named d0_mask.png), smudge/ without masks."""
    for i in range(n_good):
        _png(root / GOOD / f"{i:02d}.png")
    _png(root / "dent" / "d0.png")
    _png(root / "dent" / "d1.png")
    _png(root / "smudge" / "s0.jpg")
    mask = np.zeros((12, 12), np.uint8)
    mask[:3, :3] = 255
    (root / "masks" / "dent").mkdir(parents=True)
    Image.fromarray(mask).save(root / "masks" / "dent" / "d0_mask.png")
    # a look-alike that must not be taken for d1's mask
    Image.fromarray(mask).save(root / "masks" / "dent" / "d10.png")
    return root


def test_layout_holdout_and_optional_masks(tmp_path: Path) -> None:
    root = fake_folder(tmp_path / "parts")
    data = read_folder(root, holdout_every=5)
    assert [s.image.name for s in data.train] == [f"{i:02d}.png" for i in (0, 1, 2, 3, 5, 6, 7, 8)]
    good_test = [s for s in data.test if s.label == 0]
    assert [s.image.name for s in good_test] == ["04.png", "09.png"]
    assert all(s.defect == GOOD and s.mask is None for s in good_test)
    anomalous = {s.image.name: s for s in data.test if s.label == 1}
    assert set(anomalous) == {"d0.png", "d1.png", "s0.jpg"}
    assert anomalous["d0.png"].mask == root / "masks" / "dent" / "d0_mask.png"
    assert anomalous["d1.png"].mask is None
    assert anomalous["s0.jpg"].defect == "smudge" and anomalous["s0.jpg"].mask is None
    assert data.defect_types == ["dent", "smudge"]
    assert not {s.image for s in data.train} & {s.image for s in data.test}


def test_unmasked_defects_have_no_pixel_truth(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="2 of 3 defective test images"):
        data = read_category(fake_folder(tmp_path / "parts"), "folder")
    images = load_images(data.test, 8)
    known = {s.image.name: bool(k) for s, k in zip(data.test, images.has_mask, strict=True)}
    assert known == {
        "04.png": True,
        "09.png": True,
        "d0.png": True,
        "d1.png": False,
        "s0.jpg": False,
    }
    d0 = next(i for i, s in enumerate(data.test) if s.image.name == "d0.png")
    assert int(images.masks[d0].sum()) == 4  # the 3x3 corner at 12 px is 2x2 at 8 px


def test_holdout_every_changes_the_share(tmp_path: Path) -> None:
    data = read_folder(fake_folder(tmp_path / "parts"), holdout_every=2)
    assert len(data.train) == 5
    assert len([s for s in data.test if s.label == 0]) == 5


def test_missing_good_folder_names_the_root(tmp_path: Path) -> None:
    (tmp_path / "parts" / "dent").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "parts"))):
        read_folder(tmp_path / "parts")


def test_too_few_good_images_names_the_folder(tmp_path: Path) -> None:
    _png(tmp_path / "parts" / GOOD / "only.png")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "parts" / GOOD))):
        read_folder(tmp_path / "parts")


def test_mask_shared_by_two_same_stem_images_is_ambiguous(tmp_path: Path) -> None:
    root = fake_folder(tmp_path / "parts")
    png = root / "dent" / "d0.png"
    jpg = _png(root / "dent" / "d0.jpg")
    with pytest.raises(DataError, match="ambiguous mask") as err:
        read_folder(root)
    assert str(png) in str(err.value) and str(jpg) in str(err.value)


def test_same_stem_images_without_a_mask_are_both_read(tmp_path: Path) -> None:
    root = fake_folder(tmp_path / "parts")
    jpg = _png(root / "dent" / "d1.jpg")
    dent = {s.image: s.mask for s in read_folder(root).test if s.defect == "dent"}
    assert dent[jpg] is None and dent[root / "dent" / "d1.png"] is None
    assert dent[root / "dent" / "d0.png"] == root / "masks" / "dent" / "d0_mask.png"
