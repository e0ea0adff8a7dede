"""Shared fixtures: a tiny synthetic MVTec AD category and a tiny config with a random teacher."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.data.synthetic import make_synthetic_category

# Tiny tensors gain nothing from intra-op threads, and on a loaded machine OpenMP's barriers make
# them far slower (a 32-pixel training run: 30 s with 2 threads, 2 s with 1).
torch.set_num_threads(1)

TINY_SIZE = 32  # image side of the tiny category and the tiny config
TINY_TRAIN = 5  # normal training images (one is held out for validation)
TINY_TEST_GOOD = 2
TINY_DEFECTS = ("scratch", "spot")
TINY_TEST_DEFECT = 2  # per defect type


@pytest.fixture(scope="session")
def tiny_category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic category in the MVTec AD layout: 5 train, 2 good + 2x2 defective test images.

    Shared by the session: tests must not write into it (copy it first when they need to).
    """
    return make_synthetic_category(
        tmp_path_factory.mktemp("tiny") / "metal",
        n_train=TINY_TRAIN,
        n_test_good=TINY_TEST_GOOD,
        n_test_defect=TINY_TEST_DEFECT,
        size=TINY_SIZE,
        defects=TINY_DEFECTS,
    )


def make_tiny_config(root: Path | str) -> Config:
    """resnet18 with random weights at 32 px, 1 epoch per stage, a pool of 4 synthetic anomalies."""
    cfg = Config()
    cfg.data.root = str(root)
    cfg.data.image_size = TINY_SIZE
    cfg.model.backbone, cfg.model.weights, cfg.model.decoder_blocks = "resnet18", "none", 1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device = 1, 2, "cpu"
    cfg.deviation.epochs = 1
    cfg.synthesis.pool_size = 4
    return cfg.validate()


@pytest.fixture
def tiny_config(tiny_category: Path) -> Config:
    """A fresh tiny config (tests may change it) pointing at `tiny_category`."""
    return make_tiny_config(tiny_category)


@pytest.fixture(scope="session")
def make_config() -> Callable[[Path | str], Config]:
    """The tiny-config builder, for module-scoped fixtures (which cannot use `tiny_config`)."""
    return make_tiny_config


@dataclass(frozen=True)
class TinyRun:
    """A trained tiny run folder and where its training data went after training."""

    run: Path
    data: Path


@pytest.fixture(scope="session")
def tiny_run(tiny_category: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A tiny model trained on a copy of `tiny_category`; the copy is then moved away, so the
    run's data.root no longer exists (a machine without the training data).

    Shared by the session: tests must not write into either folder (copy them first).
    """
    from siamese_ad.training.trainer import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    trained_on = shutil.copytree(tiny_category, tmp / "trained_on" / tiny_category.name)
    train(make_tiny_config(trained_on), tmp / "run")
    moved = tmp / "moved" / tiny_category.name
    moved.parent.mkdir()
    shutil.move(trained_on, moved)
    return TinyRun(tmp / "run", moved)


Rows = dict[str, dict[str, str]]


def predict_both(run: Path, model: Path, category: Path, out: Path) -> tuple[Rows, Rows]:
    """`predict` of the category's test images through the checkpoint (`run`) and through the
    exported graph (`model`): each scores.csv's rows by image, checkpoint first."""
    inputs = [str(category / "test" / d) for d in ("good", *TINY_DEFECTS)]
    rows = []
    for flag, path, name in (("--checkpoint", run, "t"), ("--model", model, "o")):
        assert main(["predict", *inputs, flag, str(path), "--out", str(out / name)]) == 0
        with (out / name / "scores.csv").open() as fh:
            rows.append({r["image"]: r for r in csv.DictReader(fh)})
    return rows[0], rows[1]


@dataclass(frozen=True)
class CommandRun:
    """A tiny run trained through the CLI and what every later command wrote from it."""

    data: Path
    model: Path
    eval: Path
    images: Path
    predict: Path
    onnx: Path
    onnx_predict: Path


def run_commands(
    tmp: Path, category: Path, cfg: Config, flags: Sequence[str], pictures: Sequence[np.ndarray]
) -> CommandRun:
    """`train` (the config, then `flags`), `evaluate`, `predict` of `pictures` (written as PNGs)
    through the checkpoint, `export` to ONNX, and `predict` through the graph; each must exit 0."""
    names = ("model", "eval", "in", "pred", "model.onnx", "pred-onnx")
    out = CommandRun(category, *(tmp / name for name in names))
    config = tmp / "tiny.yaml"
    cfg.to_yaml(config)
    train = ["train", "--config", str(config), "--data", str(category), "--out", str(out.model)]
    assert main([*train, *flags]) == 0
    assert main(["evaluate", "--checkpoint", str(out.model), "--out", str(out.eval)]) == 0
    out.images.mkdir()
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(out.images / f"{i}.png")
    predict = ["predict", str(out.images), "--device", "cpu", "--out"]
    assert main([*predict, str(out.predict), "--checkpoint", str(out.model)]) == 0
    export = ["export", "--checkpoint", str(out.model), "--format", "onnx", "--out", str(out.onnx)]
    assert main(export) == 0
    assert main([*predict, str(out.onnx_predict), "--model", str(out.onnx)]) == 0
    return out


def random_command_run(
    tmp: Path, category: Path, cfg: Config, flags: Sequence[str], seed: int
) -> CommandRun:
    """`run_commands` with three random 40 x 40 pictures to predict (drawn with `seed`)."""
    g = np.random.default_rng(seed)
    pictures = [g.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    return run_commands(tmp, category, cfg, flags, pictures)


def assert_onnx_agrees(run: CommandRun) -> None:
    """The graph's predictions (scores and maps) equal the checkpoint's, image by image."""
    with (run.predict / "scores.csv").open() as a, (run.onnx_predict / "scores.csv").open() as b:
        ref, got = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert ref and [r["image"] for r in ref] == [r["image"] for r in got]
    for r, g in zip(ref, got, strict=True):
        assert abs(float(r["score"]) - float(g["score"])) <= 1e-4 * max(1.0, abs(float(r["score"])))
    ref_maps, got_maps = np.load(run.predict / "maps.npy"), np.load(run.onnx_predict / "maps.npy")
    scale = max(float(np.abs(ref_maps.astype(np.float32)).max()), 1.0)
    assert np.abs(ref_maps.astype(np.float32) - got_maps).max() <= 1e-3 * scale
