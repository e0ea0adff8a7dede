"""model.feature_norm "channel": the teacher's feature channels standardised with their mean and std
over the training normals, fitted by train before the first epoch, saved and exported; and
train.raw_distill, the loss on the de-normalised features."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import CommandRun, assert_onnx_agrees, random_command_run

from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.config import Config, ConfigError
from siamese_ad.data.dataset import read_category
from siamese_ad.data.images import load_image
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.losses import distillation_loss
from siamese_ad.models.unet import FEATURE_STD_FLOOR, build_unet
from siamese_ad.training.loop import OptimizerStep

FLAGS = ["--model.feature_norm", "channel", "--no-contrastive", "--device", "cpu"]


def _model(cfg: Config, feature_norm: str) -> torch.nn.Module:
    cfg.model.feature_norm = feature_norm
    torch.manual_seed(0)
    return build_unet(cfg.validate().model).eval()


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g)


def test_fitted_statistics_standardise_the_teacher_features_of_the_fitted_images(
    tiny_config: Config,
) -> None:
    model = _model(tiny_config, "channel")
    images = _images()
    model.fit_feature_norm(images.split(4))  # two batches: the moments add up across them
    raw = model.teacher(images)
    for t, r, (mean, _std) in zip(
        model.teacher_features(images), raw, model.feature_statistics(), strict=True
    ):
        torch.testing.assert_close(mean, r.double().mean((0, 2, 3)).float(), rtol=1e-4, atol=1e-5)
        assert t.mean((0, 2, 3)).abs().max() < 1e-3
        spread = r.double().std((0, 2, 3), unbiased=False)
        kept = spread > FEATURE_STD_FLOOR * spread.mean() * 1.01  # channels not at the floor
        assert kept.any()
        got = t.double().std((0, 2, 3), unbiased=False)[kept]
        torch.testing.assert_close(got, torch.ones_like(got), rtol=1e-3, atol=1e-3)


def test_centre_takes_off_the_mean_and_keeps_each_channels_scale(tiny_config: Config) -> None:
    model = _model(tiny_config, "centre")
    images = _images()
    model.fit_feature_norm([images])
    raw, stats = model.teacher(images), model.feature_statistics()
    for t, r, (mean, std) in zip(model.teacher_features(images), raw, stats, strict=True):
        assert torch.equal(std, torch.ones_like(std)) and mean.abs().max() > 0
        torch.testing.assert_close(t, r - mean.view(1, -1, 1, 1), rtol=1e-5, atol=1e-5)
        assert t.mean((0, 2, 3)).abs().max() < 1e-3


def test_a_constant_channel_is_divided_by_the_floor_not_by_zero(tiny_config: Config) -> None:
    model = _model(tiny_config, "channel")
    images = _images()
    real = model.teacher.forward  # the bound method, before it is replaced

    def with_a_constant_channel(x: torch.Tensor) -> list[torch.Tensor]:
        features = real(x)
        features[0][:, 0] = 3.0  # channel 0 of stage 0 never varies
        return features

    model.teacher.forward = with_a_constant_channel
    model.fit_feature_norm([images])
    mean, std = model.feature_statistics()[0]
    assert mean[0].item() == pytest.approx(3.0)
    assert std[0].item() == pytest.approx(FEATURE_STD_FLOOR * std[1:].mean().item(), rel=0.1)
    assert torch.isfinite(model.teacher_features(_images(seed=1))[0]).all()


def test_without_feature_norm_the_model_holds_no_statistics_and_returns_raw_features(
    tiny_config: Config,
) -> None:
    model = _model(tiny_config, "none")
    assert not any(k.startswith("feature_") for k in model.state_dict())
    images = _images()
    for got, want in zip(model.teacher_features(images), model.teacher(images), strict=True):
        torch.testing.assert_close(got, want)


def test_feature_norm_is_checked(tiny_config: Config) -> None:
    tiny_config.model.feature_norm = "batch"
    with pytest.raises(ConfigError, match=r"model\.feature_norm"):
        tiny_config.validate()


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> CommandRun:
    tmp = tmp_path_factory.mktemp("feature_norm")
    return random_command_run(tmp, tiny_category, make_config(tiny_category), FLAGS, seed=0)


def test_train_fits_the_statistics_on_its_training_normals(run: CommandRun) -> None:
    payload = read_checkpoint(run.model)
    stored = {k: v for k, v in payload["model"].items() if k.startswith("feature_")}
    detector = Detector.load(run.model, "cpu")
    cfg = detector.cfg
    assert cfg.model.feature_norm == "channel" and len(stored) == 6
    data = read_category(run.data, "mvtec")
    train = set(payload["manifest"]["train"])
    paths = [s.image for s in data.train if s.image.relative_to(data.root).as_posix() in train]
    images = torch.stack([load_image(p, cfg.data.size_hw, cfg.data.fit)[0] for p in paths])
    fresh = _model(cfg, "channel")
    fresh.fit_feature_norm([to_device(images, torch.device("cpu"), channels_last=False)])
    for (mean, std), (want_mean, want_std) in zip(
        detector.scorer.model.feature_statistics(), fresh.feature_statistics(), strict=True
    ):
        torch.testing.assert_close(mean, want_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(std, want_std, rtol=1e-4, atol=1e-5)
        assert not torch.equal(std, torch.ones_like(std))


def test_the_onnx_graph_standardises_as_pytorch_does(run: CommandRun) -> None:
    assert json.loads(run.onnx.with_suffix(".json").read_text())["outputs"][:2] == ["map", "score"]
    assert_onnx_agrees(run)


@pytest.mark.parametrize("feature_norm", ["channel", "centre", "none"])
def test_raw_features_undo_the_normalisation(tiny_config: Config, feature_norm: str) -> None:
    model = _model(tiny_config, feature_norm)
    images = _images()
    if feature_norm != "none":
        model.fit_feature_norm([images])
    restored = model.raw_features(model.teacher_features(images))
    for got, want in zip(restored, model.teacher(images), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_raw_distill_adds_the_loss_of_the_de_normalised_features(tiny_config: Config) -> None:
    model = _model(tiny_config, "channel")
    model.fit_feature_norm([_images()])
    teacher = model.teacher_features(_images(seed=1))
    g = torch.Generator().manual_seed(2)
    student = [(t + torch.randn(t.shape, generator=g)).requires_grad_() for t in teacher]
    raw_t, raw_s = model.raw_features(teacher), model.raw_features(student)
    plain, raw = distillation_loss(teacher, student), distillation_loss(raw_t, raw_s)
    assert raw.item() > 0 and abs(raw.item() - plain.item()) > 1e-3  # a different term

    def distill(weight: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tiny_config.train.raw_distill = weight
        step = OptimizerStep(model, None, _images(), None, tiny_config, torch.device("cpu"))
        loss = step.distill(teacher, student, "flatten")
        return loss, torch.autograd.grad(loss, student)

    off, grad_off = distill(0.0)
    on, grad_on = distill(0.5)
    torch.testing.assert_close(off, plain)
    torch.testing.assert_close(on, plain + 0.5 * raw)
    assert any((a - b).abs().max() > 0 for a, b in zip(grad_on, grad_off, strict=True))


@pytest.mark.parametrize(("feature_norm", "weight"), [("none", 1.0), ("channel", -1.0)])
def test_raw_distill_is_checked(tiny_config: Config, feature_norm: str, weight: float) -> None:
    tiny_config.model.feature_norm = feature_norm
    tiny_config.train.raw_distill = weight
    with pytest.raises(ConfigError, match=r"train\.raw_distill"):
        tiny_config.validate()
