"""Feature jitter (train.feature_jitter): noise on the student's input, never on its target."""

from __future__ import annotations

import pytest
import torch

from siamese_ad.config import Config, ConfigError, ModelConfig
from siamese_ad.models.unet import build_unet
from siamese_ad.training.stage1 import jitter_features


def _features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(4, c, s, s, generator=g) * (1 + k) for k, (c, s) in enumerate(((8, 8), (16, 4)))
    ]


def test_noise_std_is_the_scale_times_each_images_feature_rms() -> None:
    features = _features()
    jittered = jitter_features(features, 0.5, torch.Generator().manual_seed(1))
    for f, j in zip(features, jittered, strict=True):
        assert j.shape == f.shape and j.dtype == f.dtype
        rms = f.pow(2).mean(dim=(1, 2, 3)).sqrt()
        noise_std = (j - f).flatten(1).std(dim=1)
        assert torch.allclose(noise_std / rms, torch.full_like(rms, 0.5), rtol=0.15)


def test_same_generator_state_gives_the_same_noise() -> None:
    features = _features()
    a = jitter_features(features, 1.0, torch.Generator().manual_seed(3))
    b = jitter_features(features, 1.0, torch.Generator().manual_seed(3))
    c = jitter_features(features, 1.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_student_reads_the_jittered_input_and_the_target_stays_clean() -> None:
    torch.manual_seed(0)
    model = build_unet(
        ModelConfig(backbone="resnet18", weights="none", cpam=False, decoder_blocks=1)
    ).eval()
    images = torch.rand(2, 3, 64, 64)
    teacher = model.teacher_features(images)
    jittered = jitter_features(teacher, 0.5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = model(images, teacher)
        noisy = model(images, teacher, jittered)
        again = model(images, teacher, teacher)
    assert all(t is u for t, u in zip(noisy.teacher, teacher, strict=True))
    assert not torch.allclose(noisy.student[0], clean.student[0])
    assert all(torch.equal(a, b) for a, b in zip(again.student, clean.student, strict=True))


def test_config_rejects_negative_jitter_and_the_aligned_form() -> None:
    with pytest.raises(ConfigError, match=r"train\.feature_jitter"):
        Config().merged({"train": {"feature_jitter": -0.1}})
    with pytest.raises(ConfigError, match=r"contrastive\.form triplet"):
        Config().merged(
            {"train": {"feature_jitter": 0.5}, "contrastive": {"enabled": True, "form": "aligned"}}
        )
    ok = Config().merged({"train": {"feature_jitter": 0.5}, "contrastive": {"enabled": False}})
    assert ok.train.feature_jitter == 0.5
