"""Small convolutional building blocks shared by the bottleneck and the student decoder."""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Bottleneck residual block (1x1, 3x3, 1x1) with a projection shortcut when shapes change.

    (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, width: int | None = None) -> None:
        super().__init__()
        mid = width or max(out_ch // 2, 16)
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))
