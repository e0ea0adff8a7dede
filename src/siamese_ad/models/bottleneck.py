"""The one-class bottleneck embedding (OCBE): teacher stages fused into one compact embedding."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from siamese_ad.models.blocks import ResidualBlock, conv_bn_relu


class OneClassBottleneck(nn.Module):
    """Brings every teacher stage to the deepest stage's resolution, concatenates, compresses.

    For Wide-ResNet50-2 at 256 px: (256x64x64, 512x32x32, 1024x16x16) -> 2048x8x8.

    Args:
        channels: per-stage teacher channels (c_1, ..., c_n).
        strides: per-stage teacher strides (s_1, ..., s_n), each a power of two times s_1.
        blocks: residual blocks in the compressing layer.
        out_channels: channels of the embedding; 0 = 2 c_n, as RD.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        blocks: int,
        out_channels: int = 0,
    ) -> None:
        super().__init__()
        deepest_ch, deepest_stride = channels[-1], strides[-1]
        self.align = nn.ModuleList()
        for ch, stride in zip(channels[:-1], strides[:-1], strict=True):
            steps = round(math.log2(deepest_stride / stride))
            widths = [min(ch * 2 ** (k + 1), deepest_ch) for k in range(steps)]
            widths[-1] = deepest_ch
            layers = [
                conv_bn_relu(w_in, w_out, 2)
                for w_in, w_out in zip([ch, *widths], widths, strict=False)
            ]
            self.align.append(nn.Sequential(*layers))
        self.out_channels = out_channels or 2 * deepest_ch
        fused = deepest_ch * len(channels)
        layers = [ResidualBlock(fused, self.out_channels, stride=2)]
        layers += [ResidualBlock(self.out_channels, self.out_channels) for _ in range(blocks - 1)]
        self.compress = nn.Sequential(*layers)

    def forward(self, features: list[Tensor]) -> Tensor:
        """(T_1, ..., T_n) -> (B, out_channels, H_n / 2, W_n / 2)."""
        aligned = [layer(f) for layer, f in zip(self.align, features[:-1], strict=True)]
        return self.compress(torch.cat([*aligned, features[-1]], dim=1))
