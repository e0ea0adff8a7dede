"""Stage 1: distillation on normal images plus the Siamese contrastive triplet loss (eq. 6-7)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from siamese_ad.config import FLIPS
from siamese_ad.device import autocast, to_device
from siamese_ad.losses import contrastive_loss
from siamese_ad.training import distributed
from siamese_ad.training.loop import OptimizerStep


def rotate_batch(images: Tensor, max_degrees: float, generator: torch.Generator) -> Tensor:
    """Rotates each image by its own angle, uniform in [-max_degrees, max_degrees].

    Borders are filled by reflection so the rotation adds no artificial edges. (B, 3, H, W) float.
    The grid's coordinates run over [-1, 1] on both axes, so on a non-square image the rotation's
    off-diagonal terms are scaled by the aspect ratio: a rotation in pixels, not a shear.
    """
    angles = (torch.rand(images.shape[0], generator=generator) * 2 - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(cos)
    aspect = images.shape[-2] / images.shape[-1]  # H / W; 1.0 leaves the square case exact
    theta = torch.stack(
        [torch.stack([cos, -sin * aspect, zeros], 1), torch.stack([sin / aspect, cos, zeros], 1)], 1
    )
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def flip_batch(
    images: Tensor, kind: str, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """Each image flipped as drawn uniformly from FLIPS[kind] (train.flips).

    Args:
        images: (B, C, H, W) images.
        kind: a key of config.FLIPS; "none" returns the images and no draw.

    Returns:
        The (B, C, H, W) flipped images and the (B,) int64 index into FLIPS[kind] of each
        image's flip (None for "none", which draws nothing from the generator).
    """
    if len(FLIPS[kind]) == 1:
        return images, None
    codes = torch.randint(len(FLIPS[kind]), (images.shape[0],), generator=generator)
    out = images.clone()
    for dims, chosen in flip_groups(codes, kind):
        if dims:
            out[chosen] = images[chosen].flip(dims)
    return out, codes


def flip_groups(codes: Tensor, kind: str) -> Iterator[tuple[tuple[int, ...], Tensor]]:
    """(dims, positions) of each flip of FLIPS[kind] that `codes` (B,) draws, in FLIPS order."""
    for code, dims in enumerate(FLIPS[kind]):
        chosen = (codes == code).nonzero().flatten()
        if len(chosen):
            yield dims, chosen


def jitter_features(
    features: list[Tensor], scale: float, generator: torch.Generator
) -> list[Tensor]:
    """Each (B, C_i, H_i, W_i) map plus Gaussian noise whose std is `scale` times that image's
    root-mean-square feature value at that stage (UniAD's feature jitter, per stage)."""
    jittered = []
    for f in features:
        f32 = f.float()
        rms = f32.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        noise = torch.randn(f.shape, generator=generator).to(f.device)
        jittered.append((f32 + scale * rms * noise).to(f.dtype))
    return jittered


def stage_masks(masks: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
    """(B, H, W) bool masks -> one (B, H_i, W_i) float mask per stage: the share of each stage
    cell that is anomalous, at least half of it counting as anomalous (1.0), else 0.0."""
    x = masks.unsqueeze(1).float()
    return [(F.interpolate(x, size=size, mode="area") >= 0.5).float().squeeze(1) for size in sizes]


def masked_margin_loss(
    teacher_a: list[Tensor],
    student_a: list[Tensor],
    teacher_n: list[Tensor],
    student_n: list[Tensor],
    masks: list[Tensor],
    margin: float,
) -> Tensor:
    """Eq. 6 per pixel inside the synthetic masks: the anomaly map of A must exceed that of its
    clean image N at the same pixel by `margin`.

    (1/n) sum_i mean_b [mean over b's masked pixels of
    max(cos(T_i(A), S_i(A)) - cos(T_i(N), S_i(N)) + m, 0)]. Features (B, C_i, H_i, W_i); masks
    (B, H_i, W_i) in {0, 1}; an image without a masked pixel at a stage adds 0 there. A mean over
    images, so the loss of a batch split over processes averages back exactly.
    """
    terms = []
    for ta, sa, tn, sn, m in zip(teacher_a, student_a, teacher_n, student_n, masks, strict=True):
        cos_a = F.cosine_similarity(ta.float(), sa.float(), dim=1)
        cos_n = F.cosine_similarity(tn.float(), sn.float(), dim=1)
        hinge = F.relu(cos_a - cos_n + margin) * m
        terms.append((hinge.flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)).mean())
    return torch.stack(terms).mean()


class Stage1Step(OptimizerStep):
    """One optimisation step of stage 1; with the contrastive part off it is the basic RD block."""

    def __call__(self, idx: Tensor, generator: torch.Generator) -> float:
        if self.cfg.contrastive.enabled and self.cfg.contrastive.form == "aligned":
            return self._aligned(idx, generator)
        cfg, con = self.cfg, self.cfg.contrastive
        normal, flips = flip_batch(self.normals[idx], cfg.train.flips, generator)
        normal = to_device(normal, self.device, cfg.train.channels_last)
        batch = [normal]
        picks = None
        if con.enabled:
            batch.append(rotate_batch(normal, con.rotation, generator))
            picks = self.pool.draw(len(idx), generator)
            batch.append(to_device(self.pool.images[picks], self.device, False))
        batch = [distributed.shard(part) for part in batch]  # this process's slice (torchrun)
        teacher = None
        if self.cache is not None and flips is not None:
            teacher = self._flipped_teacher(distributed.shard(idx), distributed.shard(flips))
        elif self.cache is not None:
            teacher = self.cache.features("normal", distributed.shard(idx), self.normals)
            if con.enabled:
                with autocast(self.device, cfg.train.bf16):
                    rotated = self.model.teacher_features(batch[1])
                pool = self.cache.features("pool", distributed.shard(picks), self.pool.images)
                teacher = [torch.cat(parts) for parts in zip(teacher, rotated, pool, strict=True)]
        images = torch.cat(batch) if len(batch) > 1 else batch[0]
        student_input = None
        if cfg.train.feature_jitter > 0:
            if teacher is None:
                with autocast(self.device, cfg.train.bf16):
                    teacher = self.model.teacher_features(images)
            student_input = jitter_features(teacher, cfg.train.feature_jitter, generator)
        self.model.train()
        with autocast(self.device, cfg.train.bf16):
            pair = self.model(images, teacher, student_input)
        n = len(batch[0])
        loss = con.lambda_cos * self.distill(
            [t[:n] for t in pair.teacher],
            [s[:n] for s in pair.student],
            pair.loss_reduction(cfg.train.distill_reduction),
        )
        if con.enabled:
            s_n, s_aug, s_a = ([s[k * n : (k + 1) * n] for s in pair.student] for k in range(3))
            loss = loss + con.lambda_con * contrastive_loss(
                s_n, s_aug, s_a, con.margin, con.reduction
            )
        return self.apply(loss, n, len(idx))

    def _flipped_teacher(self, idx: Tensor, codes: Tensor) -> list[Tensor]:
        """Teacher features of normals[idx], each image flipped as its code in
        FLIPS[train.flips] says, from the cache's set of each flip: [(B, C_i, H_i, W_i)]."""
        layout = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        out: list[Tensor] = []
        for dims, chosen in flip_groups(codes, self.cfg.train.flips):
            part = self.cache.features("normal", idx[chosen], self.normals, dims)
            if not out:
                like = {"dtype": part[0].dtype, "device": part[0].device, "memory_format": layout}
                out = [torch.empty((len(idx), *t.shape[1:]), **like) for t in part]
            for whole, stage in zip(out, part, strict=True):
                whole[chosen.to(whole.device)] = stage
        return out

    def _aligned(self, idx: Tensor, generator: torch.Generator) -> float:
        """(N, A) pairs with A the synthetic anomaly of N: L_cos on N, the denoising term
        L_cos(T(N), S(A)) and the per-pixel margin inside A's mask."""
        cfg, con = self.cfg, self.cfg.contrastive
        n_global = len(idx)
        picks = self.pool.draw_aligned(idx, generator)
        idx, picks = distributed.shard(idx), distributed.shard(picks)
        normal = to_device(self.normals[idx], self.device, cfg.train.channels_last)
        anomalous = to_device(self.pool.images[picks], self.device, cfg.train.channels_last)
        masks = self.pool.masks[picks].to(self.device)
        teacher = self.cached_teacher(idx, picks)
        self.model.train()
        with autocast(self.device, cfg.train.bf16):
            pair = self.model(torch.cat([normal, anomalous]), teacher)
        n = len(normal)
        t_n, t_a = [t[:n] for t in pair.teacher], [t[n:] for t in pair.teacher]
        s_n, s_a = [s[:n] for s in pair.student], [s[n:] for s in pair.student]
        reduction = pair.loss_reduction(cfg.train.distill_reduction)
        loss = con.lambda_cos * self.distill(t_n, s_n, reduction)
        if con.lambda_denoise:
            loss = loss + con.lambda_denoise * self.distill(t_n, s_a, reduction)
        if con.lambda_con:
            stage = stage_masks(masks, [tuple(t.shape[-2:]) for t in t_a])
            loss = loss + con.lambda_con * masked_margin_loss(t_a, s_a, t_n, s_n, stage, con.margin)
        return self.apply(loss, n, n_global)
