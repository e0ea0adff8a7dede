"""Issue 12, model side: a checkpoint whose weights do not fit its config, a corrupt ONNX file or
a model.json that does not match its graph are one line naming the file; `predict --model` and
`predict --checkpoint` agree."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TinyRun, make_tiny_config, predict_both

from siamese_ad.app.export import export_model
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.training.trainer import train


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line a refused command prints."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# 7. a checkpoint whose weights do not fit its config


def _edit_decoder_blocks(payload: dict) -> None:
    payload["config"]["model"]["decoder_blocks"] = 2  # the config edited after training


def _other_backbone(payload: dict) -> None:
    """Config and signature say EfficientNet-Lite0; the weights are the ResNet-18 ones."""
    payload["config"]["model"].update(backbone="efficientnet_lite0", teacher_stages=[])
    payload["signature"] = Config.from_dict(payload["config"]).model_signature()


@pytest.mark.parametrize(
    ("change", "says"),
    [(_edit_decoder_blocks, "'decoder_blocks': (1, 2)"), (_other_backbone, "do not fit the model")],
)
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_checkpoint_whose_weights_do_not_fit_its_config_is_one_line(
    tiny_run: TinyRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict], None],
    says: str,
    command: str,
) -> None:
    payload = torch.load(tiny_run.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    payload = copy.deepcopy(payload)
    change(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    args = {
        "evaluate": ["--out", str(tmp_path / "eval"), "--data", str(tiny_run.data)],
        "predict": [str(tiny_run.data / "test" / "good"), "--out", str(tmp_path / "pred")],
        "export": ["--out", str(tmp_path / "model.onnx")],
    }[command]
    assert main([command, "--checkpoint", str(bad), *args]) == 2
    line = _error_line(capsys)
    assert str(bad) in line and "weights that do not fit" in line and says in line


# 8. predict --model and predict --checkpoint agree; 7. a bad model.onnx or model.json


@pytest.fixture(scope="module")
def bf16_export(tiny_category: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, model.onnx): a tiny model trained under bf16 autocast, exported."""
    tmp = tmp_path_factory.mktemp("bf16")
    cfg = make_tiny_config(tiny_category).merged({"train": {"bf16": True}})
    train(cfg, tmp / "run")
    return tmp / "run", export_model(tmp / "run", tmp / "model.onnx")


def test_predict_model_and_checkpoint_agree_for_a_bf16_run(
    bf16_export: tuple[Path, Path], tiny_category: Path, tmp_path: Path
) -> None:
    run, model = bf16_export
    ref, got = predict_both(run, model, tiny_category, tmp_path)
    assert len(ref) == 6 and ref.keys() == got.keys()
    for name, row in ref.items():
        assert abs(float(got[name]["score"]) - float(row["score"])) < 1e-3, name
        assert got[name]["anomalous"] == row["anomalous"] in ("True", "False"), name


def _cut_short(model: Path, meta: dict) -> None:
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _garbage(model: Path, meta: dict) -> None:
    model.write_bytes(b"not an onnx graph")


def _meta(**changes: object) -> Callable[[Path, dict], None]:
    def change(model: Path, meta: dict) -> None:
        meta.update(changes)
        model.with_suffix(".json").write_text(json.dumps(meta))

    return change


def _bad_json(model: Path, meta: dict) -> None:
    model.with_suffix(".json").write_text('{"image_size": 32,')


@pytest.mark.parametrize(
    ("damage", "named", "says"),
    [
        (_cut_short, ".onnx", "corrupt or cut short"),
        (_garbage, ".onnx", "corrupt or cut short"),
        (_bad_json, ".json", "not valid JSON"),
        (_meta(image_size=64), ".json", "image_size is 64"),
        (_meta(input={"name": "pixels"}), ".json", "input is 'pixels'"),
        (_meta(outputs=["map", "score", "heat"]), ".json", "outputs are"),
        (_meta(outputs=None), ".json", "lacks or garbles"),
    ],
)
def test_bad_onnx_model_or_metadata_is_one_line_naming_the_file(
    bf16_export: tuple[Path, Path],
    tiny_category: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path, dict], None],
    named: str,
    says: str,
) -> None:
    _, exported = bf16_export
    model = Path(shutil.copy(exported, tmp_path / "model.onnx"))
    shutil.copy(exported.with_suffix(".json"), tmp_path / "model.json")
    damage(model, json.loads(exported.with_suffix(".json").read_text()))
    images = str(tiny_category / "test" / "good")
    assert main(["predict", images, "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert str(model.with_suffix(named)) in line and says in line and "siamese-ad export" in line
