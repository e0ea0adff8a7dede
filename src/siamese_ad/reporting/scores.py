"""scores.csv of an evaluation: one row per test image with its scores."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from siamese_ad.io import atomic_write_text

if TYPE_CHECKING:
    from siamese_ad.data.dataset import ImageSet
    from siamese_ad.evaluation.inference import Inference


def write_scores_csv(path: Path, images: ImageSet, inference: Inference) -> None:
    """One row per image: path, defect, label, score, score_max, score_deviation; atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "defect", "label", "score", "score_max", "score_deviation"])
    dev = inference.scores_deviation
    for i, s in enumerate(images.samples):
        writer.writerow(
            [
                s.image.as_posix(),
                s.defect,
                s.label,
                f"{inference.scores[i]:.6g}",
                f"{inference.scores_max[i]:.6g}",
                "" if dev is None else f"{dev[i]:.6g}",
            ]
        )
    atomic_write_text(path, buffer.getvalue())
