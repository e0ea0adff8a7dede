"""Scoring: the Gaussian blur against scipy, the anomaly map (eq. 2) and the image-score choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from siamese_ad.config import ConfigError, ModelConfig, ScoringConfig
from siamese_ad.models.unet import FeaturePair, build_unet
from siamese_ad.scoring import AnomalyScorer, GaussianBlur, anomaly_map, gaussian_kernel1d


@pytest.mark.parametrize("shape", [(48, 40), (64, 64), (10, 7)])
@pytest.mark.parametrize("sigma", [4.0, 1.5])
def test_blur_matches_scipy_reflect(shape: tuple[int, int], sigma: float) -> None:
    maps = np.random.default_rng(0).random((2, *shape))
    ours = GaussianBlur(sigma)(torch.from_numpy(maps).float()).numpy()
    for i in range(2):
        ref = ndimage.gaussian_filter(maps[i], sigma=sigma, mode="reflect", truncate=4.0)
        assert np.abs(ours[i] - ref).max() < 1e-5


def test_kernel_radius_follows_scipy() -> None:
    for sigma in (0.6, 1.0, 2.3, 4.0):
        radius = int(4.0 * sigma + 0.5)  # scipy's gaussian_filter1d with truncate=4.0
        kernel = gaussian_kernel1d(sigma)
        assert kernel.numel() == 2 * radius + 1
        assert torch.isclose(kernel.sum(), torch.tensor(1.0))
        assert torch.equal(kernel, kernel.flip(0))


def test_zero_sigma_is_no_blur() -> None:
    maps = torch.rand(1, 8, 8)
    assert torch.equal(GaussianBlur(0.0)(maps), maps)


def _pair(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> FeaturePair:
    return FeaturePair(teacher=teacher, student=student)


def _features(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=gen) for c, s in ((8, 16), (16, 8), (32, 4))]


def test_identical_features_give_a_zero_map() -> None:
    features = _features()
    amap = anomaly_map(_pair(features, [f.clone() for f in features]), (64, 64), GaussianBlur(4.0))
    assert amap.shape == (2, 64, 64)
    assert amap.abs().max() < 1e-5


def test_map_peaks_where_the_features_differ() -> None:
    teacher = _features()
    student = [t.clone() for t in teacher]
    student[1][0, :, 5, 2] = -teacher[1][0, :, 5, 2]  # image 0, one cell of the 8x8 stage
    amap = anomaly_map(_pair(teacher, student), (64, 64), GaussianBlur(4.0))
    row, col = divmod(int(amap[0].argmax()), 64)
    assert 40 <= row < 48 and 16 <= col < 24  # the cell covers rows 40-47, columns 16-23
    assert float(amap[0].max()) > 0.1
    assert float(amap[1].abs().max()) < 1e-5  # the other image is untouched


def test_map_sums_the_stages() -> None:
    teacher = _features()
    flipped = [-t for t in teacher]  # 1 - cos = 2 at every pixel of every stage
    amap = anomaly_map(_pair(teacher, flipped), (32, 32), GaussianBlur(0.0))
    assert torch.allclose(amap, torch.full_like(amap, 6.0), atol=1e-5)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(ModelConfig(backbone="resnet18", weights="none", cpam=False)).eval()


def _scorer(model: torch.nn.Module, image_score: str) -> AnomalyScorer:
    return AnomalyScorer(model, ScoringConfig(image_score=image_score), topk=0.01).eval()


@torch.inference_mode()
def test_image_score_before_and_after_deviation_statistics(model: torch.nn.Module) -> None:
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.deviation_ready.fill_(False)
    auto = _scorer(model, "auto")(images)
    assert auto.map.shape == (3, 32, 32)
    assert torch.equal(auto.score_max, auto.map.flatten(1).amax(1))
    assert torch.equal(auto.score, auto.score_max) and auto.score_deviation is None
    with pytest.raises(ConfigError, match="deviation"):
        _scorer(model, "deviation")(images)

    model.stage_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
    model.stage_std.copy_(torch.tensor([0.5, 1.0, 2.0]))
    model.deviation_ready.fill_(True)
    try:
        auto = _scorer(model, "auto")(images)
        maxed = _scorer(model, "max")(images)
        deviation = _scorer(model, "deviation")(images)
    finally:
        model.deviation_ready.fill_(False)
    assert auto.score_deviation is not None
    assert torch.equal(auto.score, auto.score_deviation)
    assert torch.equal(deviation.score, auto.score_deviation)
    assert torch.equal(maxed.score, maxed.score_max)
    assert torch.equal(maxed.score_deviation, auto.score_deviation)
    # deviation = mean over stages of (s_i - mu_i) / sigma_i, s_i the top-1 % mean of stage i
    pair = model(images)
    raw = torch.stack(
        [
            (1 - torch.cosine_similarity(t, s, dim=1)).flatten(1).topk(k, dim=1).values.mean(1)
            for t, s, k in zip(pair.teacher, pair.student, (1, 1, 1), strict=True)
        ],
        dim=1,
    )
    expected = ((raw - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor([0.5, 1.0, 2.0])).mean(1)
    assert torch.allclose(auto.score_deviation, expected, atol=1e-5)


def test_anomaly_map_stays_float32_under_bf16_autocast() -> None:
    """The map must not be blurred in bf16 (8-bit mantissa: ties that cost AUROC)."""
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 8, 8, 8, generator=gen), torch.randn(2, 16, 4, 4, generator=gen)]
    student = [t + 0.3 * torch.randn(t.shape, generator=gen) for t in teacher]
    pair = FeaturePair(teacher, student)
    blur = GaussianBlur(4.0)
    reference = anomaly_map(pair, (32, 32), blur)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amap = anomaly_map(pair, (32, 32), blur)
    assert amap.dtype == torch.float32
    torch.testing.assert_close(amap, reference, rtol=0, atol=1e-6)
    assert len(torch.unique(amap)) > 0.9 * amap.numel()
