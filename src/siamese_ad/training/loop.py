"""What both training stages share: seeding, the epoch loop, the optimizer step, progress."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from siamese_ad.checkpoint import TrainingState
from siamese_ad.losses import distillation_loss
from siamese_ad.training import distributed

if TYPE_CHECKING:
    from siamese_ad.config import Config
    from siamese_ad.models.unet import TeacherStudentUNet
    from siamese_ad.training.pool import AnomalyPool
    from siamese_ad.training.teacher_cache import TeacherCache

STAGE_SALT = {"stage1": 1, "stage2": 2, "stats": 3, "pool": 4, "validation": 5}


def seed_everything(seed: int) -> None:
    """The one place that seeds Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, stage: str, epoch: int) -> torch.Generator:
    """A generator fixed by (seed, stage, epoch): a resumed run draws what an unbroken one did."""
    return torch.Generator().manual_seed(seed * 1_000_003 + STAGE_SALT[stage] * 10_007 + epoch)


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one is dropped (BatchNorm needs two), and
    under torchrun one smaller than the number of processes (each needs an image)."""
    for idx in torch.randperm(n, generator=generator).split(batch_size):
        if len(idx) >= max(2, distributed.world_size()) or n == 1:
            yield idx


def run_stage(
    stage: str,
    epochs: int,
    state: TrainingState,
    n_items: int,
    batch_size: int,
    seed: int,
    step: Callable[[torch.Tensor, torch.Generator], float],
    save: Callable[[], None],
    validate: Callable[[], dict[str, float]] | None = None,
    set_progress: Callable[[float], None] | None = None,
) -> None:
    """Runs the epochs of `stage` not yet finished, saving after every epoch.

    Args:
        step: trains on one batch of indices and returns its loss.
        save: writes the checkpoint; called after each finished epoch.
        validate: returns validation metrics, logged and kept in the history after each epoch.
        set_progress: told the stage's progress in [0, 1) before every step (a schedule).
    """
    for epoch in range(state.epoch, epochs):
        gen = epoch_generator(seed, stage, epoch)
        start, losses = time.perf_counter(), []
        bar = tqdm(
            list(index_batches(n_items, batch_size, gen)),
            desc=f"{stage} {epoch + 1}/{epochs}",
            unit="batch",
            leave=False,
            disable=not distributed.is_main(),
        )
        for b, idx in enumerate(bar):
            if set_progress is not None:
                set_progress((epoch + b / len(bar)) / epochs)
            losses.append(step(idx, gen))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        seconds = time.perf_counter() - start
        state.epoch = epoch + 1
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        entry = {"stage": stage, "epoch": epoch + 1, "loss": mean_loss, "seconds": seconds}
        if validate is not None and distributed.is_main():
            entry.update(validate())
        state.history.append(entry)
        if distributed.is_main():  # under torchrun only rank 0 logs and writes
            done = f"{stage} epoch {epoch + 1}/{epochs}"
            val = "".join(f", {k[4:]} {v:.4f}" for k, v in entry.items() if k.startswith("val_"))
            tqdm.write(f"{done}: loss {mean_loss:.4f}{val} ({seconds:.1f} s)")
            save()


class OptimizerStep:
    """What both stages' steps share: their inputs, and loss -> gradients -> update.

    Subclasses compute the loss of one batch in `__call__` and finish with `apply`.
    """

    def __init__(
        self,
        model: TeacherStudentUNet,
        optimizer: torch.optim.Optimizer,
        normals: torch.Tensor,
        pool: AnomalyPool | None,
        cfg: Config,
        device: torch.device,
        cache: TeacherCache | None = None,
    ) -> None:
        self.model, self.optimizer, self.normals, self.pool = model, optimizer, normals, pool
        self.cfg, self.device, self.cache = cfg, device, cache

    def cached_teacher(self, idx: torch.Tensor, picks: torch.Tensor) -> list[torch.Tensor] | None:
        """Teacher features of normals[idx] then pool[picks], from the cache; None without one."""
        if self.cache is None:
            return None
        normal = self.cache.features("normal", idx, self.normals)
        anomalous = self.cache.features("pool", picks, self.pool.images)
        return [torch.cat(pair) for pair in zip(normal, anomalous, strict=True)]

    def distill(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor], reduction: str
    ) -> torch.Tensor:
        """Eq. 1 between teacher and student features [(B, C_i, H_i, W_i)] in `reduction`
        (FeaturePair.loss_reduction's); plus, with train.raw_distill, that weight times the same
        loss on the de-normalised features (model.feature_norm undone)."""
        loss = distillation_loss(teacher, student, reduction)
        weight = self.cfg.train.raw_distill
        if weight:
            raw = self.model.raw_features
            loss = loss + weight * distillation_loss(raw(teacher), raw(student), reduction)
        return loss

    def apply(self, loss: torch.Tensor, n_local: int, n_global: int) -> float:
        """Backpropagates `loss` of this process's n_local of n_global images; returns the
        global loss. Under torchrun the gradients are averaged so they equal one process's."""
        loss = loss * distributed.loss_weight(n_local, n_global)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.model)
        self.optimizer.step()
        return distributed.mean_over_ranks(loss)


def schedule(
    optimizer: torch.optim.Optimizer, base_lr: float, kind: str
) -> Callable[[float], None]:
    """A `set_progress` for run_stage: the learning rate at a stage's progress p in [0, 1).

    "constant" keeps base_lr; "cosine" is base_lr * (1 + cos(pi p)) / 2. A function of the
    progress alone, so a resumed run follows the same schedule without saving any state.
    """

    def set_progress(progress: float) -> None:
        lr = base_lr if kind == "constant" else base_lr * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr

    return set_progress
