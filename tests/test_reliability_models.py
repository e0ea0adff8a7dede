"""Issue 12, model side: a checkpoint whose weights do not fit its config, a corrupt ONNX file or
a model.json that does not match its graph are one line naming the file; `predict --model` and
`predict --checkpoint` agree."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TinyRun

from siamese_ad.cli import main
from siamese_ad.config import Config


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
