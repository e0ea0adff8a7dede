"""Folding eval-mode BatchNorm into the convolution before it, for faster inference.

A BatchNorm2d in eval mode is an affine map per channel, so conv -> BN equals one convolution
with rescaled weights and a bias. `fold_batchnorm` folds each Conv2d whose next sibling (in
registration order) is a BatchNorm2d of matching width and replaces the BN by an identity (by
its activation for timm's BatchNormAct2d, which applies one after the normalisation).
Registration order is not always call order, so `fold_checked` folds in place, compares the
outputs on a probe input with those before, and undoes every fold when they disagree; no copy
of the model is made, so folding does not raise peak memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from timm.layers import BatchNormAct2d
from torch import Tensor, nn

PROBE_TOLERANCE = 1e-4  # relative to the largest output magnitude, float32


@dataclass
class _Fold:
    """One folded pair, kept so the fold can be undone."""

    parent: nn.Module
    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    old_bias: Tensor | None

    def undo(self) -> None:
        with torch.no_grad():
            self.conv.weight.div_(_scale(self.bn).view(-1, 1, 1, 1))
        self.conv.bias = None if self.old_bias is None else nn.Parameter(self.old_bias)
        self.parent._modules[self.name] = self.bn


def _scale(bn: nn.BatchNorm2d) -> Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _is_pair(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.num_features == conv.out_channels
        and bn.track_running_stats
    )


def _after_fold(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of `bn` once folded: nothing, or the dropout and activation it applies."""
    if isinstance(bn, BatchNormAct2d):
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


@torch.no_grad()
def _fold_all(module: nn.Module) -> list[_Fold]:
    folds = []
    for parent in list(module.modules()):
        for first, second in itertools.pairwise(list(parent._modules)):
            conv, bn = parent._modules[first], parent._modules[second]
            if not _is_pair(conv, bn):
                continue
            old_bias = None if conv.bias is None else conv.bias.detach().clone()
            scale = _scale(bn)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = old_bias if old_bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = nn.Parameter(
                (bias - bn.running_mean) * scale + bn.bias, requires_grad=False
            )
            parent._modules[second] = _after_fold(bn)
            folds.append(_Fold(parent, second, conv, bn, old_bias))
    return folds


def fold_batchnorm(module: nn.Module) -> int:
    """Folds every (Conv2d, BatchNorm2d) sibling pair under `module` in place; returns the count.

    Only for inference: the module must be in eval mode and is not trainable afterwards.
    """
    return len(_fold_all(module))


@torch.no_grad()
def fold_checked(model: nn.Module, probe: Tensor) -> bool:
    """Folds an eval-mode `model` in place when that reproduces its outputs on `probe`.

    Args:
        model: returns a tensor, a list of tensors, or an object with teacher/student lists.
        probe: an input batch, e.g. (1, 3, S, S).

    Returns:
        True when folded; False (and `model` as it was) when folding changed the outputs.
    """
    before = _flat(model(probe))
    folds = _fold_all(model)
    if not folds:
        return False
    gap = _max_relative_gap(before, _flat(model(probe)))
    if gap <= PROBE_TOLERANCE:
        return True
    for fold in reversed(folds):
        fold.undo()
    return False


def _max_relative_gap(a: list[Tensor], b: list[Tensor]) -> float:
    pairs = zip(a, b, strict=True)
    return max(float((x - y).abs().max() / x.abs().max().clamp_min(1e-12)) for x, y in pairs)


def _flat(output: object) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flat(item)]
    return [t for name in ("teacher", "student") for t in _flat(getattr(output, name))]
