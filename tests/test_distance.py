"""model.distance "squared": the mean squared difference over channels replaces 1 - cos in the
distillation loss, the anomaly map and the deviation score's stage scores."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import CommandRun, assert_onnx_agrees, random_command_run

from siamese_ad.config import Config, ConfigError
from siamese_ad.evaluation.inference import Detector
from siamese_ad.losses import cosine_distance, distillation_loss, squared_distance, stage_scores
from siamese_ad.models.unet import build_unet
from siamese_ad.scoring import stage_distances

FLAGS = ["--model.distance", "squared", "--model.feature_norm", "channel", "--device", "cpu"]


def _pair(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, 4, 6, 6), (2, 8, 3, 3)]
    teacher = [torch.randn(s, generator=g) for s in shapes]
    return teacher, [torch.randn(s, generator=g) for s in shapes]


def test_squared_distance_is_the_mean_squared_difference_over_channels() -> None:
    teacher, student = _pair()
    got = squared_distance(teacher[0], student[0])
    want = ((teacher[0] - student[0]) ** 2).sum(dim=1) / teacher[0].shape[1]
    torch.testing.assert_close(got, want)
    assert got.shape == (2, 6, 6)


def test_the_squared_loss_is_the_stages_mean_squared_error() -> None:
    teacher, student = _pair()
    want = sum(torch.mean((t - s) ** 2) for t, s in zip(teacher, student, strict=True)) / 2
    torch.testing.assert_close(distillation_loss(teacher, student, "squared"), want)
    assert not torch.allclose(distillation_loss(teacher, student, "flatten"), want)


def test_stage_scores_follow_the_distance() -> None:
    teacher, student = _pair()
    squared = stage_scores(teacher, student, 0.5, "squared")
    cosine = stage_scores(teacher, student, 0.5)
    for i, (t, s) in enumerate(zip(teacher, student, strict=True)):
        for scores, measure in ((squared, squared_distance), (cosine, cosine_distance)):
            flat = measure(t, s).flatten(1)
            k = math.ceil(flat.shape[1] / 2)  # topk_mean rounds the share up
            torch.testing.assert_close(scores[:, i], flat.topk(k, dim=1).values.mean(dim=1))


def test_a_squared_model_maps_by_the_squared_distance(tiny_config: Config) -> None:
    tiny_config.model.distance = "squared"
    model = build_unet(tiny_config.validate().model).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pair = model(images)
    assert pair.distance == "squared" and pair.loss_reduction("flatten") == "squared"
    for got, t, s in zip(stage_distances(pair), pair.teacher, pair.student, strict=True):
        torch.testing.assert_close(got, squared_distance(t.float(), s.float()))


def test_distance_is_checked(tiny_config: Config) -> None:
    tiny_config.model.distance = "l1"
    with pytest.raises(ConfigError, match=r"model\.distance"):
        tiny_config.validate()


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> CommandRun:
    tmp = tmp_path_factory.mktemp("distance")
    return random_command_run(tmp, tiny_category, make_config(tiny_category), FLAGS, seed=1)


def test_a_squared_run_trains_scores_and_exports_alike(run: CommandRun) -> None:
    detector = Detector.load(run.model, "cpu")
    assert detector.cfg.model.distance == "squared"
    assert detector.scorer.model.distance == "squared"
    assert_onnx_agrees(run)
