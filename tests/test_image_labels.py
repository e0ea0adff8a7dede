"""Defective test images without masks: image metrics use them, pixel metrics are n/a or
computed on the images whose pixel truth is known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_DEFECTS, TINY_TEST_DEFECT, TINY_TEST_GOOD, TinyRun

from siamese_ad.app.evaluate import evaluate

N_DEFECTIVE = len(TINY_DEFECTS) * TINY_TEST_DEFECT


def _evaluate_without(tiny_run: TinyRun, tmp_path: Path, masks: list[Path]) -> dict:
    data = shutil.copytree(tiny_run.data, tmp_path / "data")
    for mask in masks:
        (data / mask).unlink()
    with pytest.warns(UserWarning, match=f"{len(masks)} of {N_DEFECTIVE} defective test images"):
        evaluate(tiny_run.run, tmp_path / "eval", data_root=data, device="cpu", heatmaps=False)
    return json.loads((tmp_path / "eval" / "metrics.json").read_text())


def _masks(tiny_run: TinyRun) -> list[Path]:
    return sorted(p.relative_to(tiny_run.data) for p in tiny_run.data.glob("ground_truth/*/*"))


def test_some_masks_missing_pixel_metrics_use_the_rest(tiny_run: TinyRun, tmp_path: Path) -> None:
    result = _evaluate_without(tiny_run, tmp_path, _masks(tiny_run)[:1])
    assert result["n_images"] == TINY_TEST_GOOD + N_DEFECTIVE
    assert result["n_pixel_images"] == TINY_TEST_GOOD + N_DEFECTIVE - 1
    assert result["image_auroc"] is not None
    assert 0.0 <= result["pixel_auroc"] <= 1.0 and 0.0 <= result["aupro"] <= 1.0


def test_no_masks_pixel_metrics_are_not_available(tiny_run: TinyRun, tmp_path: Path) -> None:
    masks = _masks(tiny_run)
    assert len(masks) == N_DEFECTIVE
    result = _evaluate_without(tiny_run, tmp_path, masks)
    assert result["pixel_auroc"] is None and result["aupro"] is None
    assert result["image_auroc"] is not None and result["n_images"] == TINY_TEST_GOOD + N_DEFECTIVE
    assert result["n_pixel_images"] == TINY_TEST_GOOD
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("n/a") >= 2
