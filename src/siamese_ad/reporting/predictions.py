"""What `predict` writes: scores.csv, one heat-map PNG per image, maps.npy (torch-free)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from siamese_ad.io import atomic_write, atomic_write_text
from siamese_ad.reporting.heatmaps import colour_range, panel, save_pngs


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Writes `rows` as CSV to `path`, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_predictions(
    out_dir: str | Path,
    paths: list[Path],
    images: np.ndarray,
    maps: np.ndarray,
    scores: np.ndarray,
    extra: dict[str, np.ndarray] | None = None,
) -> list[dict]:
    """Writes scores.csv, heatmaps/NNNNN_<stem>.png and maps.npy (float16); returns the rows.

    Args:
        out_dir: results folder (created).
        paths: the N scored image files, in order.
        images: (N, H, W, 3) uint8 pictures as the model saw them.
        maps: (N, H, W) anomaly maps.
        scores: (N,) image scores.
        extra: more per-image columns for scores.csv, each (N,), e.g. a decision.
    """
    out_dir = Path(out_dir)
    heat_dir = out_dir / "heatmaps"
    heat_dir.mkdir(parents=True, exist_ok=True)
    vmin, vmax = colour_range(maps)
    heatmaps = [heat_dir / f"{i:05d}_{path.stem}.png" for i, path in enumerate(paths)]
    save_pngs(
        (heatmap, lambda i=i: panel(images[i], maps[i], vmin, vmax, None))
        for i, heatmap in enumerate(heatmaps)
    )
    rows = []
    for i, (path, heatmap) in enumerate(zip(paths, heatmaps, strict=True)):
        row = {"image": path.as_posix(), "score": float(scores[i]), "heatmap": heatmap.as_posix()}
        for name, values in (extra or {}).items():
            row[name] = values[i].item()
        rows.append(row)
    _write_csv(out_dir / "scores.csv", rows)
    half = maps.astype(np.float16)
    atomic_write(out_dir / "maps.npy", lambda fh: np.save(fh, half))
    return rows


def write_masks(paths: list[Path], masks: np.ndarray) -> None:
    """(N, H, W) bool -> one 0/255 grey PNG per mask at `paths`, each written atomically."""
    save_pngs(
        (path, lambda m=m: m.astype(np.uint8) * 255) for path, m in zip(paths, masks, strict=True)
    )


def mask_paths(out_dir: str | Path, paths: list[Path]) -> list[Path]:
    """Where predict writes the decision masks: heatmaps/NNNNN_<stem>_mask.png."""
    return [Path(out_dir) / "heatmaps" / f"{i:05d}_{p.stem}_mask.png" for i, p in enumerate(paths)]
