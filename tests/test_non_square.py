"""A non-square input size end to end: train at 64 x 32 (height x width), evaluate, predict,
export, and predict with the ONNX graph; flag parsing and its errors."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CommandRun, run_commands
from PIL import Image

from siamese_ad.app.onnx_predict import OnnxDetector
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.evaluation.inference import Detector

HW = (64, 32)
FLAGS = [
    "--weights", "none", "--backbone", "resnet18", "--image-size", "64x32",
    "--epochs", "1", "--deviation-epochs", "1", "--device", "cpu",
]  # fmt: skip
ORIGINALS = [(50, 70), (90, 30), (32, 32)]  # (height, width) of the images given to predict


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> CommandRun:
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in ORIGINALS]
    tmp = tmp_path_factory.mktemp("non_square")
    return run_commands(tmp, tiny_category, make_config(tiny_category), FLAGS, pictures)


def test_the_run_saves_the_size_as_height_width(run: CommandRun) -> None:
    saved = yaml.safe_load((run.model / "config.yaml").read_text())
    assert saved["data"]["image_size"] == [64, 32]
    cfg = Config.from_yaml(run.model / "config.yaml")
    assert cfg.data.image_size == HW and cfg.model_signature()["image_size"] == [64, 32]


def test_maps_are_height_by_width_and_back_at_each_original_size(run: CommandRun) -> None:
    detector = Detector.load(run.model, "cpu")
    images = sorted(run.images.glob("*.png"))
    maps = np.load(run.predict / "maps.npy")
    assert maps.shape == (len(ORIGINALS), *HW) and np.isfinite(maps).all()
    predictions = detector.predict([np.asarray(Image.open(p)) for p in images])
    assert [p.anomaly_map.shape for p in predictions] == ORIGINALS
    assert all(p.mask is None or p.mask.shape == p.anomaly_map.shape for p in predictions)


def test_evaluate_heat_maps_are_panels_at_the_input_size(run: CommandRun) -> None:
    metrics = json.loads((run.eval / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert metrics["n_images"] == len(read_mvtec(run.data).test)
    panels = sorted((run.eval / "heatmaps").glob("*.png"))
    assert panels and all(Image.open(p).size == (4 * HW[1], HW[0]) for p in panels)


def test_onnx_graph_takes_height_width_and_agrees_with_pytorch(run: CommandRun) -> None:
    meta = json.loads(run.onnx.with_suffix(".json").read_text())
    assert meta["image_size"] == [64, 32] and meta["input"]["shape"] == ["batch", 3, 64, 32]
    assert OnnxDetector.load(run.onnx).image_hw == HW
    with (run.predict / "scores.csv").open() as a, (run.onnx_predict / "scores.csv").open() as b:
        ref, got = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["image"] for r in ref] == [r["image"] for r in got]
    for r, g in zip(ref, got, strict=True):
        assert abs(float(r["score"]) - float(g["score"])) < 1e-4
    ref_maps, got_maps = np.load(run.predict / "maps.npy"), np.load(run.onnx_predict / "maps.npy")
    assert got_maps.shape == ref_maps.shape
    scale = max(float(np.abs(ref_maps.astype(np.float32)).max()), 1.0)
    assert np.abs(ref_maps.astype(np.float32) - got_maps).max() <= 1e-3 * scale


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("256", 256), ("416x160", [416, 160]), ("416,160", [416, 160]), ("64X64", 64)],
)
def test_image_size_flag_takes_a_side_or_height_x_width(
    flag: str, expected: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", "x", "--print-config", "--image-size", flag]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["image_size"] == expected


def test_field_flag_takes_a_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", "x", "--print-config", "--data.image_size", "[416,160]"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["data"]["image_size"] == [416, 160]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--image-size", "64x"], "argument --image-size: '64x' is not an image size"),
        (["--image-size", "64x32x32"], "give one side (256), HEIGHTxWIDTH (448x192) or auto"),
        (["--image-size", "64x40"], "data.image_size=[64, 40]: height and width must each"),
        (["--data.image_size", "[64, 32, 32]"], "data.image_size=[64, 32, 32] is not valid"),
    ],
)
def test_bad_image_sizes_exit_2_with_one_line(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["train", "--out", "x", "--print-config", *flags])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_sizes_the_teacher_cannot_take_exit_2_naming_a_fix(
    tiny_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cpu preset's efficientnet_lite0 has a deepest stride of 32: sides in multiples of 64."""
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_category), "--out", str(out), "--weights", "none"]
    assert main([*args, "--image-size", "96x64", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "data.image_size=[96, 64]" in err and "multiple of 64; e.g. --image-size 128x64" in err
    assert not (out / "config.yaml").exists() and not (out / "checkpoint.pt").exists()
