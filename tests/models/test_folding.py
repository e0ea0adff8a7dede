"""BatchNorm folding: the folded model computes what the original does, or is not used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamese_ad.config import ModelConfig
from siamese_ad.models.folding import fold_batchnorm, fold_checked
from siamese_ad.models.unet import build_unet


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            module.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=gen))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=gen))


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_folded_unet_matches_the_original(backbone: str) -> None:
    model = build_unet(ModelConfig(backbone=backbone, weights="none", decoder_blocks=1)).eval()
    _randomise_batchnorm(model)
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a = model(x)
    assert fold_checked(model, probe)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.teacher.modules()) == 0
    with torch.inference_mode():
        b = model(x)
    for ta, tb in zip(a.teacher + a.student, b.teacher + b.student, strict=True):
        torch.testing.assert_close(tb, ta, rtol=1e-4, atol=1e-4 * float(ta.abs().max()))


class _BatchNormFirst(nn.Module):
    """Registers conv before bn but applies bn first: a pair that must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_a_pair_applied_in_another_order_is_unfolded_again() -> None:
    model = _BatchNormFirst().eval()
    _randomise_batchnorm(model)
    probe = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(probe)
    weight = model.conv.weight.detach().clone()
    assert fold_batchnorm(_BatchNormFirst()) == 1  # the heuristic alone would fold it
    assert not fold_checked(model, probe)
    assert isinstance(model.bn, nn.BatchNorm2d)
    torch.testing.assert_close(model.conv.weight, weight)
    with torch.no_grad():
        torch.testing.assert_close(model(probe), before)
