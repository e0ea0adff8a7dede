"""Issue 12, data side: every image training reads is decoded before its first epoch, huge
images are read downscaled or refused by name, and renamed copies of trained images are not
scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from siamese_ad.config import Config
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import DataError
from siamese_ad.data.splits import hold_out_validation
from siamese_ad.training.trainer import train


def _copy(category: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(category, tmp_path / category.name))


# 6. a bad validation image stops training before its first epoch


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_bad_image_in_a_small_validation_split_stops_training_before_it_starts(
    tiny_category: Path, tmp_path: Path, tiny_config: Config, damage: str
) -> None:
    root = _copy(tiny_category, tmp_path)
    cfg = tiny_config.merged({"data": {"root": str(root)}})
    _, validation = hold_out_validation(
        read_mvtec(root), cfg.data.validation_fraction, cfg.train.seed
    )
    assert 0 < len(validation) < 4
    bad = validation[0].image
    bad.write_bytes(b"" if damage == "empty" else bad.read_bytes()[:60])
    with pytest.raises(DataError, match="cannot read image") as err:
        train(cfg, tmp_path / "run")
    assert str(bad) in str(err.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
