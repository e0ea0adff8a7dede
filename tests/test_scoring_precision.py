"""scoring.bf16: checkpoint scoring under bf16 autocast, with float32 thresholds kept for the
exported graph; off (the default), scoring stays float32 and nothing else changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, TinyRun, make_tiny_config, predict_both

from siamese_ad.app.export import export_model
from siamese_ad.config import Config
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import build_unet
from siamese_ad.thresholds import EXTRA_KEY, FLOAT32_KEY
from siamese_ad.training.calibration import stored_calibration
from siamese_ad.training.trainer import train

CPU = torch.device("cpu")
# bf16 keeps 8 bits of mantissa: features, hence scores, move by well under 5% of their size
RELATIVE_BOUND = 0.05


@pytest.fixture(scope="module")
def bf16_scoring(
    tiny_category: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(run folder, model.onnx): a tiny run with scoring.bf16 on, exported."""
    tmp = tmp_path_factory.mktemp("bf16_scoring")
    train(make_tiny_config(tiny_category).merged({"scoring": {"bf16": True}}), tmp / "run")
    return tmp / "run", export_model(tmp / "run", tmp / "model.onnx")


def _test_paths(category: Path) -> list[Path]:
    return sorted((category / "test").rglob("*.png"))


def _scores_and_maps(detector: Detector, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    predictions = detector.predict(paths)
    return np.array([p.score for p in predictions]), np.stack([p.anomaly_map for p in predictions])


def test_bf16_scoring_differs_from_float32_by_a_small_bounded_amount(
    bf16_scoring: tuple[Path, Path], tiny_category: Path
) -> None:
    run, _ = bf16_scoring
    paths = _test_paths(tiny_category)
    bf16 = Detector.load(run, device="cpu")
    fp32 = Detector.load(run, device="cpu")
    fp32.cfg.scoring.bf16 = False
    assert bf16.cfg.scoring.bf16
    scores, maps = _scores_and_maps(bf16, paths)
    ref_scores, ref_maps = _scores_and_maps(fp32, paths)
    assert not np.array_equal(scores, ref_scores)  # bf16 did run
    assert np.abs(scores - ref_scores).max() < RELATIVE_BOUND * np.abs(ref_scores).max()
    assert np.abs(maps - ref_maps).max() < RELATIVE_BOUND * np.abs(ref_maps).max()


def test_bf16_run_exports_its_float32_thresholds(bf16_scoring: tuple[Path, Path]) -> None:
    run, model = bf16_scoring
    extra = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["extra"]
    meta = json.loads(model.with_suffix(".json").read_text())
    assert extra[FLOAT32_KEY] != extra[EXTRA_KEY]  # two calibrations, two precisions
    assert meta["thresholds"] == extra[FLOAT32_KEY]


def test_predict_model_and_checkpoint_decide_alike_for_a_bf16_scoring_run(
    bf16_scoring: tuple[Path, Path], tiny_category: Path, tmp_path: Path
) -> None:
    run, model = bf16_scoring
    ref, got = predict_both(run, model, tiny_category, tmp_path)
    assert len(ref) == 6 and ref.keys() == got.keys()
    scale = max(abs(float(row["score"])) for row in ref.values())
    bound = RELATIVE_BOUND * scale
    extra = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["extra"]
    limits = (extra[EXTRA_KEY]["image"], extra[FLOAT32_KEY]["image"])  # bf16, float32
    assert abs(limits[0] - limits[1]) < bound  # the two calibrations differ as the scores do
    clear = 0
    for name, row in ref.items():
        assert row["anomalous"] in ("True", "False") and got[name]["anomalous"] in ("True", "False")
        score = float(row["score"])
        assert abs(float(got[name]["score"]) - score) < bound
        # bf16 moves a score by up to `bound`: only a score that far from both thresholds
        # must get one decision from both precisions (how close ones fall differs by CPU)
        if min(abs(score - limit) for limit in limits) > 2 * bound:
            assert got[name]["anomalous"] == row["anomalous"], name
            clear += 1
    assert clear >= 2, "too few scores clear of the thresholds to compare decisions"


def test_float32_thresholds_of_a_bf16_run_are_those_a_float32_run_chooses(
    tiny_config: Config, tiny_category: Path
) -> None:
    torch.manual_seed(0)
    model = build_unet(tiny_config.model)
    images = load_images(read_category(tiny_category, "mvtec").test, TINY_SIZE)
    off = stored_calibration(model, images, tiny_config, CPU)
    on = stored_calibration(model, images, tiny_config.merged({"scoring": {"bf16": True}}), CPU)
    assert set(off) == {EXTRA_KEY} and set(on) == {EXTRA_KEY, FLOAT32_KEY}
    assert on[FLOAT32_KEY] == off[EXTRA_KEY]
    assert on[EXTRA_KEY] != off[EXTRA_KEY]


def test_scoring_is_exactly_float32_by_default(tiny_run: TinyRun, tmp_path: Path) -> None:
    detector = Detector.load(tiny_run.run, device="cpu")
    assert not detector.cfg.scoring.bf16
    images = load_images(read_category(tiny_run.data, "mvtec").test, TINY_SIZE).images
    with torch.inference_mode():
        x = images.float().div(255.0).contiguous(memory_format=torch.channels_last)
        reference = detector.scorer(x)  # no autocast anywhere
    out = detector.run(images, batch_size=len(images))
    assert np.array_equal(out.scores, reference.score.numpy())
    payload = torch.load(tiny_run.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert FLOAT32_KEY not in payload["extra"] and EXTRA_KEY in payload["extra"]
    model = export_model(tiny_run.run, tmp_path / "model.onnx")
    assert (
        json.loads(model.with_suffix(".json").read_text())["thresholds"]
        == payload["extra"][EXTRA_KEY]
    )
