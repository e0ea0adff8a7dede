"""The anomalous training images of stage 1: synthetic ones and optional real ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class AnomalyPool:
    """Anomalous training images: synthetic ones and optional real ones.

    Attributes:
        images: (M, 3, H, W) uint8.
        masks: (M, H, W) bool, where each image is anomalous.
        destinations: (M,) int64, the normal image each synthetic anomaly was blended into;
            -1 for real anomalies.
    """

    images: Tensor
    masks: Tensor
    destinations: Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """`count` pool indices drawn with replacement: (count,) int64."""
        return torch.randint(len(self.images), (count,), generator=generator)

    def draw_aligned(self, normal_idx: Tensor, generator: torch.Generator) -> Tensor:
        """For each normal image index, the pool index of one of its synthetic anomalies,
        drawn uniformly among them: (B,) int64. Every index needs one (see `build_pool`)."""
        if self.destinations is None:
            raise ValueError("this anomaly pool does not record the images it was made from")
        picks = []
        for i in normal_idx.tolist():
            own = torch.nonzero(self.destinations == i).flatten()
            if own.numel() == 0:
                raise ValueError(f"normal image {i} has no synthetic anomaly in the pool")
            picks.append(own[torch.randint(own.numel(), (1,), generator=generator)])
        return torch.cat(picks)
