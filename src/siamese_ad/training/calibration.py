"""The end of training: decision thresholds chosen on the held-out validation images.

One inference pass over the validation images (never trained on, never tested) gives their
anomaly maps and image scores; siamese_ad/thresholds.py turns them into thresholds, which the
trainer saves in the checkpoint. Nothing after training writes to it.
"""

from __future__ import annotations

import numpy as np
import torch

from siamese_ad.config import Config
from siamese_ad.data.dataset import ImageSet
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.scoring import AnomalyScorer
from siamese_ad.thresholds import Thresholds, choose_thresholds
from siamese_ad.training.loop import autocast, to_device


@torch.inference_mode()
def score_images(
    model: TeacherStudentUNet, images: torch.Tensor, cfg: Config, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """The trained model's outputs, batch by batch in eval mode.

    Args:
        images: (N, 3, S, S) uint8.

    Returns:
        (N, S, S) float32 anomaly maps and (N,) configured image scores.
    """
    model.eval()
    scorer = AnomalyScorer(model, cfg.scoring, cfg.deviation.topk).to(device).eval()
    maps, scores = [], []
    for chunk in images.split(cfg.train.batch_size):
        with autocast(device, cfg.train.bf16):
            out = scorer(to_device(chunk, device, cfg.train.channels_last))
        maps.append(out.map.float().cpu())
        scores.append(out.score.float().cpu())
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


def calibrate(
    model: TeacherStudentUNet, validation: ImageSet, cfg: Config, device: torch.device
) -> Thresholds:
    """Thresholds for the trained model, chosen on its validation images (one pass)."""
    maps, scores = score_images(model, validation.images, cfg, device)
    return choose_thresholds(
        scores,
        validation.labels.numpy(),
        maps,
        validation.masks.numpy(),
        validation.has_mask.numpy(),
        cfg.scoring.threshold_quantile,
    )
