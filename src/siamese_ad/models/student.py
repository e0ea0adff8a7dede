"""The student decoder: mirrors the teacher, restoring each stage's features from the embedding."""

from __future__ import annotations

from torch import Tensor, nn

from siamese_ad.models.blocks import ResidualBlock
from siamese_ad.models.cpam import CPAM


class DecoderStage(nn.Module):
    """[CPAM] -> transposed-conv upsampling -> residual blocks -> linear 1x1 projection.

    (B, in_ch, H, W) -> (B, out_ch, H * factor, W * factor). The last projection has no activation
    so the student can reproduce teacher features of either sign.
    """

    def __init__(
        self, in_ch: int, out_ch: int, factor: int, blocks: int, cpam: bool, cpam_fusion: str
    ) -> None:
        super().__init__()
        self.attention: nn.Module = CPAM(in_ch, fusion=cpam_fusion) if cpam else nn.Identity()
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(in_ch, out_ch, kernel_size=factor, stride=factor, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[ResidualBlock(out_ch, out_ch) for _ in range(blocks)])
        self.project = nn.Conv2d(out_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.blocks(self.upsample(self.attention(x))))


class StudentDecoder(nn.Module):
    """Restores (S_1, ..., S_n) with exactly the teacher's shapes from the bottleneck embedding.

    Args:
        channels: teacher per-stage channels (c_1, ..., c_n).
        strides: teacher per-stage strides (s_1, ..., s_n).
        in_channels: channels of the embedding, whose stride is 2 s_n.
        blocks: residual blocks per stage.
        cpam: insert CPAM before every stage's upsampling.
        cpam_fusion: CPAM's fusion form (gated | literal).
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        in_channels: int,
        blocks: int,
        cpam: bool,
        cpam_fusion: str,
    ) -> None:
        super().__init__()
        stages = []
        prev_ch, prev_stride = in_channels, 2 * strides[-1]
        for ch, stride in zip(reversed(channels), reversed(strides), strict=True):
            stages.append(
                DecoderStage(prev_ch, ch, prev_stride // stride, blocks, cpam, cpam_fusion)
            )
            prev_ch, prev_stride = ch, stride
        self.stages = nn.ModuleList(stages)

    def forward(self, embedding: Tensor) -> list[Tensor]:
        """(B, C_b, H_b, W_b) -> [S_1, ..., S_n], shallowest first like the teacher's list."""
        outputs = []
        x = embedding
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[::-1]
