"""Prints the ablation table of docs/ablations.md from the metrics.json files of a run.

Runs made by benchmarks/ablations.sh.
Usage: python benchmarks/ablation_table.py OUT_DIR [ROW ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = {
    "basic": "basic block (RD, no CPAM)",
    "cpam": "+ CPAM (gated)",
    "cpam-literal": "+ CPAM (literal eq. 5)",
    "stage1": "+ CPAM + stage 1 (contrastive)",
    "full": "full method (+ stage 2), K = 0",
    "full-dev8": "full method, K = 0, 8 stage-2 epochs (not 2)",
    "full-real2": "full method, K = 2 real anomalies per type",
    "16shot": "full method, 16-shot, K = 0",
}
COLUMNS = ("image_auroc_max", "image_auroc_deviation", "pixel_auroc", "aupro")


def cell(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main(out: Path, rows: list[str]) -> None:
    print(
        "| setting | image AUROC (max) | image AUROC (deviation) | pixel AUROC | AUPRO "
        "| training s | test images |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        path = out / row / "eval" / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        values = " | ".join(cell(m.get(key)) for key in COLUMNS)
        print(
            f"| {ROWS.get(row, row)} | {values} | {m['training_seconds']:.0f} | {m['n_images']} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or list(ROWS))
