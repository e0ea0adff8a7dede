"""The frozen teacher's features of fixed training images, computed once and kept in memory.

The teacher never changes and the normal images and the anomaly pool are not augmented, so
their teacher features are the same every epoch: the first epoch computes them, later ones read
them. Features are kept in the dtype the teacher produced them in (bf16 under bf16 autocast), so
a cached step computes exactly what an uncached one would. Past `max_bytes` images are no longer
added and their features are computed as usual.
"""

from __future__ import annotations

import torch
from torch import Tensor

from siamese_ad.device import autocast, to_device
from siamese_ad.models.unet import TeacherStudentUNet

DEFAULT_MAX_BYTES = 4 * 1024**3


class TeacherCache:
    """Teacher features of whole image sets, computed once in fixed chunks and kept.

    Each set is computed in chunks of `batch_size` in index order, whatever order the steps ask
    in, so a resumed run reads exactly what an unbroken one did.

    Args:
        model: the U-Net whose teacher computes the features.
        device: where the step runs (and the features are kept).
        bf16: compute the features under bf16 autocast, as the training step does.
        channels_last: hand images to the teacher, and features to the step, channels_last.
        batch_size: chunk size of the one pass over each set.
        max_bytes: a set whose features would take more is not kept (computed per step).
    """

    def __init__(
        self,
        model: TeacherStudentUNet,
        device: torch.device,
        bf16: bool,
        channels_last: bool,
        batch_size: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.model, self.device, self.bf16, self.channels_last = model, device, bf16, channels_last
        self.batch_size, self.max_bytes = batch_size, max_bytes
        self.bytes = 0
        self._sets: dict[str, list[Tensor] | None] = {}

    def _teacher(self, images: Tensor) -> list[Tensor]:
        with autocast(self.device, self.bf16):
            return self.model.teacher_features(to_device(images, self.device, self.channels_last))

    def _compute(self, images: Tensor) -> list[Tensor] | None:
        """[(M, C_i, H_i, W_i)] for the whole set, or None when it would exceed the budget
        (known from the first chunk, before the rest is computed)."""
        parts = images.split(self.batch_size)
        chunks = [self._teacher(parts[0])]
        per_image = sum(t[0].numel() * t.element_size() for t in chunks[0])
        if self.bytes + per_image * len(images) > self.max_bytes:
            return None
        chunks += [self._teacher(chunk) for chunk in parts[1:]]
        features = [torch.cat(stage) for stage in zip(*chunks, strict=True)]
        self.bytes += per_image * len(images)
        return features

    def features(
        self, name: str, idx: Tensor, images: Tensor, flip: tuple[int, ...] = ()
    ) -> list[Tensor]:
        """Teacher features of `images[idx]`, flipped along `flip` first: [(B, C_i, H_i, W_i)]
        on the device.

        Args:
            name: which image set `images` is ("normal", "pool"); computed on first use, each
                flip of it as a set of its own.
            idx: (B,) int64 indices into `images`.
            images: (M, 3, H, W) uint8, the whole image set.
            flip: image dimensions to reverse (train.flips); () leaves the images as they are.
        """
        key = f"{name}{flip}" if flip else name
        if key not in self._sets:
            self._sets[key] = self._compute(images.flip(flip) if flip else images)
        stored = self._sets[key]
        if stored is None:
            return self._teacher(images[idx].flip(flip) if flip else images[idx])
        out = [stage[idx.to(stage.device)] for stage in stored]
        if self.channels_last:
            out = [t.contiguous(memory_format=torch.channels_last) for t in out]
        return out
