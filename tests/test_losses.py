"""Tests for the distillation, contrastive and deviation losses against hand-computed values."""

import math

import pytest
import torch

from siamese_ad.losses import contrastive_loss, deviation_loss, distillation_loss, topk_mean


def _stages(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 4, 4, generator=gen), torch.randn(2, 8, 2, 2, generator=gen)]


def _pooled_feature(vec: list[float]) -> torch.Tensor:
    """A (1, C, 2, 2) map that is constant over positions, so pooling and flattening agree."""
    return torch.tensor(vec).view(1, -1, 1, 1).expand(1, len(vec), 2, 2).clone()


@pytest.mark.parametrize("reduction", ["flatten", "pixel"])
def test_distillation_identical_negated(reduction: str) -> None:
    feats = _stages()
    same = distillation_loss(feats, [f.clone() for f in feats], reduction)
    negated = distillation_loss(feats, [-f for f in feats], reduction)
    assert same.dim() == 0
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert negated.item() == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("reduction", ["flatten", "pixel"])
def test_distillation_orthogonal_is_one(reduction: str) -> None:
    teacher = torch.zeros(2, 2, 3, 3)
    student = torch.zeros(2, 2, 3, 3)
    teacher[:, 0] = 1.0
    student[:, 1] = 5.0
    loss = distillation_loss([teacher, teacher], [student, student], reduction)
    assert loss.item() == pytest.approx(1.0, abs=1e-6)


def test_distillation_pixel_and_flatten_differ() -> None:
    # C=2, one row of two pixels. Pixel 0: T=(10,0), S=(10,0) -> cos 1; pixel 1: T=(0,1),
    # S=(1,0) -> cos 0. "pixel": 1 - mean(1, 0) = 0.5. "flatten": T=(10,0,0,1), S=(10,1,0,0),
    # cos = 100/101, so 1 - cos = 1/101.
    teacher = torch.tensor([[[[10.0, 0.0]], [[0.0, 1.0]]]])
    student = torch.tensor([[[[10.0, 1.0]], [[0.0, 0.0]]]])
    pixel = distillation_loss([teacher], [student], "pixel")
    flatten = distillation_loss([teacher], [student], "flatten")
    assert pixel.item() == pytest.approx(0.5, abs=1e-6)
    assert flatten.item() == pytest.approx(1.0 / 101.0, abs=1e-6)


def test_distillation_averages_stages() -> None:
    feats = _stages()
    mixed = distillation_loss(feats, [feats[0].clone(), -feats[1]])
    assert mixed.item() == pytest.approx((0.0 + 2.0) / 2, abs=1e-6)


def test_distillation_gradient_reaches_student() -> None:
    teacher = _stages(0)
    student = [s.requires_grad_() for s in _stages(1)]
    distillation_loss(teacher, student).backward()
    for s in student:
        assert s.grad is not None
        assert torch.isfinite(s.grad).all()
        assert s.grad.abs().sum() > 0


