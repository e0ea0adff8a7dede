"""Issue 12: export never overwrites its input, batch sizes are checked, same-stem images keep
their own heat maps and masks, masks are thresholded, user-path errors are one line, and the
synthetic data folder never loses the user's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siamese_ad.cli import main
from siamese_ad.config import Config, ConfigError
from siamese_ad.export import check_out_path

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_defect": 1, "size": 32, "defects": ("spot",)}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line a refused command prints."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# 1. export: --out never replaces the checkpoint, its metadata never lands on either file


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    """A run folder whose checkpoint.pt is a few known bytes (the refusal comes before loading)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"precious checkpoint")
    return run


def _outs(run: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (export arguments, text the error must hold)."""
    ckpt = run / "checkpoint.pt"
    (run / "link.onnx").symlink_to(ckpt)
    os.link(ckpt, run / "hard.pt")
    return {
        "same path": (["--checkpoint", str(ckpt), "--out", str(ckpt)], "--out"),
        "run folder": (
            ["--checkpoint", str(run), "--format", "torchscript", "--out", str(ckpt)],
            "--checkpoint itself",
        ),
        "relative spelling": (
            [
                "--checkpoint",
                str(ckpt),
                "--format",
                "torchscript",
                "--out",
                f"{run}/../run/x/../checkpoint.pt",
            ],
            "--checkpoint itself",
        ),
        "symlink": (["--checkpoint", str(ckpt), "--out", str(run / "link.onnx")], "itself"),
        "hard link": (
            ["--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(run / "hard.pt")],
            "itself",
        ),
        "json out": (["--checkpoint", str(ckpt), "--out", str(run / "m.json")], ".onnx"),
        "wrong suffix": (["--checkpoint", str(ckpt), "--out", str(run / "model.pt")], ".onnx"),
        "folder": (["--checkpoint", str(ckpt), "--out", str(run)], "is a folder"),
    }


@pytest.mark.parametrize(
    "case",
    ["same path", "run folder", "relative spelling", "symlink", "hard link", "json out",
     "wrong suffix", "folder"],
)  # fmt: skip
def test_export_refuses_an_out_that_would_overwrite_or_mislead(
    fake_run: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = _outs(fake_run)[case]
    before = sorted(p.name for p in fake_run.iterdir())
    assert main(["export", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("siamese-ad export: error: --out") and expected in line
    assert "choose another file" in line
    assert (fake_run / "checkpoint.pt").read_bytes() == b"precious checkpoint"
    assert sorted(p.name for p in fake_run.iterdir()) == before  # no .json, no temporary file


def test_export_refuses_metadata_over_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.json"  # an odd name, but the metadata of model.onnx would be it
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"metadata .* --checkpoint"):
        check_out_path(ckpt, tmp_path / "model.onnx", "onnx")


def test_export_accepts_a_new_file_with_the_format_suffix(fake_run: Path) -> None:
    check_out_path(fake_run, fake_run / "model.onnx", "onnx")
    check_out_path(fake_run / "checkpoint.pt", fake_run / "model.pt", "torchscript")
    check_out_path(fake_run, fake_run / "model.ts", "torchscript")


# 2. batch sizes


@pytest.mark.parametrize("size", [0, 1])
def test_train_batch_size_below_2_is_a_config_error(size: int) -> None:
    cfg = Config()
    cfg.data.root, cfg.train.batch_size = "unused", size
    with pytest.raises(ConfigError, match=r"train\.batch_size.*BatchNorm needs two images"):
        cfg.validate()
    cfg.train.batch_size = 2
    cfg.validate()


def test_train_batch_size_1_exits_2_before_training(
    tiny_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(tiny_category), "--out", str(out), "--batch-size", "1",
         "--weights", "none", "--backbone", "resnet18", "--device", "cpu"]
    )  # fmt: skip
    assert code == 2
    assert "train.batch_size=1" in _error_line(capsys)
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_inference_batch_size_must_be_a_positive_whole_number(
    command: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "--checkpoint", str(tmp_path), "--batch-size", value]
    if command == "predict":
        args += [str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "Traceback" not in err
