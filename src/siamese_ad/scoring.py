"""Anomaly maps (eq. 2) and image scores: max of the map, and the deviation score of stage 2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese_ad.config import ConfigError, ScoringConfig
from siamese_ad.losses import cosine_distance, stage_scores
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


class GaussianBlur(nn.Module):
    """Separable Gaussian blur (B, H, W) -> (B, H, W), as gaussian_filter(mode="reflect")."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.enabled = sigma > 0
        self.register_buffer("kernel", gaussian_kernel1d(sigma) if self.enabled else torch.ones(1))

    def forward(self, maps: Tensor) -> Tensor:
        if not self.enabled:
            return maps
        r = self.kernel.numel() // 2
        height, width = maps.shape[-2:]
        x = maps.unsqueeze(1)
        x = x.index_select(3, _symmetric_index(width, r, maps.device))
        x = F.conv2d(x, self.kernel.view(1, 1, 1, -1))
        x = x.index_select(2, _symmetric_index(height, r, maps.device))
        x = F.conv2d(x, self.kernel.view(1, 1, -1, 1))
        return x.squeeze(1)


def anomaly_map(pair: FeaturePair, size: tuple[int, int], blur: GaussianBlur) -> Tensor:
    """Eq. 2: sum over stages of upsampled per-pixel (1 - cos), then blurred. -> (B, H, W).

    Always float32, also under bf16 autocast: a bf16 map has 8 bits of mantissa, which turns
    close scores into ties and costs AUROC.
    """
    with torch.autocast(device_type=pair.teacher[0].device.type, enabled=False):
        total = None
        for t, s in zip(pair.teacher, pair.student, strict=True):
            dist = cosine_distance(t.float(), s.float()).unsqueeze(1)
            up = F.interpolate(dist, size=size, mode="bilinear", align_corners=False).squeeze(1)
            total = up if total is None else total + up
        return blur(total)


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


class AnomalyScorer(nn.Module):
    """Images -> anomaly maps and image scores, in one module (also the exported graph).

    Args:
        model: the trained U-Net (its deviation statistics included).
        cfg: scoring settings.
        topk: fraction of pixels whose mean is each stage's scalar (deviation score).
    """

    def __init__(self, model: TeacherStudentUNet, cfg: ScoringConfig, topk: float) -> None:
        super().__init__()
        self.model = model
        self.blur = GaussianBlur(cfg.sigma)
        self.topk = topk
        self.image_score = cfg.image_score

    def uses_deviation(self) -> bool:
        if self.image_score == "auto":
            return bool(self.model.deviation_ready)
        return self.image_score == "deviation"

    def forward(self, images: Tensor) -> AnomalyOutput:
        """(B, 3, H, W) in [0, 1] -> AnomalyOutput."""
        pair = self.model(images)
        amap = anomaly_map(pair, images.shape[-2:], self.blur)
        score_max = amap.flatten(1).amax(dim=1)
        deviation = None
        if bool(self.model.deviation_ready):
            raw = stage_scores(pair.teacher, pair.student, self.topk)
            deviation = ((raw - self.model.stage_mean) / self.model.stage_std).mean(dim=1)
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
