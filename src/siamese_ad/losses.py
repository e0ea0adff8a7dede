"""The method's losses: distillation (eq. 1), contrastive (eq. 6) and deviation (eq. 8).

Pure functions. Features come as sequences with one tensor per stage, each (B, C_i, H_i, W_i),
teacher = encoder features and student = decoder features, in the same stage order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Absorbs float error in fraction * count (0.07 * 100 = 7.000000000000001) before the ceiling.
_CEIL_TOLERANCE = 1e-9


def _flatten(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C*H*W)."""
    return x.flatten(1)


def _pool(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C), the global average over positions."""
    return x.flatten(2).mean(dim=-1)


def _image_cosine_flatten(a: Tensor, b: Tensor) -> Tensor:
    """(B, C, H, W) pair -> (B,), cosine of each image's flattened stage map."""
    return F.cosine_similarity(_flatten(a), _flatten(b), dim=1)


def _image_cosine_pixel(a: Tensor, b: Tensor) -> Tensor:
    """(B, C, H, W) pair -> (B,), cosine along channels at each pixel, averaged over pixels."""
    return F.cosine_similarity(a, b, dim=1).flatten(1).mean(dim=1)


def _image_cosine_pooled(a: Tensor, b: Tensor) -> Tensor:
    """(B, C, H, W) pair -> (B,), cosine of the globally average-pooled (B, C) features."""
    return F.cosine_similarity(_pool(a), _pool(b), dim=1)


_Cosine = Callable[[Tensor, Tensor], Tensor]
_DISTILL_COSINES: dict[str, _Cosine] = {
    "flatten": _image_cosine_flatten,
    "pixel": _image_cosine_pixel,
}
_CONTRAST_COSINES: dict[str, _Cosine] = {
    "pooled": _image_cosine_pooled,
    "flatten": _image_cosine_flatten,
}


def _pick(table: dict[str, _Cosine], reduction: str, loss: str) -> _Cosine:
    """Returns the image-cosine function named by reduction, or a ValueError listing the names."""
    if reduction not in table:
        raise ValueError(
            f"{loss}: unknown reduction {reduction!r}; choose one of {', '.join(table)}"
        )
    return table[reduction]


