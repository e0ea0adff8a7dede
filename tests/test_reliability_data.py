"""Issue 12, data side: every image training reads is decoded before its first epoch, huge
images are read downscaled or refused by name, and renamed copies of trained images are not
scored."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TinyRun
from PIL import Image

import siamese_ad.data.decode as decode
from siamese_ad.app.evaluate import evaluate
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.data.decode import open_image, read_rgb
from siamese_ad.data.images import image_size_of
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import DataError
from siamese_ad.data.splits import (
    MANIFEST,
    SplitManifest,
    exclude_trained,
    hold_out_validation,
    make_split,
    record_sha256,
)
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


# 7. images over Pillow's decompression-bomb limit: read reduced, or refused by name


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's bomb limit and ours scaled down 100 000 times: 1 000 pixels for Pillow (it
    refuses above 2 000), reduced reading above 1 000, refusal above 10 000."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    monkeypatch.setattr(decode, "LARGE_PIXELS", 1_000)
    monkeypatch.setattr(decode, "MAX_PIXELS", 10_000)


def _smooth(width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 gradients."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize(("suffix", "mode"), [(".png", "RGB"), (".jpg", "RGB"), (".png", "P")])
def test_image_over_pillows_bomb_limit_is_read_reduced(
    tmp_path: Path, small_limits: None, suffix: str, mode: str
) -> None:
    rgb = _smooth(120, 64)  # 7 680 pixels: Pillow alone refuses it
    path = tmp_path / f"line_scan{suffix}"
    Image.fromarray(rgb).convert(mode).save(path)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    img, original = open_image(path, 16)
    assert original == (64, 120) and img.width >= 16 and img.height >= 16
    assert img.width * img.height <= 64 * 64  # decoded reduced, never at full size after it
    picture, original = read_rgb(path, 16)
    assert picture.shape == (16, 16, 3) and original == (64, 120)
    full = np.asarray(Image.fromarray(rgb).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.abs(picture.astype(int) - full).mean() < 12  # the same picture, slightly smoother
    assert Image.MAX_IMAGE_PIXELS == 1_000  # Pillow's own limit is left as it was


def test_large_image_read_reduced_to_a_height_width_size(
    tmp_path: Path, small_limits: None
) -> None:
    rgb = _smooth(120, 64)  # 64 high, 120 wide
    Image.fromarray(rgb).save(tmp_path / "line_scan.png")
    img, _ = open_image(tmp_path / "line_scan.png", (32, 8))
    assert img.height >= 32 and img.width >= 8  # each side reduced no further than its target
    assert img.width * img.height < 64 * 120
    picture, original = read_rgb(tmp_path / "line_scan.png", (32, 8))
    assert picture.shape == (32, 8, 3) and original == (64, 120)


def test_image_over_max_pixels_is_refused_by_name(
    tmp_path: Path, small_limits: None, tiny_run: TinyRun, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "images" / "huge.png"
    path.parent.mkdir()
    Image.fromarray(_smooth(120, 100)).save(path)  # 12 000 pixels > MAX_PIXELS
    for read in (lambda: read_rgb(path, 16), lambda: image_size_of(path)):
        with pytest.raises(DataError, match="crop or downscale") as err:
            read()
        assert str(path) in str(err.value)
    args = ["predict", str(path), "--checkpoint", str(tiny_run.run), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err.strip().splitlines()[-1]


# 10. renamed copies of trained images are not scored; an edited manifest.json is noticed


def test_manifest_records_the_sha256_of_every_trained_image(
    tiny_category: Path, tiny_config: Config
) -> None:
    data = read_mvtec(tiny_category)
    split = make_split(data, 0, 1, tiny_config.train.seed, tiny_config.data.validation_fraction)
    assert split.manifest.sha256 == {}  # make_split reads no file
    record_sha256(split, tiny_category)
    trained = split.train + split.anomalies
    assert len(split.anomalies) == len(data.defect_types) and split.train
    assert split.manifest.sha256 == {
        s.image.relative_to(tiny_category).as_posix(): hashlib.sha256(
            s.image.read_bytes()
        ).hexdigest()
        for s in trained
    }
    back = SplitManifest.from_dict(json.loads(json.dumps(split.manifest.to_dict())))
    assert back == split.manifest


def test_renamed_copies_of_trained_images_are_left_out_with_a_warning(
    tiny_category: Path, tmp_path: Path, tiny_config: Config
) -> None:
    root = _copy(tiny_category, tmp_path)
    data = read_mvtec(root)
    split = make_split(data, 0, 1, tiny_config.train.seed, tiny_config.data.validation_fraction)
    record_sha256(split, root)
    normal_copy = shutil.copy(split.train[0].image, root / "test" / "good" / "renamed.png")
    anomaly = split.anomalies[0]
    anomaly_copy = root / "test" / anomaly.defect / "copy.png"
    shutil.copy(anomaly.image, anomaly_copy)
    shutil.copy(anomaly.mask, anomaly.mask.with_name("copy_mask.png"))
    data = read_mvtec(root)
    with pytest.warns(UserWarning, match="same bytes as an image this checkpoint trained on"):
        kept = exclude_trained(data.test, split.manifest, root)
    images = {s.image for s in kept}
    assert Path(normal_copy) not in images and anomaly_copy not in images
    assert len(kept) == len(data.test) - len(split.anomalies) - 2


def _scored(out: Path) -> set[str]:
    with (out / "scores.csv").open() as fh:
        return {Path(row["image"]).name for row in csv.DictReader(fh)}


def test_evaluate_leaves_out_a_renamed_copy_of_a_training_image(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    root = _copy(tiny_run.data, tmp_path)
    trained = json.loads((tiny_run.run / MANIFEST).read_text())["train"][0]
    shutil.copy(root / trained, root / "test" / "good" / "renamed.png")
    with pytest.warns(UserWarning, match="renamed copy"):
        evaluate(tiny_run.run, tmp_path / "out", data_root=root, device="cpu", heatmaps=False)
    assert "renamed.png" not in _scored(tmp_path / "out") and _scored(tmp_path / "out")


def test_evaluate_warns_of_an_edited_manifest_file(tiny_run: TinyRun, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run.run, tmp_path / "run"))
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["train"] = manifest["train"][:1]
    (run / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="differs from the manifest inside the checkpoint") as got:
        evaluate(run, tmp_path / "out", data_root=tiny_run.data, device="cpu", heatmaps=False)
    assert any(str(run / MANIFEST) in str(w.message) for w in got)
