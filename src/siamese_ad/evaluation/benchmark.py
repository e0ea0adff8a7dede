"""`run_benchmark`: trains and evaluates every category x setup x modality cell, resumably.

Layout of `out_dir`::

    <category>/<setup>[-<modality>]/   one cell: checkpoint.pt, config.yaml, manifest.json,
                                       metrics.json (written last: the cell is finished),
                                       scores.csv, heatmaps/, report.html
    results.csv, results.json, results.md, report.html, report_files/

A cell whose metrics.json exists is skipped; an interrupted cell resumes its checkpoint.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from siamese_ad.config import Config, ConfigError
from siamese_ad.data.sample import DataError
from siamese_ad.evaluation.evaluate import METRIC_COLUMNS, atomic_write_text, evaluate
from siamese_ad.training.multimodal import RGBD_MANIFEST
from siamese_ad.training.trainer import CHECKPOINT, train

DATASETS = ("mvtec", "mvtec3d", "folder")
MODALITIES = ("rgb", "depth", "rgbd")
RESULT_COLUMNS = (("category", "category"), ("setup", "setup"), ("modality", "modality"))
RESULT_COLUMNS += METRIC_COLUMNS
NUMERIC = tuple(key for key, _ in METRIC_COLUMNS)
_SHOT = re.compile(r"^(\d+)shot$")


def parse_setup(setup: str) -> int:
    """Setup name -> shots: "full" -> 0 (every normal image), "<k>shot" -> k (k > 0)."""
    if setup == "full":
        return 0
    match = _SHOT.match(setup)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"setup {setup!r} is not valid; use 'full' or '<k>shot', e.g. '16shot'")
    return int(match.group(1))


def find_categories(
    data_root: str | Path, dataset: str, categories: str | Sequence[str]
) -> list[Path]:
    """The category folders to run: all (those holding train/) or the named ones.

    For `folder`, data_root itself is the only category.
    """
    root = Path(data_root)
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is not valid; choose one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    if dataset == "folder":
        if categories not in ("all", [root.name], (root.name,)):
            raise ConfigError(f"a folder data set is one category ({root.name}); use 'all'")
        return [root]
    if categories == "all":
        found = sorted(p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())
        if not found:
            raise DataError(f"{root} holds no category folder with a train/ folder inside")
        return found
    missing = [c for c in categories if not (root / c).is_dir()]
    if missing:
        raise DataError(f"categories {missing} are not folders under {root}")
    return [root / c for c in categories]


def parse_shard(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N) with 0 <= K < N: this process runs every N-th cell, starting at K."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise ConfigError(f"shard {text!r}: write K/N with 0 <= K < N, e.g. 0/2 and 1/2")
    return k, n


def cell_name(setup: str, modality: str) -> str:
    return setup if modality == "rgb" else f"{setup}-{modality}"


def _check_modalities(modalities: Sequence[str], dataset: str) -> None:
    for modality in modalities:
        if modality not in MODALITIES:
            raise ConfigError(f"modality {modality!r}: choose from {', '.join(MODALITIES)}")
        if modality != "rgb" and dataset != "mvtec3d":
            raise ConfigError(f"modality {modality} needs dataset mvtec3d (point clouds)")


def run_cell(cfg: Config, cell_dir: Path, heatmaps: bool = True) -> dict[str, Any]:
    """Trains (or resumes) and evaluates one cell; returns its metrics, read back when finished."""
    metrics_path = cell_dir / "metrics.json"
    if metrics_path.exists():
        tqdm.write(f"{cell_dir}: finished, skipped")
        return json.loads(metrics_path.read_text())
    started = (cell_dir / CHECKPOINT).exists() or (cell_dir / RGBD_MANIFEST).exists()
    checkpoint = train(cfg, cell_dir, resume=started)
    return evaluate(checkpoint, cell_dir, device=cfg.train.device, heatmaps=heatmaps)


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One "mean" row per (setup, modality): the mean of each metric over its categories."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["setup"], row["modality"]), []).append(row)
    means = []
    for (setup, modality), members in groups.items():
        mean: dict[str, Any] = {"category": "mean", "setup": setup, "modality": modality}
        for key in NUMERIC:
            values = [r[key] for r in members if r.get(key) is not None]
            mean[key] = float(np.mean(values)) if values else None
        means.append(mean)
    return means


def write_results(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """results.json (the rows as given), results.csv and results.md, each written atomically."""
    from siamese_ad.reporting.html import fmt

    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2))
    keys = [key for key, _ in RESULT_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if r.get(k) is None else r[k]) for k in keys} for r in rows])
    atomic_write_text(out_dir / "results.csv", buffer.getvalue())
    lines = [
        "| " + " | ".join(title for _, title in RESULT_COLUMNS) + " |",
        "|" + "---|" * len(RESULT_COLUMNS),
    ]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")


def run_benchmark(
    data_root: str | Path,
    dataset: str,
    categories: str | Sequence[str],
    setups: Sequence[str],
    modalities: Sequence[str],
    out_dir: str | Path,
    base_config: Config,
    heatmaps: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> list[dict[str, Any]]:
    """Runs every cell, then writes results.{csv,json,md} and report.html into out_dir.

    With shard (k, n) this process runs only the cells whose index i satisfies i % n == k, so n
    processes (one per GPU, say) share the work; the results files are written by whichever
    process finds every cell finished (a last run without a shard always does).

    Args:
        categories: "all" or a list of category folder names under data_root.
        setups: "full" and/or "<k>shot".
        modalities: "rgb" and/or "depth" (mvtec3d).
        base_config: training settings; data root, format, shots and modality are set per cell.

    Returns:
        One row per cell (category, setup, modality, metrics, "cell" folder relative to
        out_dir), then one "mean" row per setup and modality.
    """
    out_dir = Path(out_dir)
    shots = {setup: parse_setup(setup) for setup in setups}
    _check_modalities(modalities, dataset)
    folders = find_categories(data_root, dataset, categories)
    rows, pending = [], []
    combos = [(f, s, m) for f in folders for s in setups for m in modalities]
    for index, (folder, setup, modality) in enumerate(combos):
        cell = Path(folder.name) / cell_name(setup, modality)
        mine = index % shard[1] == shard[0]
        if not mine and not (out_dir / cell / "metrics.json").exists():
            pending.append(cell.as_posix())
            continue
        cfg = copy.deepcopy(base_config)
        cfg.data.root, cfg.data.format = str(folder), dataset
        cfg.data.shots, cfg.data.modality = shots[setup], modality
        tqdm.write(f"benchmark cell {cell}")
        result = run_cell(cfg.validate(), out_dir / cell, heatmaps)
        row = {"category": folder.name, "setup": setup, "modality": modality}
        row.update({key: result.get(key) for key in NUMERIC})
        rows.append({**row, "cell": cell.as_posix()})
    if pending:
        tqdm.write(f"{len(pending)} cells belong to other shards and are not finished yet")
        return rows
    rows += mean_rows(rows)
    write_results(out_dir, rows)
    from siamese_ad.reporting.report import write_benchmark_report

    cells = [
        (cell_name(r["setup"], r["modality"]), r["cell"], out_dir / r["cell"])
        for r in rows
        if r.get("cell")
    ]
    write_benchmark_report(out_dir, rows, RESULT_COLUMNS, cells)
    return rows
