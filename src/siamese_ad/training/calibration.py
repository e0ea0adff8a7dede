"""The end of training: decision thresholds chosen on the held-out validation images.

One inference pass over the validation images (never trained on, never tested) gives their
anomaly maps and image scores; siamese_ad/thresholds.py turns them into thresholds, which the
trainer saves in the checkpoint. Nothing after training writes to it. Scoring runs in the precision
of scoring.bf16; with it on, a second, float32 pass gives the exported graph's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from siamese_ad.config import Config
from siamese_ad.data.dataset import ImageSet
from siamese_ad.device import autocast, to_device
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.scoring import AnomalyScorer, stage_distances
from siamese_ad.thresholds import EXTRA_KEY, FLOAT32_KEY, Thresholds, thresholds_for

MAP_MEAN_FLOOR = 1e-6  # a stage whose normal map is ~0 everywhere is not divided up to infinity


@torch.inference_mode()
def stage_map_means(
    model: TeacherStudentUNet, normals: torch.Tensor, cfg: Config, device: torch.device
) -> torch.Tensor:
    """(n,) float32: each stage's mean (1 - cos) over all pixels (at the stage's resolution) of
    (N, 3, H, W) uint8 normal images, scored in the precision of scoring.bf16."""
    model.eval()
    total, count = None, 0
    for chunk in normals.split(cfg.train.batch_size):
        with autocast(device, cfg.scoring.bf16):
            dists = stage_distances(model(to_device(chunk, device, cfg.train.channels_last)))
        sums = torch.stack([d.float().mean(dim=(1, 2)).sum() for d in dists]).cpu()
        total, count = (sums if total is None else total + sums), count + len(chunk)
    return (total / max(count, 1)).clamp_min(MAP_MEAN_FLOOR)


def set_map_means(model: TeacherStudentUNet, means: torch.Tensor) -> None:
    """Stores the per-stage map means that scoring.map_norm "mean" divides each stage's map by."""
    model.stage_map_mean.copy_(means)


@dataclass
class Scored:
    """A model's outputs over N images.

    Attributes:
        maps: (N, H, W) float32 anomaly maps.
        scores: (N,) the configured image score.
        maxima: (N,) max of each map.
        deviations: (N,) deviation scores, or None before stage 2.
    """

    maps: np.ndarray
    scores: np.ndarray
    maxima: np.ndarray
    deviations: np.ndarray | None


@torch.inference_mode()
def score_images(
    model: TeacherStudentUNet,
    images: torch.Tensor,
    cfg: Config,
    device: torch.device,
    bf16: bool | None = None,
    originals: torch.Tensor | None = None,
) -> Scored:
    """The model's outputs on (N, 3, H, W) uint8 images, batch by batch in eval mode, under bf16
    autocast when `bf16` (default: scoring.bf16, as evaluate and predict score), else float32.
    Given the images' (N, 2) `originals` under data.fit "pad", the maps and the max of the map
    cover each image's part of its letterboxed input, as the Detector scores it."""
    model.eval()
    scorer = AnomalyScorer(model, cfg.scoring, cfg.deviation.topk).to(device).eval()
    letterboxed = originals is not None and cfg.data.fit == "pad"
    outs = []
    for i, chunk in enumerate(images.split(cfg.train.batch_size)):  # whatever train.bf16 says
        with autocast(device, cfg.scoring.bf16 if bf16 is None else bf16):
            out = scorer(to_device(chunk, device, cfg.train.channels_last))
        if letterboxed:
            start = i * cfg.train.batch_size
            out = out.unpadded(originals[start : start + len(chunk)], not scorer.uses_deviation())
        outs.append(out)

    def cat(tensors: list[torch.Tensor]) -> np.ndarray:
        return torch.cat([t.float().cpu() for t in tensors]).numpy()

    deviations = None
    if outs and outs[0].score_deviation is not None:
        deviations = cat([o.score_deviation for o in outs])
    return Scored(
        cat([o.map for o in outs]),
        cat([o.score for o in outs]),
        cat([o.score_max for o in outs]),
        deviations,
    )


def calibrate(
    model: TeacherStudentUNet,
    validation: ImageSet,
    cfg: Config,
    device: torch.device,
    bf16: bool | None = None,
) -> Thresholds:
    """Thresholds for the trained model, chosen on its validation images (one pass, in the
    precision `score_images` takes)."""
    scored = score_images(model, validation.images, cfg, device, bf16, validation.originals)
    return thresholds_for(validation, scored.scores, scored.maps, cfg.scoring.threshold_quantile)


def stored_calibration(
    model: TeacherStudentUNet, validation: ImageSet, cfg: Config, device: torch.device
) -> dict[str, dict]:
    """The checkpoint's threshold entries: EXTRA_KEY's in the precision of scoring.bf16 and, when
    that is bf16, FLOAT32_KEY's for the float32 exported graph, from the same images."""
    out = {EXTRA_KEY: calibrate(model, validation, cfg, device).to_dict()}
    if cfg.scoring.bf16:
        out[FLOAT32_KEY] = calibrate(model, validation, cfg, device, bf16=False).to_dict()
    return out
