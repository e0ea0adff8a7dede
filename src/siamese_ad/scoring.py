"""Anomaly maps (eq. 2) and image scores: max of the map, and the deviation score of stage 2."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese_ad.config import ConfigError, ScoringConfig
from siamese_ad.data.fit import unpad
from siamese_ad.device import capturing_graph
from siamese_ad.losses import DISTANCES, topk_mean
from siamese_ad.models.unet import FeaturePair, TeacherStudentUNet


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """A normalised 1-D Gaussian of radius round(truncate * sigma), as scipy's gaussian_filter."""
    radius = max(int(truncate * sigma + 0.5), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _symmetric_index(n: int, r: int, device: torch.device) -> Tensor:
    """Indices that pad a length-n axis by r on each side as scipy's mode="reflect" does.

    scipy's "reflect" repeats the edge sample (d c b a | a b c d | d c b a), unlike torch's
    "reflect" pad (scipy's "mirror"); the pattern repeats with period 2n, so any r works.
    """
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def blur_matrix(kernel: Tensor, n: int) -> Tensor:
    """(n, n) matrix B: B @ x is the 1-D blur of a length-n signal x, reflect padding included."""
    r = kernel.numel() // 2
    index = torch.arange(n, device=kernel.device)
    taps = index.unsqueeze(1) + torch.arange(2 * r + 1, device=kernel.device)  # (n, 2r + 1)
    source = _symmetric_index(n, r, kernel.device)[taps]  # the sample each tap reads
    hits = source.unsqueeze(-1) == index  # (n, 2r + 1, n)
    return (hits.to(kernel.dtype) * kernel.view(1, -1, 1)).sum(dim=1)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur (B, H, W) -> (B, H, W), as gaussian_filter(mode="reflect").

    Each axis is one matrix product with a banded (n, n) matrix (`blur_matrix`), cached per size
    and device: on a CPU several times faster than a one-channel convolution.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.enabled = sigma > 0
        self.register_buffer("kernel", gaussian_kernel1d(sigma) if self.enabled else torch.ones(1))
        self._matrices: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}

    def _matrix(self, n: int) -> Tensor:
        if torch.compiler.is_compiling():  # frozen weights fold it; a cache would recompile
            return blur_matrix(self.kernel, n)
        key = (n, self.kernel.device, self.kernel.dtype)
        if key not in self._matrices:
            self._matrices[key] = blur_matrix(self.kernel, n)
        return self._matrices[key]

    def forward(self, maps: Tensor) -> Tensor:
        if not self.enabled:
            return maps
        height, width = maps.shape[-2:]
        return self._matrix(height) @ maps @ self._matrix(width).T


def stage_distances(pair: FeaturePair) -> list[Tensor]:
    """Per-pixel 1 - cos of each stage, in float32 (also under autocast): [(B, H_i, W_i)].

    The anomaly map (eq. 2) and the deviation score's top-k means (eq. 8) both read these.
    """
    with torch.autocast(device_type=pair.teacher[0].device.type, enabled=False):
        return [
            _distance_float(t, s, pair.distance)
            for t, s in zip(pair.teacher, pair.student, strict=True)
        ]


def _distance_float(teacher: Tensor, student: Tensor, distance: str) -> Tensor:
    """model.distance's per-pixel distance in float32: (B, C, H, W) pair -> (B, H, W).

    Eagerly on a CPU it goes image by image: the float32 temporaries of one image stay in the
    cache and the allocator's reuse, and the batch runs about ten times faster than in one piece
    (WRN50-2, batch 16). Traced or compiled graphs take the batch whole (the batch stays dynamic).
    """
    measure = DISTANCES[distance]
    if teacher.device.type != "cpu" or capturing_graph() or len(teacher) == 1:
        return measure(teacher.float(), student.float())
    pairs = zip(teacher.split(1), student.split(1), strict=True)
    return torch.cat([measure(t.float(), s.float()) for t, s in pairs])