def test_invalid_reduction_and_stage_counts() -> None:
    feats = _stages()
    with pytest.raises(ValueError, match="flatten, pixel"):
        distillation_loss(feats, feats, "mean")
    with pytest.raises(ValueError, match="pooled, flatten"):
        contrastive_loss(feats, feats, feats, 0.5, "pixel")
    with pytest.raises(ValueError, match="stage counts"):
        distillation_loss(feats, feats[:1])
    with pytest.raises(ValueError, match="stage counts"):
        contrastive_loss(feats, feats, feats[:1], 0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        distillation_loss(feats, feats[::-1])


@pytest.mark.parametrize("reduction", ["pooled", "flatten"])
def test_contrastive_zero_when_margin_holds(reduction: str) -> None:
    normal = _pooled_feature([1.0, 0.0])
    augmented = _pooled_feature([1.0, 0.1])  # cos ~ 0.995
    anomalous = _pooled_feature([0.0, 1.0])  # cos 0
    loss = contrastive_loss([normal] * 2, [augmented] * 2, [anomalous] * 2, 0.5, reduction)
    assert loss.item() == 0.0


@pytest.mark.parametrize("reduction", ["pooled", "flatten"])
def test_contrastive_hand_value_when_violated(reduction: str) -> None:
    normal = _pooled_feature([1.0, 0.0])
    augmented = _pooled_feature([1.0, 1.0])  # cos = 1/sqrt(2)
    anomalous = _pooled_feature([3.0, 4.0])  # cos = 3/5
    expected = 0.6 - 1.0 / math.sqrt(2.0) + 0.5
    loss = contrastive_loss([normal], [augmented], [anomalous], 0.5, reduction)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_pooled_ignores_spatial_layout_flatten_does_not() -> None:
    # The positive is the normal map with its pixels permuted (as a rotation would move them).
    gen = torch.Generator().manual_seed(3)
    normal = torch.randn(1, 3, 2, 2, generator=gen)
    augmented = normal.flip(-1).flip(-2)
    anomalous = normal.clone()  # the negative equals the normal: cos(N, A) = 1
    pooled = contrastive_loss([normal], [augmented], [anomalous], 0.0, "pooled")
    flatten = contrastive_loss([normal], [augmented], [anomalous], 0.0, "flatten")
    assert pooled.item() == pytest.approx(0.0, abs=1e-6)
    flat_cos = torch.nn.functional.cosine_similarity(normal.flatten(), augmented.flatten(), dim=0)
    assert flatten.item() == pytest.approx(1.0 - flat_cos.item(), abs=1e-6)
    assert flatten.item() > 1e-3


def test_contrastive_batch_mean_and_gradients() -> None:
    normal = torch.cat([_pooled_feature([1.0, 0.0]), _pooled_feature([1.0, 0.0])])
    augmented = torch.cat([_pooled_feature([1.0, 0.0]), _pooled_feature([1.0, 1.0])])
    anomalous = torch.cat([_pooled_feature([0.0, 1.0]), _pooled_feature([1.0, 0.0])])
    anomalous.requires_grad_()
    # Image 0: 0 - 1 + 0.5 < 0 -> 0; image 1: 1 - 1/sqrt(2) + 0.5.
    loss = contrastive_loss([normal], [augmented], [anomalous], 0.5)
    assert loss.item() == pytest.approx((1.5 - 1.0 / math.sqrt(2.0)) / 2, abs=1e-6)
    anomalous_off = anomalous.detach().clone()
    anomalous_off[1] = _pooled_feature([1.0, 0.5])[0]
    anomalous_off.requires_grad_()
    contrastive_loss([normal], [augmented], [anomalous_off], 0.5).backward()
    grad = anomalous_off.grad
    assert torch.isfinite(grad).all()
    assert grad[0].abs().sum() == 0  # margin holds for image 0: no gradient
    assert grad[1].abs().sum() > 0


def test_topk_mean_hand_tensor() -> None:
    maps = torch.tensor(
        [
            [[1.0, 9.0], [3.0, 5.0]],
            [[-1.0, -2.0], [-3.0, -4.0]],
        ]
    )
    assert torch.allclose(topk_mean(maps, 0.5), torch.tensor([7.0, -1.5]))
    assert torch.allclose(topk_mean(maps, 0.01), torch.tensor([9.0, -1.0]))  # at least 1
    assert torch.allclose(topk_mean(maps, 1.0), torch.tensor([4.5, -2.5]))
    assert torch.allclose(topk_mean(maps, 0.3), torch.tensor([7.0, -1.5]))  # ceil(1.2) = 2


def test_topk_mean_exact_fraction_not_rounded_up() -> None:
    maps = torch.arange(100.0).view(1, 10, 10)
    # 0.07 * 100 is 7.000000000000001 in floating point; k must be 7, not 8.
    assert topk_mean(maps, 0.07).item() == pytest.approx(sum(range(93, 100)) / 7)
    with pytest.raises(ValueError, match="fraction"):
        topk_mean(maps, 0.0)


def test_deviation_loss_hand_values() -> None:
    scores = torch.tensor([[1.0, -2.0], [0.5, 0.0], [6.0, 3.0], [-1.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Normals: |S| -> 1, 2, 0.5, 0. Anomalous (p=5): max(0, 5-S) -> 0, 2, 6, 0.
    expected = (1 + 2 + 0.5 + 0 + 0 + 2 + 6 + 0) / 8
    assert deviation_loss(scores, labels, 5.0).item() == pytest.approx(expected)
    normal_only = deviation_loss(scores[:2], labels[:2], 5.0)
    assert normal_only.item() == pytest.approx(scores[:2].abs().mean().item())
    anomalous_only = deviation_loss(scores[2:], labels[2:], 5.0)
    assert anomalous_only.item() == pytest.approx((0 + 2 + 6 + 0) / 4)


def test_deviation_loss_gradients_and_shapes() -> None:
    scores = torch.tensor([[2.0, -3.0], [1.0, 7.0]], requires_grad=True)
    labels = torch.tensor([0.0, 1.0])
    deviation_loss(scores, labels, 5.0).backward()
    # d/dS of mean over 4 entries: normal -> sign(S)/4; anomalous -> -1/4 if S < p else 0.
    assert torch.allclose(scores.grad, torch.tensor([[0.25, -0.25], [-0.25, 0.0]]))
    with pytest.raises(ValueError, match="labels"):
        deviation_loss(scores.detach(), torch.zeros(3), 5.0)
    with pytest.raises(ValueError, match="stage_scores"):
        deviation_loss(torch.zeros(4), torch.zeros(4), 5.0)
