"""Folding eval-mode BatchNorm into the convolution before it, for faster inference.

A BatchNorm2d in eval mode is an affine map per channel, so conv -> BN equals one convolution
with rescaled weights and a bias. `fold_batchnorm` finds each Conv2d whose next sibling (in
registration order) is a BatchNorm2d of matching width, folds the pair, and replaces the BN by an
identity. Registration order is not always call order, so `folded_copy` checks the result against
the original on a probe input and keeps the original when they disagree.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import Tensor, nn

PROBE_TOLERANCE = 1e-4  # relative to the largest output magnitude, float32


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def fold_batchnorm(module: nn.Module) -> int:
    """Folds every (Conv2d, BatchNorm2d) sibling pair under `module` in place; returns the count.

    Only for inference: the module must be in eval mode and is not trainable afterwards.
    """
    count = 0
    for parent in module.modules():
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if (
                type(conv) is not nn.ConvTranspose2d
                and isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.track_running_stats
            ):
                _fold_pair(conv, bn)
                parent._modules[second] = nn.Identity()
                count += 1
    return count


def _max_relative_gap(a: list[Tensor], b: list[Tensor]) -> float:
    return max(
        float((x - y).abs().max() / x.abs().max().clamp_min(1e-12))
        for x, y in zip(a, b, strict=True)
    )


@torch.no_grad()
def folded_copy(model: nn.Module, probe: Tensor) -> tuple[nn.Module, bool]:
    """A BN-folded copy of an eval-mode `model` when it reproduces the original on `probe`.

    Args:
        model: returns a tensor, a list of tensors, or an object with teacher/student lists.
        probe: an input batch, e.g. (1, 3, S, S).

    Returns:
        (the folded copy, True), or (model itself, False) when folding changed the outputs.
    """
    folded = copy.deepcopy(model).eval()
    if not fold_batchnorm(folded):
        return model, False
    gap = _max_relative_gap(_flat(model(probe)), _flat(folded(probe)))
    return (folded, True) if gap <= PROBE_TOLERANCE else (model, False)


def _flat(output: object) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flat(item)]
    return [t for name in ("teacher", "student") for t in _flat(getattr(output, name))]
