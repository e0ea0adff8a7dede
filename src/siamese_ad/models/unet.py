"""The teacher-student U-Net: frozen teacher encoder, one-class bottleneck, student decoder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from siamese_ad.config import ConfigError, ModelConfig
from siamese_ad.models.bottleneck import OneClassBottleneck
from siamese_ad.models.student import StudentDecoder
from siamese_ad.models.teacher import Teacher, build_teacher

# a channel (nearly) constant over the training images is divided by this fraction of its stage's
# mean std, not by ~0: it weighs at most 1 / FEATURE_STD_FLOOR times a typical channel
FEATURE_STD_FLOOR = 0.1
FEATURE_NORMS = ("channel", "centre")  # model.feature_norm values that hold statistics


@dataclass
class FeaturePair:
    """Teacher and student feature maps, stage by stage, shallowest first.

    Attributes:
        teacher: [T_1, ..., T_n], each (B, C_i, H_i, W_i), without gradients.
        student: [S_1, ..., S_n], the same shapes.
    """

    teacher: list[Tensor]
    student: list[Tensor]
    distance: str = "cosine"  # model.distance: how the pair is compared (map and loss)

    def loss_reduction(self, reduction: str) -> str:
        """The distillation loss's reduction for this pair: "squared" under model.distance
        "squared", else train.distill_reduction's `reduction`."""
        return "squared" if self.distance == "squared" else reduction


