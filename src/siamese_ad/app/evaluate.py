"""`evaluate`: scores a run on test images it never trained on, and writes the results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from siamese_ad.checkpoint import find_rgbd_manifest
from siamese_ad.evaluation.evaluate import Evaluation, evaluate_run
from siamese_ad.evaluation.fusion import evaluate_rgbd
from siamese_ad.io import atomic_write_text
from siamese_ad.reporting.heatmaps import write_panels
from siamese_ad.reporting.report import write_eval_report
from siamese_ad.reporting.scores import write_scores_csv


def default_out(checkpoint: str | Path) -> Path:
    """Where evaluate writes when no --out is given: <run folder>/eval."""
    run_dir = Path(checkpoint)
    return (run_dir if run_dir.is_dir() else run_dir.parent) / "eval"


def evaluate(
    checkpoint: str | Path,
    out_dir: str | Path,
    data_root: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    heatmaps: bool = True,
    compile: bool = False,
) -> dict[str, Any]:
    """Scores the test split of the checkpoint's category (or `data_root`) and writes
    metrics.json, scores.csv, report.html and, when `heatmaps`, one PNG panel per test image
    under heatmaps/; returns the metrics.

    `checkpoint` is a checkpoint.pt or a run folder (train's --out), only read. An rgbd run (its
    folder or its rgbd.json) is scored by both branches, fused (evaluation/fusion.py). `compile`
    runs the scorer through torch.compile (evaluation/inference.py's Detector).
    """
    rgbd = find_rgbd_manifest(checkpoint)
    if rgbd is not None:
        scored = evaluate_rgbd(rgbd, data_root, device, batch_size, compile)
    else:
        scored = evaluate_run(checkpoint, data_root, device, batch_size, compile)
    write_results(Path(out_dir), scored, heatmaps)
    return scored.result


def write_results(out_dir: Path, scored: Evaluation, heatmaps: bool) -> None:
    """scores.csv, heatmaps/, report.html, then metrics.json: written last, it marks a finished
    evaluation."""
    images, inference = scored.images, scored.inference
    write_scores_csv(out_dir / "scores.csv", images, inference)
    panels = write_panels(out_dir / "heatmaps", images, inference.maps) if heatmaps else None
    write_eval_report(
        out_dir, scored.result, images, inference, scored.thresholds, panels, scored.curves
    )
    atomic_write_text(out_dir / "metrics.json", json.dumps(scored.result, indent=2))
