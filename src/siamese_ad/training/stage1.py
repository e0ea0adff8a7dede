"""Stage 1: distillation on normal images plus the Siamese contrastive triplet loss (eq. 6-7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from siamese_ad.losses import contrastive_loss, distillation_loss
from siamese_ad.training import distributed
from siamese_ad.training.loop import OptimizerStep, autocast, to_device


@dataclass
class AnomalyPool:
    """Anomalous training images: synthetic ones and optional real ones.

    Attributes:
        images: (M, 3, S, S) uint8.
        masks: (M, S, S) bool, where each image is anomalous.
    """

    images: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """`count` images drawn with replacement: (count, 3, S, S) uint8."""
        return self.images[torch.randint(len(self.images), (count,), generator=generator)]


def rotate_batch(images: Tensor, max_degrees: float, generator: torch.Generator) -> Tensor:
    """Rotates each image by its own angle, uniform in [-max_degrees, max_degrees].

    Borders are filled by reflection so the rotation adds no artificial edges. (B, 3, H, W) float.
    """
    angles = (torch.rand(images.shape[0], generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


class Stage1Step(OptimizerStep):
    """One optimisation step of stage 1; with the contrastive part off it is the basic RD block."""

    def __call__(self, idx: Tensor, generator: torch.Generator) -> float:
        cfg, con = self.cfg, self.cfg.contrastive
        normal = to_device(self.normals[idx], self.device, cfg.train.channels_last)
        batch = [normal]
        if con.enabled:
            batch.append(rotate_batch(normal, con.rotation, generator))
            batch.append(to_device(self.pool.draw(len(idx), generator), self.device, False))
        batch = [distributed.shard(part) for part in batch]  # this process's slice (torchrun)
        self.model.train()
        with autocast(self.device, cfg.train.bf16):
            pair = self.model(torch.cat(batch) if len(batch) > 1 else batch[0])
        n = len(batch[0])
        loss = con.lambda_cos * distillation_loss(
            [t[:n] for t in pair.teacher],
            [s[:n] for s in pair.student],
            cfg.train.distill_reduction,
        )
        if con.enabled:
            s_n, s_aug, s_a = ([s[k * n : (k + 1) * n] for s in pair.student] for k in range(3))
            loss = loss + con.lambda_con * contrastive_loss(
                s_n, s_aug, s_a, con.margin, con.reduction
            )
        return self.apply(loss, n, len(idx))
