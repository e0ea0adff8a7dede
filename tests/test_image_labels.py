"""Defective test images without masks: image metrics use them, pixel metrics are n/a or
computed on the images whose pixel truth is known."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY_DEFECTS, TINY_TEST_DEFECT, TINY_TEST_GOOD, TinyRun, make_tiny_config

from siamese_ad.app.benchmark import RESULT_COLUMNS, run_benchmark
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


def _cells(html: str) -> dict[str, str]:
    """The report's table cells by their data-key (the first of each key)."""
    found: dict[str, str] = {}
    for key, text in re.findall(r'data-key="(\w+)">([^<]*)<', html):
        found.setdefault(key, text)
    return found


def test_report_says_n_a_and_how_many_images_each_metric_used(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    _evaluate_without(tiny_run, tmp_path, _masks(tiny_run))
    cells = _cells((tmp_path / "eval" / "report.html").read_text())
    assert cells["pixel_auroc"] == cells["aupro"] == "n/a"
    assert 0.0 <= float(cells["image_auroc"]) <= 1.0
    assert cells["n_images"] == str(TINY_TEST_GOOD + N_DEFECTIVE)
    assert cells["n_pixel_images"] == str(TINY_TEST_GOOD)


def test_benchmark_tables_say_n_a_and_how_many_images_each_metric_used(
    tiny_category: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(tiny_category, tmp_path / "data" / tiny_category.name)
    for mask in data.glob("ground_truth/*/*"):
        mask.unlink()
    out = tmp_path / "bench"
    with pytest.warns(UserWarning, match=f"{N_DEFECTIVE} of {N_DEFECTIVE} defective test images"):
        run_benchmark(data.parent, "mvtec", "all", ["full"], ["rgb"], out, make_tiny_config(""))
    key_of = {title: key for key, title in RESULT_COLUMNS}
    lines = [
        line.strip("| ").split(" | ") for line in (out / "results.md").read_text().splitlines()
    ]
    md_rows = [dict(zip(map(key_of.get, lines[0]), line, strict=True)) for line in lines[2:]]
    with (out / "results.csv").open(newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    for cell, mean in (md_rows, csv_rows):
        assert cell["pixel_auroc"] == cell["aupro"] == "n/a"
        assert 0.0 <= float(cell["image_auroc"]) <= 1.0
        assert cell["n_images"] == mean["n_images"] == str(TINY_TEST_GOOD + N_DEFECTIVE)
        assert cell["n_pixel_images"] == str(TINY_TEST_GOOD)
        assert mean["n_pixel_images"] == "n/a"  # no category has pixel metrics to average
