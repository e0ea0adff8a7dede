"""Prints one row per run folder: the validation signal (what settings are chosen by) beside the
test metrics (reported, never chosen by), with the training time.

The validation signal is the mean over the last two epochs of the final stage of the image AUROC
(the deviation score after stage 2, else max of map) and pixel AUROC on held-out normal images
plus synthetic anomalies made from them (training/validation.py), for each yardstick: "blend"
(patches of other normal images, as training makes them) and "defects" (scratches, stains and
noise patches, which training never sees; n/a for runs trained before it existed).

Usage: python benchmarks/lever_table.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from siamese_ad.checkpoint import read_checkpoint


def validation_signal(
    history: list[dict], prefix: str = "val_"
) -> tuple[float | None, float | None]:
    """Mean validation image and pixel AUROC over the last two epochs of the final stage, on
    the yardstick whose history keys start with `prefix` ("val_": blend; "val_defects_")."""
    if not history:
        return None, None
    last = [h for h in history if h["stage"] == history[-1]["stage"]][-2:]
    key = f"{prefix}image_auroc_deviation"
    key = key if key in last[-1] else f"{prefix}image_auroc_max"
    images = [h[key] for h in last if key in h]
    pixels = [h[f"{prefix}pixel_auroc"] for h in last if f"{prefix}pixel_auroc" in h]
    return _mean(images), _mean(pixels)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main(runs: list[Path]) -> None:
    print(
        "| run | val image AUROC | val pixel AUROC | val defects image | val defects pixel "
        "| image AUROC | image AUROC (max) | pixel AUROC | AUPRO | training s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        metrics_path = run / "eval" / "metrics.json"
        if not metrics_path.exists():
            continue
        m = json.loads(metrics_path.read_text())
        history = read_checkpoint(run / "checkpoint.pt")["state"]["history"]
        val_image, val_pixel = validation_signal(history)
        defects_image, defects_pixel = validation_signal(history, "val_defects_")
        seconds = sum(h["seconds"] for h in history)
        print(
            f"| {run.name} | {pct(val_image)} | {pct(val_pixel)} | {pct(defects_image)} "
            f"| {pct(defects_pixel)} | {pct(m.get('image_auroc'))} "
            f"| {pct(m.get('image_auroc_max'))} | {pct(m.get('pixel_auroc'))} "
            f"| {pct(m.get('aupro'))} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
