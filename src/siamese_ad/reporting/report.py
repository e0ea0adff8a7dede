"""Assembles the HTML reports: one per evaluated checkpoint, one per benchmark run.

Figures go to <out>/report_files/, the page to <out>/report.html; every link is relative, so the
folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamese_ad import metrics
from siamese_ad.evaluation.evaluate import (
    COUNT_COLUMNS,
    METRIC_COLUMNS,
    PRO_LIMIT,
    PixelCurves,
    pixel_curves,
)
from siamese_ad.io import atomic_write_text
from siamese_ad.reporting.html import (
    FIGURES,
    REPORT,
    figure,
    fmt,
    gallery_order,
    page,
    relative,
    table,
    url,
)
from siamese_ad.reporting.plots import plot_curves, plot_histogram

if TYPE_CHECKING:
    from siamese_ad.data.dataset import ImageSet
    from siamese_ad.evaluation.inference import Inference
    from siamese_ad.evaluation.thresholds import Thresholds

THRESHOLD_COLUMNS = (
    ("image", "image threshold"),
    ("image_method", "image method"),
    ("pixel", "pixel threshold"),
    ("pixel_method", "pixel method"),
    ("n_normal", "normal validation images"),
    ("n_anomalous", "anomalous validation images"),
)
KIND_CAPTION = {"fp": "false positive", "fn": "false negative", "ok": "correct"}


def _curves(
    images: ImageSet, inference: Inference, fig_dir: Path, pixel: PixelCurves | None
) -> list[tuple[Path, str]]:
    """ROC (image and pixel) and PRO figures, where both classes are present; `pixel` are the
    pixel curves when already computed."""
    labels = images.labels.numpy()
    out = []
    if len(np.unique(labels)) == 2:
        curves = {"image score": metrics.roc_points(inference.scores, labels)}
        curves["max of map"] = metrics.roc_points(inference.scores_max, labels)
        if inference.scores_deviation is not None:
            curves["deviation"] = metrics.roc_points(inference.scores_deviation, labels)
        pixel = pixel or pixel_curves(inference, images)
        if pixel is not None:
            curves["pixel"] = pixel.roc
            path = plot_curves(
                {"PRO": pixel.pro}, fig_dir / "pro.png", "PRO curve", "FPR", "PRO", False
            )
            out.append((path, f"per-region overlap up to FPR {PRO_LIMIT}"))
        out.insert(0, (plot_curves(curves, fig_dir / "roc.png", "ROC"), "image and pixel ROC"))
    return out


def _gallery(
    out_dir: Path, images: ImageSet, scores: np.ndarray, threshold: float | None, panels: list
) -> str:
    items = gallery_order(images.labels.numpy(), scores, threshold)
    figures = []
    for item in items:
        sample = images.samples[item.index]
        caption = f"{sample.defect}/{sample.image.name}: score {fmt(float(scores[item.index]))}"
        if threshold is not None:
            caption += f", {KIND_CAPTION[item.kind]} ({fmt(item.margin)} from the threshold)"
        figures.append(figure(relative(panels[item.index], out_dir), caption, item.kind))
    note = "image | ground truth | anomaly map | overlay; errors first, the worst first"
    return f'<h2>Heat maps</h2><p>{note}</p><div class="gallery">{"".join(figures)}</div>'


def write_eval_report(
    out_dir: str | Path,
    result: dict[str, Any],
    images: ImageSet,
    inference: Inference,
    thresholds: Thresholds | None,
    panels: list[Path] | None,
    pixel: PixelCurves | None = None,
) -> Path:
    """Writes out_dir/report.html and its figures for one evaluation; returns the page's path.

    Args:
        result: the metrics of `compute_metrics` (plus training_seconds).
        panels: the heat-map PNG of each image, in the order of `images`, or None.
        pixel: `pixel_curves` of the same inference and images, when already computed.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / FIGURES
    labels = images.labels.numpy()
    scores = inference.scores
    sections = ["<h2>Metrics</h2>", table([result], (*METRIC_COLUMNS, *COUNT_COLUMNS))]
    threshold = None
    if thresholds is not None:
        threshold = thresholds.image
        sections += ["<h2>Thresholds (validation)</h2>"]
        sections.append(table([thresholds.to_dict()], THRESHOLD_COLUMNS, css_class="thresholds"))
    hist = plot_histogram(
        scores[labels == 0], scores[labels == 1], threshold, fig_dir / "scores.png", "test scores"
    )
    figs = [*_curves(images, inference, fig_dir, pixel), (hist, "image scores and threshold")]
    sections.append("<h2>Curves</h2>")
    sections += [figure(relative(path, out_dir), caption) for path, caption in figs]
    if panels:
        sections.append(_gallery(out_dir, images, scores, threshold, panels))
    path = out_dir / REPORT
    atomic_write_text(path, page(f"siamese-ad evaluation: {out_dir.name}", sections))
    return path


def _read_scores(cell_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), scores (N,)) from a cell's scores.csv."""
    with (cell_dir / "scores.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def _cell_figures(out_dir: Path, name: str, cell_dir: Path, fig_dir: Path) -> tuple[str, Any]:
    """A cell's histogram figure and its ROC points (or None with one class)."""
    labels, scores = _read_scores(cell_dir)
    threshold = (json.loads((cell_dir / "metrics.json").read_text()).get("thresholds") or {}).get(
        "image"
    )
    slug = name.replace("/", "_")
    hist = plot_histogram(
        scores[labels == 0], scores[labels == 1], threshold, fig_dir / f"hist_{slug}.png", name
    )
    roc = metrics.roc_points(scores, labels) if len(np.unique(labels)) == 2 else None
    return figure(relative(hist, out_dir), name), roc


def write_benchmark_report(
    out_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    cells: Sequence[tuple[str, str, Path]],
) -> Path:
    """Writes out_dir/report.html: the results table (first cell linking each cell's report),
    image ROC curves per group and a score histogram per cell.

    Args:
        rows: results rows (mean rows have category "mean"), each with its "cell" folder
            relative to out_dir, or None.
        columns: (key, heading) pairs of the table.
        cells: (group, name, folder) of every finished cell; a group is setup[-modality].
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / FIGURES
    links = [
        url(f"{r['cell']}/{REPORT}")
        if r.get("cell") and (out_dir / r["cell"] / REPORT).exists()
        else None
        for r in rows
    ]
    sections = ["<h2>Results</h2>", table(rows, columns, links)]
    hists, rocs = [], {}
    for group, name, cell_dir in cells:
        hist, roc = _cell_figures(out_dir, name, cell_dir, fig_dir)
        hists.append(hist)
        if roc is not None:
            rocs.setdefault(group, {})[name] = roc
    sections.append("<h2>Image ROC curves</h2>")
    for group, curves in rocs.items():
        path = plot_curves(curves, fig_dir / f"roc_{group}.png", f"image ROC, {group}")
        sections.append(figure(relative(path, out_dir), f"image ROC per category, {group}"))
    sections += ["<h2>Test score histograms</h2>", *hists]
    path = out_dir / REPORT
    atomic_write_text(path, page(f"siamese-ad benchmark: {out_dir.name}", sections))
    return path
