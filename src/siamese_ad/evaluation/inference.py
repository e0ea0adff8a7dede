"""Running a trained detector over decoded images, batch by batch, without gradients."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siamese_ad.config import Config
from siamese_ad.models.folding import fold_checked
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.scoring import AnomalyScorer
from siamese_ad.training.checkpoint import load_model, read_checkpoint
from siamese_ad.training.loop import autocast, select_device, to_device


@dataclass
class Inference:
    """Scores and maps for N images.

    Attributes:
        maps: (N, H, W) float32 anomaly maps.
        scores: (N,) the configured image score.
        scores_max: (N,) max of the map.
        scores_deviation: (N,) deviation score, or None before stage 2.
        seconds: wall time of the forward passes.
    """

    maps: np.ndarray
    scores: np.ndarray
    scores_max: np.ndarray
    scores_deviation: np.ndarray | None
    seconds: float

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(len(self.scores), 1)


@dataclass
class Detector:
    """A loaded checkpoint ready to score images."""

    scorer: AnomalyScorer
    cfg: Config
    payload: dict
    device: torch.device

    @classmethod
    def load(
        cls, checkpoint: str | Path, device: str = "auto", weights: str | None = None
    ) -> Detector:
        """Loads a checkpoint (weights_only=True) onto `device` in eval mode."""
        payload = read_checkpoint(checkpoint)
        model, cfg = load_model(payload, Path(checkpoint), weights=weights)
        return cls.from_model(model, cfg, select_device(device), payload)

    @classmethod
    def from_model(
        cls, model: TeacherStudentUNet, cfg: Config, device: torch.device, payload: dict
    ) -> Detector:
        """Prepares a model for inference: eval mode on `device`, channels_last as configured,
        and BatchNorm folded into the convolutions (models/folding.py) when that reproduces the
        unfolded outputs on a probe image. This changes `model` in place: it is no longer trainable.
        """
        model = model.to(device).eval()
        size = cfg.data.image_size
        probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        fold_checked(model, probe.to(device))
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        scorer = AnomalyScorer(model, cfg.scoring, cfg.deviation.topk).to(device).eval()
        return cls(scorer, cfg, payload, device)

    @torch.inference_mode()
    def run(self, images: torch.Tensor, batch_size: int | None = None) -> Inference:
        """(N, 3, S, S) uint8 -> Inference."""
        bs = batch_size or self.cfg.train.batch_size
        maps, scores, smax, sdev = [], [], [], []
        start = time.perf_counter()
        for chunk in tqdm(images.split(bs), desc="scoring", leave=False, unit="batch"):
            x = to_device(chunk, self.device, self.cfg.train.channels_last)
            with autocast(self.device, self.cfg.train.bf16):
                out = self.scorer(x)
            maps.append(out.map.float().cpu())
            scores.append(out.score.float().cpu())
            smax.append(out.score_max.float().cpu())
            if out.score_deviation is not None:
                sdev.append(out.score_deviation.float().cpu())
        seconds = time.perf_counter() - start
        return Inference(
            maps=torch.cat(maps).numpy(),
            scores=torch.cat(scores).numpy(),
            scores_max=torch.cat(smax).numpy(),
            scores_deviation=torch.cat(sdev).numpy() if sdev else None,
            seconds=seconds,
        )
