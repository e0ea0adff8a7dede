"""`data.image_size: auto`: the input shape fitted to the training images' aspect ratio, saved as
fitted so that evaluate, predict and export read it back, with maps at each original geometry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TinyRun
from PIL import Image

from siamese_ad.cli import main
from siamese_ad.config import AUTO_SIZE, Config, ConfigError, as_hw, preset
from siamese_ad.data.images import fitted_image_size
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.data.splits import Split, SplitManifest
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.teacher import input_multiple
from siamese_ad.training.trainer import _fit_image_size

TALL = (80, 32)  # (height, width) of the tall category's images: a ratio of 2.5


def _write(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(folder / f"{i}.png")
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(paths[-1])
    return paths


def test_square_images_give_the_square_default(tmp_path: Path) -> None:
    assert fitted_image_size(_write(tmp_path, [(512, 512), (300, 300)]), 64) == 256


def test_the_median_ratio_sets_the_shape_at_about_the_same_pixels(tmp_path: Path) -> None:
    """KolektorSDD's ratio (2.5, one odd image out): 405 x 162 pixels, to multiples of 64 and 32."""
    paths = _write(tmp_path, [(250, 100), (1250, 500), (500, 200), (100, 100)])
    assert fitted_image_size(paths, 64) == (384, 192)
    assert fitted_image_size(paths, 32) == (416, 160)
    wide = _write(tmp_path / "wide", [(100, 250)] * 3)
    assert fitted_image_size(wide, 32) == (160, 416)


def test_a_side_never_falls_below_one_multiple(tmp_path: Path) -> None:
    height, width = fitted_image_size(_write(tmp_path, [(2000, 20)]), 64)  # type: ignore[misc]
    assert width == 64 and height % 64 == 0 and height > 1000


def test_no_or_unreadable_images_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no training images"):
        fitted_image_size([], 32)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        fitted_image_size([bad], 32)


def test_input_multiple_is_twice_the_deepest_stride() -> None:
    assert input_multiple("efficientnet_lite0") == 64  # stages 2, 3, 5: stride 32
    assert input_multiple("resnet18") == 32  # layer1..layer3: stride 16
    assert input_multiple("efficientnet_lite0", (1, 2, 4)) == 32


def test_auto_is_the_cpu_preset_default_and_round_trips(tmp_path: Path) -> None:
    assert preset("cpu").data.image_size == AUTO_SIZE
    assert preset("paper").data.image_size == 256  # the RD code's input
    cfg = Config.from_dict({"data": {"image_size": "auto"}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert Config.from_yaml(tmp_path / "c.yaml").data.image_size == AUTO_SIZE
    with pytest.raises(ConfigError, match="auto has no shape until train fits it"):
        as_hw(cfg.data.image_size)


def test_image_size_flag_takes_auto(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["train", "--out", "x", "--print-config", "--preset", "paper", "--image-size", "auto"])
        == 0
    )
    assert yaml.safe_load(capsys.readouterr().out)["data"]["image_size"] == AUTO_SIZE


@pytest.fixture(scope="module")
def tall_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> tuple[Path, Path]:
    """The tiny category with every image and mask stretched to TALL, trained with auto."""
    tmp = tmp_path_factory.mktemp("auto_size")
    data = tmp / "tall"
    shutil.copytree(tiny_category, data)
    for path in data.rglob("*.png"):
        image = Image.open(path)
        image.resize((TALL[1], TALL[0]), Image.Resampling.NEAREST).save(path)
    config = tmp / "tiny.yaml"
    cfg = make_config(data)
    cfg.data.image_size = AUTO_SIZE
    cfg.contrastive.enabled = cfg.deviation.enabled = False
    cfg.to_yaml(config)
    model = tmp / "model"
    assert main(["train", "--config", str(config), "--out", str(model), "--device", "cpu"]) == 0
    return data, model


def test_train_saves_the_fitted_size_and_evaluate_reads_it(tall_run: tuple[Path, Path]) -> None:
    data, model = tall_run
    saved = yaml.safe_load((model / "config.yaml").read_text())["data"]["image_size"]
    assert saved == [416, 160]  # resnet18: multiples of 32
    detector = Detector.load(model, "cpu")
    assert detector.cfg.data.size_hw == (416, 160)
    out = model.parent / "eval"
    assert main(["evaluate", "--checkpoint", str(model), "--out", str(out), "--no-heatmaps"]) == 0
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["pixel_auroc"] <= 1.0
    image = np.asarray(Image.open(next((data / "test" / "good").glob("*.png"))))
    assert detector.predict([image])[0].anomaly_map.shape == TALL


def _split(paths: list[Path]) -> Split:
    samples = [Sample(p, 0) for p in paths]
    return Split(samples[1:], [], [], SplitManifest(), samples[:1])


def test_a_shallow_teacher_still_fits_to_multiples_of_32(tmp_path: Path) -> None:
    """resnet18 layer1..layer2 (stride 8) asks for multiples of 16; data.image_size for 32."""
    model = {"backbone": "resnet18", "teacher_stages": [0, 1]}
    cfg = Config.from_dict({"data": {"image_size": "auto"}, "model": model})
    fitted = _fit_image_size(cfg, _split(_write(tmp_path, [(250, 100)] * 3)), None)
    assert fitted.data.image_size == (416, 160)


def test_a_resumed_run_keeps_the_size_it_was_trained_at(tiny_run: TinyRun, tmp_path: Path) -> None:
    """A run trained at 32 x 32 before auto existed resumes at 32, not at a size fitted anew."""
    cfg = Config.from_dict({"data": {"image_size": "auto"}})
    split = _split(_write(tmp_path, [(250, 100)] * 3))
    assert _fit_image_size(cfg, split, tiny_run.run / "checkpoint.pt").data.image_size == 32
