"""Config: YAML round trip, presets, and ConfigError naming the field for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamese_ad.backbones import ALIASES
from siamese_ad.config import PRESETS, Config, ConfigError, preset


def test_yaml_round_trip_is_equal(tmp_path: Path) -> None:
    cfg = preset("cpu")
    cfg.data.root = str(tmp_path / "data")
    cfg.train.lr, cfg.train.betas, cfg.train.seed = 1e-4, (0.9, 0.99), 3
    cfg.model.cpam, cfg.synthesis.blend = False, "paste"
    cfg.to_yaml(tmp_path / "c.yaml")
    back = Config.from_yaml(tmp_path / "c.yaml")
    assert back == cfg
    assert isinstance(back.train.betas, tuple)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_round_trip(name: str) -> None:
    cfg = preset(name)
    assert cfg.validate() is cfg
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert preset(name) is not cfg  # a fresh copy each time


def test_paper_preset_matches_the_paper() -> None:
    cfg = preset("paper")
    assert cfg.model.backbone == "wide_resnet50_2" and cfg.model.weights == "imagenet"
    assert cfg.train.lr == 0.005 and cfg.train.betas == (0.5, 0.999)
    assert cfg.train.batch_size == 16 and cfg.train.epochs == 200
    assert cfg.data.image_size == 256 and cfg.scoring.sigma == 4.0
    assert cfg.contrastive.margin == 0.5 and cfg.deviation.target == 5.0


def test_cpu_preset_uses_efficientnet_lite0() -> None:
    assert preset("cpu").model.backbone == "efficientnet_lite0"


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="paper"):
        preset("gpu")


def test_config_takes_aliases_and_timm_names_and_lists_them_on_error() -> None:
    for name in [*ALIASES, "resnet34"]:
        assert Config.from_dict({"model": {"backbone": name}}).model.backbone == name
    with pytest.raises(ConfigError, match=r"model\.backbone='vgg_16'") as info:
        Config.from_dict({"model": {"backbone": "vgg_16"}})
    assert all(name in str(info.value) for name in ALIASES) and "vgg16" in str(info.value)


def test_partial_yaml_keeps_the_other_defaults(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  lr: 1e-3\nmodel:\n  cpam: false\n")
    cfg = Config.from_yaml(tmp_path / "c.yaml")
    assert cfg.train.epochs == 3 and cfg.model.cpam is False
    assert cfg.train.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string; the config converts it
    assert cfg.train.batch_size == Config().train.batch_size


def test_empty_yaml_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("")
    assert Config.from_yaml(tmp_path / "c.yaml") == Config()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"trainer": {"epochs": 1}}, "trainer"),
        ({"train": {"epoch": 1}}, "epoch"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"lr": -1.0}}, "train.lr"),
        ({"train": {"betas": [0.5, 1.5]}}, "train.betas"),
        ({"train": {"betas": [0.5]}}, "train.betas"),
        ({"train": {"device": "gpu"}}, "train.device"),
        ({"train": {"seed": -1}}, "train.seed"),
        ({"train": {"bf16": "yes"}}, "train.bf16"),
        ({"train": 5}, "train"),
        ({"data": {"image_size": 100}}, "data.image_size"),
        ({"data": {"format": "coco"}}, "data.format"),
        ({"data": {"shots": -2}}, "data.shots"),
        ({"model": {"backbone": "not_a_net"}}, "model.backbone"),
        ({"model": {"cpam_fusion": "sum"}}, "model.cpam_fusion"),
        ({"deviation": {"topk": 0.0}}, "deviation.topk"),
        ({"synthesis": {"blend": "alpha"}}, "synthesis.blend"),
        ({"synthesis": {"min_patches": 5}}, "synthesis.min_patches"),
        ({"synthesis": {"pool_size": 0}}, "synthesis.pool_size"),
        ({"scoring": {"image_score": "mean"}}, "scoring.image_score"),
    ],
)
def test_bad_values_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Config.from_dict(raw)


def test_validate_catches_values_set_in_code() -> None:
    cfg = Config()
    cfg.contrastive.reduction = "max"
    with pytest.raises(ConfigError, match=r"contrastive\.reduction"):
        cfg.validate()


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        Config.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        Config.from_yaml(tmp_path / "bad.yaml")


def test_image_size_pair_round_trips_through_yaml_as_a_list(tmp_path: Path) -> None:
    cfg = preset("cpu").merged({"data": {"image_size": [416, 160]}})
    assert cfg.data.image_size == (416, 160) and cfg.data.size_hw == (416, 160)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert "image_size:\n  - 416\n  - 160\n" in (tmp_path / "c.yaml").read_text()
    back = Config.from_yaml(tmp_path / "c.yaml")
    assert back == cfg and back.data.image_size == (416, 160)
    assert back.model_signature()["image_size"] == [416, 160]


def test_image_size_int_and_square_pair_are_one_size() -> None:
    square = Config().merged({"data": {"image_size": [256, 256]}})
    assert square.data.image_size == 256 and square.data.size_hw == (256, 256)
    assert square.model_signature() == Config().model_signature()
    tall = Config().merged({"data": {"image_size": [512, 256]}})
    assert tall.model_signature() != Config().model_signature()


def test_image_size_set_in_code_as_a_list_is_validated_to_a_tuple() -> None:
    cfg = Config()
    cfg.data.image_size = [64, 32]  # type: ignore[assignment]
    assert cfg.validate().data.image_size == (64, 32)
    cfg.data.image_size = (64, 48)
    with pytest.raises(ConfigError, match=r"data\.image_size=\[64, 48\]: height and width"):
        cfg.validate()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([64, 40], r"data\.image_size=\[64, 40\]: height and width must each be a multiple of 32"),
        ([16, 64], r"data\.image_size=\[16, 64\]: .* >= 32"),
        (33, r"data\.image_size=33 must be a multiple of 32"),
        ([64, 32, 32], r"image_size=\[64, 32, 32\] is not valid; give one int .* \[height, w"),
        ([64], r"data\.image_size=\[64\] is not valid"),
        ([64.0, 32], r"data\.image_size=\[64\.0, 32\] is not valid"),
        ("64x32", r"data\.image_size='64x32' is not valid"),
        (True, r"data\.image_size=True is not valid"),
    ],
)
def test_bad_image_sizes_say_what_is_valid(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({"data": {"image_size": value}})


def test_model_signature_changes_with_shape_fields_only() -> None:
    base = Config()
    other = Config()
    other.train.epochs, other.train.lr = 3, 0.1
    assert other.model_signature() == base.model_signature()
    other.model.cpam = False
    assert other.model_signature() != base.model_signature()


def test_layers_preset_then_yaml_then_overrides(tmp_path: Path) -> None:
    from siamese_ad.config import layered

    (tmp_path / "run.yaml").write_text("train: {epochs: 5}\n")
    cfg = layered("cpu", tmp_path / "run.yaml", {"model": {"teacher_stages": [2, 4]}})
    assert cfg.train.epochs == 5  # from the YAML
    assert cfg.model.backbone == "efficientnet_lite0" and cfg.train.bf16  # the cpu preset kept
    assert cfg.model.teacher_stages == (2, 4)  # the override, as a tuple
    (tmp_path / "empty.yaml").write_text("")
    assert layered("cpu", tmp_path / "empty.yaml", {}) == preset("cpu")


def test_bad_teacher_stages_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.teacher_stages"):
        preset("cpu").merged({"model": {"teacher_stages": [4, 2]}})


def test_real_anomalies_need_a_stage_that_trains_on_them() -> None:
    with pytest.raises(ConfigError, match="real_anomalies"):
        preset("cpu").merged({"data": {"real_anomalies": 2}})
    both = preset("cpu").merged({"data": {"real_anomalies": 2}, "deviation": {"enabled": True}})
    assert both.data.real_anomalies == 2