class TeacherStudentUNet(nn.Module):
    """Images in [0, 1] -> teacher and student features.

    Besides the weights it holds, as buffers, the per-stage statistics of the top-k anomaly scores
    of normal training images (`stage_mean`, `stage_std`, each (n,)), set after stage 1 and used
    to standardise the deviation score; `deviation_ready` says whether they were set; and
    `stage_map_mean` (n,), each stage's mean (1 - cos) over the pixels of normal held-out images,
    set at the end of training, which scoring.map_norm "mean" divides each stage's map by (ones
    until then, and in checkpoints written before it existed: the plain sum). With
    model.feature_norm "channel" or "centre" it also holds each stage's per-channel teacher
    statistics (`feature_mean_i`, `feature_std_i`, each (C_i,)), set by train before the first
    epoch, and `teacher_features` returns the teacher's features standardised with them.
    """

    def __init__(
        self,
        teacher: Teacher,
        cpam: bool,
        cpam_fusion: str,
        decoder_blocks: int,
        bottleneck_channels: int = 0,
        feature_norm: str = "none",
        distance: str = "cosine",
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.bottleneck = OneClassBottleneck(
            teacher.channels, teacher.strides, decoder_blocks, bottleneck_channels
        )
        self.student = StudentDecoder(
            teacher.channels,
            teacher.strides,
            self.bottleneck.out_channels,
            decoder_blocks,
            cpam,
            cpam_fusion,
        )
        n = len(teacher.channels)
        self.register_buffer("stage_mean", torch.zeros(n))
        self.register_buffer("stage_std", torch.ones(n))
        self.register_buffer("deviation_ready", torch.tensor(False))
        self.register_buffer("stage_map_mean", torch.ones(n))
        self.feature_norm, self.distance = feature_norm, distance
        if feature_norm in FEATURE_NORMS:
            for i, c in enumerate(teacher.channels):
                self.register_buffer(f"feature_mean_{i}", torch.zeros(c))
                self.register_buffer(f"feature_std_{i}", torch.ones(c))

    @property
    def num_stages(self) -> int:
        return len(self.teacher.channels)

    def check_input_size(self, size_hw: tuple[int, int]) -> None:
        """Raises a ConfigError naming data.image_size unless the input (height, width) are
        multiples of 2 * the deepest teacher stride (the bottleneck halves that stage again)."""
        multiple = 2 * self.teacher.strides[-1]
        if all(side % multiple == 0 for side in size_hw):
            return
        given = size_hw[0] if size_hw[0] == size_hw[1] else list(size_hw)
        height, width = (-(-side // multiple) * multiple for side in size_hw)
        example = str(height) if height == width else f"{height}x{width}"
        raise ConfigError(
            f"data.image_size={given}: this teacher's deepest stage has stride "
            f"{multiple // 2}, so height and width must each be a multiple of {multiple}; "
            f"e.g. --image-size {example}"
        )

    def teacher_features(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) in [0, 1] -> [T_1, ..., T_n], without gradients; standardised per
        channel under model.feature_norm "channel" (centred only under "centre")."""
        with torch.no_grad():
            features = self.teacher(images)
            if self.feature_norm in FEATURE_NORMS:
                features = [
                    (t - mean.view(1, -1, 1, 1).to(t.dtype)) / std.view(1, -1, 1, 1).to(t.dtype)
                    for t, (mean, std) in zip(features, self.feature_statistics(), strict=True)
                ]
            return [t.detach() for t in features]

    def feature_statistics(self) -> list[tuple[Tensor, Tensor]]:
        """Per stage, the (C_i,) mean and std that model.feature_norm applies (std ones under
        "centre")."""
        return [
            (getattr(self, f"feature_mean_{i}"), getattr(self, f"feature_std_{i}"))
            for i in range(self.num_stages)
        ]

    def raw_features(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Undoes model.feature_norm: [(B, C_i, H_i, W_i)] -> the same, each x * std + mean in
        float32 (teacher or student side alike); the features themselves without it."""
        if self.feature_norm not in FEATURE_NORMS:
            return list(features)
        return [
            x.float() * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
            for x, (mean, std) in zip(features, self.feature_statistics(), strict=True)
        ]

    @torch.no_grad()
    def fit_feature_norm(self, batches: Iterable[Tensor]) -> None:
        """Sets each teacher channel's mean and std (model.feature_norm "channel"; "centre" keeps
        std at one) over every pixel of the images in `batches` ((B, 3, H, W) in [0, 1] each),
        in float64."""
        n = self.num_stages
        sums: list[Tensor | float] = [0.0] * n
        squares: list[Tensor | float] = [0.0] * n
        counts = [0] * n
        for images in batches:
            for i, t in enumerate(self.teacher(images)):
                t = t.double()
                sums[i] = sums[i] + t.sum((0, 2, 3))
                squares[i] = squares[i] + (t * t).sum((0, 2, 3))
                counts[i] += t[:, 0].numel()
        if not counts[0]:
            raise ValueError("fit_feature_norm needs at least one batch of images")
        for i, (total, square, count) in enumerate(zip(sums, squares, counts, strict=True)):
            mean = total / count
            if self.feature_norm == "centre":
                std = torch.ones_like(mean)
            else:
                std = (square / count - mean * mean).clamp_min(0).sqrt()
                std = std.clamp_min(FEATURE_STD_FLOOR * float(std.mean()) + 1e-12)
            getattr(self, f"feature_mean_{i}").copy_(mean)
            getattr(self, f"feature_std_{i}").copy_(std)

    def forward(
        self,
        images: Tensor,
        teacher: list[Tensor] | None = None,
        student_input: list[Tensor] | None = None,
    ) -> FeaturePair:
        """(B, 3, H, W) in [0, 1] -> FeaturePair; H and W multiples of 2 * the deepest stride.

        `teacher`, when given, is `teacher_features(images)` computed earlier (a training cache);
        the teacher is then not run again. `student_input`, when given, replaces the teacher's
        features as the bottleneck's input (shapes as `teacher`; training's feature jitter),
        while the pair's teacher side stays the clean features.
        """
        if teacher is None:
            teacher = self.teacher_features(images)
        student = self.student(self.bottleneck(teacher if student_input is None else student_input))
        return FeaturePair(teacher, student, self.distance)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Everything but the teacher's weights (which are rebuilt from their source)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}


def build_unet(cfg: ModelConfig, weights: str | None = None) -> TeacherStudentUNet:
    """Builds the U-Net named by `cfg`; `weights` overrides cfg.weights for the teacher.

    The teacher is built under a forked random state, so the student's initial weights depend on
    the seed alone, not on how many random numbers the backbone's construction draws (which
    changes with timm versions and backbones): a seed gives the same student across such changes.
    """
    with torch.random.fork_rng(devices=[]):
        teacher = build_teacher(
            cfg.backbone, weights or cfg.weights, cfg.teacher_stages, cfg.input_norm
        )
    return TeacherStudentUNet(
        teacher,
        cfg.cpam,
        cfg.cpam_fusion,
        cfg.decoder_blocks,
        cfg.bottleneck_channels,
        cfg.feature_norm,
        cfg.distance,
    )
