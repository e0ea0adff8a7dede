"""The CLI end to end on a tiny category: train, evaluate, predict; errors exit 2; --help works."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.reporting.heatmaps import panel_name

FLAGS = [
    "--weights", "none", "--backbone", "resnet18", "--image-size", "64",
    "--epochs", "1", "--deviation-epochs", "1", "--device", "cpu", "--decoder-blocks", "2",
]  # fmt: skip
METRICS = ("image_auroc", "image_auroc_max", "image_auroc_deviation", "pixel_auroc", "aupro")


@dataclass
class Run:
    """Where one train -> evaluate -> predict sequence wrote its results."""

    data: Path
    model: Path
    eval: Path
    predict: Path
    codes: dict[str, int]


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> Run:
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "tiny.yaml"
    make_config(tiny_category).to_yaml(config)  # synthesis.pool_size 4 has no flag
    out = Run(tiny_category, tmp / "model", tmp / "eval", tmp / "predict", {})
    data, model = str(tiny_category), str(out.model)
    out.codes["train"] = main(
        ["train", "--config", str(config), "--data", data, "--out", model, *FLAGS]
    )
    ckpt = str(out.model / "checkpoint.pt")
    out.codes["evaluate"] = main(["evaluate", "--checkpoint", ckpt, "--out", str(out.eval)])
    out.codes["predict"] = main(
        ["predict", str(tiny_category / "test" / "good"), str(tiny_category / "test" / "spot"),
         "--checkpoint", ckpt, "--out", str(out.predict), "--device", "cpu"]
    )  # fmt: skip
    return out


def test_every_command_exits_0(run: Run) -> None:
    assert run.codes == {"train": 0, "evaluate": 0, "predict": 0}


def test_train_applies_the_flags(run: Run) -> None:
    cfg = Config.from_yaml(run.model / "config.yaml")
    assert (cfg.model.backbone, cfg.model.weights, cfg.data.image_size) == ("resnet18", "none", 64)
    assert (cfg.train.epochs, cfg.deviation.epochs, cfg.synthesis.pool_size) == (1, 1, 4)
    assert cfg.model.decoder_blocks == 2  # the tiny config has 1
    assert Path(cfg.data.root) == run.data


def test_evaluate_writes_metrics_in_0_1(run: Run) -> None:
    metrics = json.loads((run.eval / "metrics.json").read_text())
    for key in METRICS:
        assert isinstance(metrics[key], float), key
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["n_images"] == len(read_mvtec(run.data).test)


def test_evaluate_writes_one_score_row_and_one_heat_map_per_test_image(run: Run) -> None:
    test = read_mvtec(run.data).test
    with (run.eval / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["image"]).as_posix() for r in rows) == sorted(
        s.image.as_posix() for s in test
    )
    assert all(r["score_deviation"] != "" for r in rows)  # stage 2 ran
    heatmaps = sorted((run.eval / "heatmaps").glob("*.png"))
    assert len(heatmaps) == len(test)
    for sample in test:
        assert (run.eval / "heatmaps" / panel_name(sample.defect, sample.image)).is_file()


def test_predict_writes_a_row_and_a_heat_map_per_image(run: Run) -> None:
    inputs = sorted((run.data / "test" / "good").glob("*.png")) + sorted(
        (run.data / "test" / "spot").glob("*.png")
    )
    with (run.predict / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["image"]) for r in rows] == inputs
    heatmaps = {Path(r["heatmap"]) for r in rows}
    assert len(heatmaps) == len(inputs)
    assert all(p.is_file() and p.parent == run.predict / "heatmaps" for p in heatmaps)
    assert all(float(r["score"]) == float(r["score"]) for r in rows)  # not NaN


def test_train_on_a_missing_folder_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_such_category"
    code = main(["train", "--data", str(missing), "--out", str(tmp_path / "run"), *FLAGS])
    assert code == 2
    assert re.search(re.escape(str(missing)), capsys.readouterr().err)


def test_evaluate_without_a_checkpoint_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "run" / "checkpoint.pt"
    assert main(["evaluate", "--checkpoint", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_predict_on_a_missing_input_exits_2_naming_it(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.png"
    ckpt = str(run.model / "checkpoint.pt")
    code = main(["predict", str(missing), "--checkpoint", ckpt, "--out", str(tmp_path / "p")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_bad_config_value_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert code == 2
    assert "train.epochs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "flag"),
    [("train", "--data"), ("evaluate", "--checkpoint"), ("predict", "--checkpoint")],
)
def test_help_of_each_subcommand(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"siamese-ad {command}" in out and flag in out


def test_benchmark_command_runs_its_shard_and_writes_the_tables(
    tmp_path: Path, tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    config = tmp_path / "tiny.yaml"
    make_config(tiny_category).to_yaml(config)
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(tiny_category.parent), "--dataset", "mvtec",
            "--categories", tiny_category.name, "--setups", "full", "--out", str(out),
            "--config", str(config), "--no-heatmaps", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--shard", "1/2"]) == 0  # the only cell is shard 0's: nothing runs
    assert not (out / "results.md").exists()
    assert main([*args, "--shard", "0/2"]) == 0
    assert (out / "results.md").exists() and (out / tiny_category.name / "full").is_dir()
    assert main([*args, "--shard", "2/2"]) == 2


def test_every_config_field_is_a_flag_and_print_config_shows_the_merge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    from siamese_ad.cli import build_parser

    flags = ["--out", "x", "--print-config", "--train.epochs", "7"]
    flags += ["--model.teacher_stages", "[2, 4]", "--contrastive.form", "triplet"]
    assert main(["train", *flags]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 7 and printed["model"]["teacher_stages"] == [2, 4]
    assert printed["contrastive"]["form"] == "triplet"
    assert printed["model"]["backbone"] == "efficientnet_lite0"  # the cpu preset underneath
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert all(f"--{s}.{k}" in help_text for s, k in Config.field_names() if k != "root")