def _check_stages(loss: str, **groups: Sequence[Tensor]) -> int:
    """Checks that every group has the same, non-zero number of stages and matching shapes."""
    counts = {name: len(group) for name, group in groups.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{loss}: stage counts differ: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise ValueError(f"{loss}: no stages given")
    for i in range(n):
        # int(): while tracing for ONNX export the sizes are 0-d tensors, hashed by identity
        shapes = {name: tuple(int(d) for d in group[i].shape) for name, group in groups.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{loss}: stage {i} shapes differ: {shapes}")
    return n


def distillation_loss(
    teacher: Sequence[Tensor], student: Sequence[Tensor], reduction: str = "flatten"
) -> Tensor:
    """Eq. 1: (1/n) sum_i mean_b (1 - cos(T_i, S_i)).

    Args:
        teacher: n encoder feature maps, each (B, C_i, H_i, W_i).
        student: n decoder feature maps with the same shapes.
        reduction: "flatten" (cosine of each image's flattened stage map, as the RD code),
            "pixel" (cosine along channels per pixel, averaged over pixels) or "squared" (the
            mean squared difference, for model.distance "squared"; then not bounded by 2).

    Returns:
        Scalar loss, in [0, 2] for the cosines.
    """
    n = _check_stages("distillation_loss", teacher=teacher, student=student)
    if reduction == "squared":  # model.distance "squared": the mean squared difference instead
        pairs = zip(teacher, student, strict=True)
        terms = [squared_distance(t.float(), s.float()).mean() for t, s in pairs]
        return torch.stack(terms).sum() / n
    cosine = _pick(_DISTILL_COSINES, reduction, "distillation_loss")
    terms = [(1.0 - cosine(t, s)).mean() for t, s in zip(teacher, student, strict=True)]
    return torch.stack(terms).sum() / n


def contrastive_loss(
    normal: Sequence[Tensor],
    augmented: Sequence[Tensor],
    anomalous: Sequence[Tensor],
    margin: float,
    reduction: str = "pooled",
) -> Tensor:
    """Eq. 6: (1/n) sum_i mean_b max(cos(N_i, A_i) - cos(N_i, N_aug_i) + margin, 0).

    Args:
        normal: n decoder feature maps of the normal images, each (B, C_i, H_i, W_i).
        augmented: the same for the rotated normal images (positives).
        anomalous: the same for the anomalous images (negatives).
        margin: how much lower the negative cosine must be than the positive one.
        reduction: "pooled" (cosine of globally average-pooled (B, C_i) features, robust to the
            pixel misalignment a rotation causes) or "flatten" (of each image's flattened map).

    Returns:
        Scalar loss >= 0.
    """
    cosine = _pick(_CONTRAST_COSINES, reduction, "contrastive_loss")
    n = _check_stages("contrastive_loss", normal=normal, augmented=augmented, anomalous=anomalous)
    terms = [
        F.relu(cosine(nor, ano) - cosine(nor, aug) + margin).mean()
        for nor, aug, ano in zip(normal, augmented, anomalous, strict=True)
    ]
    return torch.stack(terms).sum() / n


def topk_mean(maps: Tensor, fraction: float) -> Tensor:
    """Mean of the largest ceil(fraction * H * W) values of each map (at least one value).

    Args:
        maps: (B, H, W) anomaly maps (any (B, ...) shape works; all but dim 0 are pooled).
        fraction: share of the values to average, in (0, 1].

    Returns:
        (B,) top-k means.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"topk_mean: fraction={fraction} must be in (0, 1]")
    if maps.dim() < 2:
        raise ValueError(f"topk_mean: maps must be (B, H, W), got shape {tuple(maps.shape)}")
    values = maps.flatten(1)
    k = max(1, math.ceil(fraction * values.shape[1] - _CEIL_TOLERANCE))
    return values.topk(k, dim=1).values.mean(dim=1)


def cosine_distance(teacher: Tensor, student: Tensor) -> Tensor:
    """Per-pixel 1 - cos along channels: (B, C, H, W) pair -> (B, H, W), the stage anomaly map."""
    return 1.0 - F.cosine_similarity(teacher, student, dim=1)


def squared_distance(teacher: Tensor, student: Tensor) -> Tensor:
    """Per-pixel mean squared difference along channels: (B, C, H, W) pair -> (B, H, W), the
    stage anomaly map under model.distance "squared"."""
    return (teacher - student).pow(2).mean(dim=1)


DISTANCES = {"cosine": cosine_distance, "squared": squared_distance}  # model.distance


def stage_scores(
    teacher: Sequence[Tensor], student: Sequence[Tensor], fraction: float, distance: str = "cosine"
) -> Tensor:
    """The raw per-stage scalar s_i of eq. 8: top-k mean of each stage's distance map (1 - cos,
    or the squared difference under model.distance "squared").

    Returns:
        (B, n) scores, computed in float32.
    """
    _check_stages("stage_scores", teacher=teacher, student=student)
    return torch.stack(
        [
            topk_mean(DISTANCES[distance](t.float(), s.float()), fraction)
            for t, s in zip(teacher, student, strict=True)
        ],
        dim=1,
    )


def deviation_loss(stage_scores: Tensor, labels: Tensor, target: float) -> Tensor:
    """Eq. 8: (1/n) sum_i mean_b [(1 - y) |S_i| + y max(0, p - S_i)].

    Normal images are pulled to a score of 0, anomalous ones pushed to at least the target p.

    Args:
        stage_scores: (B, n) standardised per-stage scores S_i.
        labels: (B,) image labels, 0 normal and 1 anomalous.
        target: p, the score anomalous images must reach.

    Returns:
        Scalar loss >= 0.
    """
    if stage_scores.dim() != 2:
        raise ValueError(
            f"deviation_loss: stage_scores must be (B, n), got {tuple(stage_scores.shape)}"
        )
    if labels.shape != stage_scores.shape[:1]:
        raise ValueError(
            f"deviation_loss: labels must be ({stage_scores.shape[0]},), got {tuple(labels.shape)}"
        )
    y = labels.to(stage_scores.dtype).unsqueeze(1)
    normal_term = (1.0 - y) * stage_scores.abs()
    anomalous_term = y * F.relu(target - stage_scores)
    return (normal_term + anomalous_term).mean()