def combine_stages(
    distances: list[Tensor],
    size: tuple[int, int],
    blur: GaussianBlur,
    scale: Tensor | None = None,
) -> Tensor:
    """Sum of the stage maps upsampled bilinearly to `size`, then blurred: -> (B, H, W).

    `scale` (n,), when given, divides stage i's map by scale[i] before the sum (scoring.map_norm
    "mean": the stage's mean over normal images, so that every stage counts alike).
    """
    with torch.autocast(device_type=distances[0].device.type, enabled=False):
        total = None
        for i, dist in enumerate(distances):
            if scale is not None:  # before upsampling: the same (interpolation is linear), cheaper
                dist = dist / scale[i]
            up = F.interpolate(dist.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
            total = up if total is None else total + up
        return blur(total.squeeze(1))


def anomaly_map(pair: FeaturePair, size: tuple[int, int], blur: GaussianBlur) -> Tensor:
    """Eq. 2: sum over stages of upsampled per-pixel (1 - cos), then blurred. -> (B, H, W).

    Always float32, also under bf16 autocast: a bf16 map has 8 bits of mantissa, which turns
    close scores into ties and costs AUROC.
    """
    return combine_stages(stage_distances(pair), size, blur)


@dataclass
class AnomalyOutput:
    """What the detector says about a batch.

    Attributes:
        map: (B, H, W) anomaly map at the input size.
        score: (B,) the configured image score.
        score_max: (B,) max of the map.
        score_deviation: (B,) mean standardised stage score, or None before stage 2.
    """

    map: Tensor
    score: Tensor
    score_max: Tensor
    score_deviation: Tensor | None

    def unpadded(self, originals: Sequence[Sequence[int]], max_score: bool) -> AnomalyOutput:
        """Under data.fit "pad": each map cropped to its image's part of the letterboxed input
        and resized back (data/fit.py), the max of the map taken there, and the configured score
        with it when that score is the max (`max_score`).

        Args:
            originals: (B, 2) each image's original (height, width).
            max_score: whether the configured score is the max of the map.
        """
        parts = zip(self.map.float().cpu().numpy(), originals, strict=True)
        unpadded = np.stack([unpad(m, (int(h), int(w))) for m, (h, w) in parts])
        maps = torch.from_numpy(unpadded).to(self.map.device)
        score_max = maps.flatten(1).amax(dim=1).to(self.score_max.dtype)
        return AnomalyOutput(
            maps, score_max if max_score else self.score, score_max, self.score_deviation
        )


def deviation_score(distances: list[Tensor], model: TeacherStudentUNet, topk: float) -> Tensor:
    """Eq. 8's image score: each stage's top-k mean standardised by the model's normal
    statistics (set by stage 2), averaged over stages. [(B, H_i, W_i)] -> (B,)."""
    raw = torch.stack([topk_mean(d, topk) for d in distances], dim=1)
    return ((raw - model.stage_mean) / model.stage_std).mean(dim=1)


IMAGE_SCORE_KEY = "image_score"  # payload["extra"] entry: the score train chose for "auto"


def choose_image_score(val_auroc_max: float, val_auroc_deviation: float) -> str:
    """The image score "auto" resolves to after stage 2: the deviation score, unless the max of
    the map separates the validation set (normals + synthetic anomalies) strictly better."""
    return "max" if val_auroc_max > val_auroc_deviation else "deviation"


def trained_scoring(cfg: ScoringConfig, extra: Mapping[str, Any] | None) -> ScoringConfig:
    """`cfg` with "auto" replaced by the image score train chose (extra[IMAGE_SCORE_KEY]), for
    a model whose checkpoint holds that choice; otherwise `cfg` itself."""
    choice = (extra or {}).get(IMAGE_SCORE_KEY)
    if cfg.image_score != "auto" or choice not in ("max", "deviation"):
        return cfg
    return dataclasses.replace(cfg, image_score=choice)


class AnomalyScorer(nn.Module):
    """Images -> anomaly maps and image scores, in one module (also the exported graph).

    Args:
        model: the trained U-Net (its deviation statistics included). Whether stage 2 has set
            them is read once, here: build the scorer after training.
        cfg: scoring settings.
        topk: fraction of pixels whose mean is each stage's scalar (deviation score).
    """

    def __init__(self, model: TeacherStudentUNet, cfg: ScoringConfig, topk: float) -> None:
        super().__init__()
        self.model = model
        self.blur = GaussianBlur(cfg.sigma)
        self.topk = topk
        self.image_score = cfg.image_score
        self.deviation_ready = bool(model.deviation_ready)
        self.map_norm = cfg.map_norm

    def map_scale(self) -> Tensor | None:
        """The per-stage divisors of the map: the model's stage_map_mean under map_norm "mean"."""
        return self.model.stage_map_mean if self.map_norm == "mean" else None

    def uses_deviation(self) -> bool:
        if self.image_score == "auto":
            return self.deviation_ready
        return self.image_score == "deviation"

    def forward(self, images: Tensor) -> AnomalyOutput:
        """(B, 3, H, W) in [0, 1] -> AnomalyOutput."""
        distances = stage_distances(self.model(images))
        amap = combine_stages(distances, images.shape[-2:], self.blur, self.map_scale())
        score_max = amap.flatten(1).amax(dim=1)
        deviation = None
        if self.deviation_ready:
            deviation = deviation_score(distances, self.model, self.topk)
        if self.uses_deviation():
            if deviation is None:
                raise ConfigError(
                    "scoring.image_score=deviation needs a model fine-tuned by stage 2; "
                    "use image_score=max or train with the deviation stage enabled"
                )
            score = deviation
        else:
            score = score_max
        return AnomalyOutput(amap, score, score_max, deviation)
