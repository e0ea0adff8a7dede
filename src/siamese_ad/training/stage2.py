"""Stage 2: deviation fine-tuning to a bipolar image score (eq. 8)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from siamese_ad.config import Config
from siamese_ad.device import autocast, to_device
from siamese_ad.io import atomic_torch_save
from siamese_ad.losses import deviation_loss, stage_scores
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.training import distributed
from siamese_ad.training.loop import OptimizerStep

SNAPSHOT = "stage1.pt"  # the stage-1 model and its validation figures, kept while stage 2 trains
STD_FLOOR = 1e-6
RELATIVE_STD_FLOOR = 0.01  # a spread below 1% of the mean is estimation noise, not signal


@torch.inference_mode()
def normal_statistics(
    model: TeacherStudentUNet, normals: Tensor, cfg: Config, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each stage's top-k score over normal images: two (n,)."""
    model.eval()
    scores = []
    for chunk in normals.split(cfg.train.batch_size):
        with autocast(device, cfg.train.bf16):
            pair = model(to_device(chunk, device, cfg.train.channels_last))
        raw = stage_scores(pair.teacher, pair.student, cfg.deviation.topk, pair.distance)
        scores.append(raw.float().cpu())
    all_scores = torch.cat(scores)
    mean = all_scores.mean(dim=0)
    std = all_scores.std(dim=0, unbiased=len(all_scores) > 1)
    std = torch.maximum(std, RELATIVE_STD_FLOOR * mean.abs()).clamp_min(STD_FLOOR)
    return mean, std


def set_statistics(model: TeacherStudentUNet, mean: Tensor, std: Tensor) -> None:
    """Stores the normal statistics in the model, which makes the deviation score available."""
    model.stage_mean.copy_(mean)
    model.stage_std.copy_(std)
    model.deviation_ready.fill_(True)


class Stage2Step(OptimizerStep):
    """One optimisation step on (normal, anomalous) pairs: L_dev + lambda_cos L_cos on normals."""

    def __call__(self, idx: Tensor, generator: torch.Generator) -> float:
        cfg = self.cfg
        n_global = len(idx)
        picks = self.pool.draw(len(idx), generator)
        idx, picks = distributed.shard(idx), distributed.shard(picks)  # torchrun
        normal = to_device(self.normals[idx], self.device, cfg.train.channels_last)
        anomalous = to_device(self.pool.images[picks], self.device, cfg.train.channels_last)
        n = len(normal)
        labels = torch.cat([torch.zeros(n), torch.ones(n)]).to(self.device)
        teacher = self.cached_teacher(idx, picks)
        self.model.train()
        with autocast(self.device, cfg.train.bf16):
            pair = self.model(torch.cat([normal, anomalous]), teacher)
        raw = stage_scores(pair.teacher, pair.student, cfg.deviation.topk, pair.distance)
        standardised = (raw - self.model.stage_mean) / self.model.stage_std
        loss = deviation_loss(standardised, labels, cfg.deviation.target)
        loss = loss + cfg.deviation.lambda_cos * self.distill(
            [t[:n] for t in pair.teacher],
            [s[:n] for s in pair.student],
            pair.loss_reduction(cfg.train.distill_reduction),
        )
        return self.apply(loss, n, n_global)


def save_snapshot(path: Path, model: TeacherStudentUNet, figures: dict[str, float]) -> None:
    """Writes the trainable weights and buffers of the model before stage 2 (its map means and
    deviation statistics set) with its defects-yardstick figures, atomically."""
    weights = {k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()}
    atomic_torch_save({"model": weights, "validation": figures}, path)


def load_snapshot(path: Path) -> tuple[dict[str, Tensor], dict[str, float]]:
    """The weights and validation figures save_snapshot wrote (weights_only load)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["model"], payload["validation"]


def score_auroc(figures: dict[str, float], prefix: str, image_score: str) -> float | None:
    """The validation image AUROC of the score a model uses: "max", "deviation", or for "auto"
    the better of the two (the one the image-score rule would choose); None when missing."""
    names = ("max", "deviation") if image_score == "auto" else (image_score,)
    values = [figures.get(f"{prefix}image_auroc_{name}") for name in names]
    return None if None in values else max(values)


def stage2_pays(
    before: dict[str, float], after: dict[str, float], prefix: str, image_score: str
) -> bool:
    """deviation.keep "auto": stage 2's weights stay unless the stage-1 model separated the
    validation set strictly better. The stage-1 model is judged by the max of its map (without
    stage 2 the image score is the max of the map) unless the score is fixed to deviation, the
    finished model by the score it would use. Ties and missing figures keep the method's
    stage 2."""
    first = score_auroc(before, prefix, "deviation" if image_score == "deviation" else "max")
    finished = score_auroc(after, prefix, image_score)
    return first is None or finished is None or finished >= first
