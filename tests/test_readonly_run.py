"""A trained run is read-only: train stores the thresholds; evaluate, predict and export only read.

The run is `tiny_run` (conftest.py): trained on a copy of the tiny category that was then moved
away, so nothing below can read the training data from where the run says it was.
"""

from __future__ import annotations

import csv
import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyRun

from siamese_ad.app.evaluate import evaluate
from siamese_ad.app.predict import predict
from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_thresholds
from siamese_ad.thresholds import EXTRA_KEY, Thresholds


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `folder`: its bytes, mtime and inode (a rewrite changes them)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read_only(folder: Path) -> Iterator[Path]:
    """Makes `folder` and everything in it read-only for the test, then writable again."""
    paths = [folder, *folder.rglob("*")]
    for p in paths:
        p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
    try:
        yield folder
    finally:
        for p in paths:
            p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


@pytest.fixture
def copied_run(tiny_run: TinyRun, tmp_path: Path) -> Iterator[Path]:
    """A read-only copy of the trained run folder, away from it and from the data."""
    yield from _read_only(Path(shutil.copytree(tiny_run.run, tmp_path / "copied_run")))


def test_train_stores_the_thresholds_chosen_on_its_validation_images(tiny_run: TinyRun) -> None:
    assert not Path(Config.from_yaml(tiny_run.run / "config.yaml").data.root).exists()
    stored = Thresholds.from_dict(read_checkpoint(tiny_run.run)["extra"][EXTRA_KEY])
    manifest = json.loads((tiny_run.run / "manifest.json").read_text())
    assert stored.n_normal == len(manifest["validation"]) == 1 and stored.n_anomalous == 0
    detector = Detector.load(tiny_run.run, "cpu")
    assert detector.thresholds == stored
    again = validation_thresholds(detector, tiny_run.run, tiny_run.data)  # the same images
    assert again.image == pytest.approx(stored.image, rel=1e-4)
    assert again.pixel == pytest.approx(stored.pixel, rel=1e-4)


def test_predict_right_after_train_takes_the_run_folder(tiny_run: TinyRun, tmp_path: Path) -> None:
    before = _snapshot(tiny_run.run)
    images = tiny_run.data / "test" / "spot"
    args = ["predict", str(images), "--checkpoint", str(tiny_run.run), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "pred")]) == 0
    with (tmp_path / "pred" / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list(images.glob("*.png"))) and all(r["anomalous"] for r in rows)
    assert all(Path(r["mask"]).is_file() for r in rows)
    assert _snapshot(tiny_run.run) == before


def test_predict_export_and_evaluate_leave_a_read_only_copy_unchanged(
    copied_run: Path, tiny_run: TinyRun, tmp_path: Path
) -> None:
    before = _snapshot(copied_run)
    images = str(tiny_run.data / "test" / "good")
    for i, checkpoint in enumerate([copied_run, copied_run / "checkpoint.pt"]):
        out = tmp_path / f"pred{i}"
        assert main(["predict", images, "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
        assert "normalised_score" in (out / "scores.csv").read_text().splitlines()[0]
    model = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(copied_run), "--out", str(model)]) == 0
    stored = read_checkpoint(copied_run)["extra"][EXTRA_KEY]
    assert json.loads(model.with_suffix(".json").read_text())["thresholds"] == stored
    eval_args = ["--data", str(tiny_run.data), "--out", str(tmp_path / "eval"), "--no-heatmaps"]
    assert main(["evaluate", "--checkpoint", str(copied_run), *eval_args]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["thresholds"] == stored
    assert _snapshot(copied_run) == before


def _without_thresholds(run: Path, folder: Path) -> Path:
    """A copy of `run` whose checkpoint holds no thresholds, as trained before train chose them."""
    old = Path(shutil.copytree(run, folder))
    payload = torch.load(old / "checkpoint.pt", weights_only=True)
    payload["extra"] = {}
    torch.save(payload, old / "checkpoint.pt")
    return old


def test_an_old_run_without_thresholds_scores_without_decisions_and_stays_unchanged(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    old = _without_thresholds(tiny_run.run, tmp_path / "old")
    before = _snapshot(old)
    images = tiny_run.data / "test" / "spot"
    with pytest.warns(UserWarning, match="no decision thresholds"):
        rows = predict(old, [images], tmp_path / "pred", device="cpu")
    assert rows and all(set(r) == {"image", "score", "heatmap"} for r in rows)
    (prediction,) = Detector.load(old, "cpu").predict([next(images.glob("*.png"))])
    assert prediction.normalised_score is prediction.anomalous is prediction.mask is None
    assert np.isfinite(prediction.anomaly_map).all()
    result = evaluate(old, tmp_path / "eval", tiny_run.data, device="cpu", heatmaps=False)
    stored = read_checkpoint(tiny_run.run)["extra"][EXTRA_KEY]
    assert result["thresholds"]["image"] == pytest.approx(stored["image"], rel=1e-4)  # in memory
    assert _snapshot(old) == before and read_checkpoint(old)["extra"] == {}
