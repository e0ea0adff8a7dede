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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from siamese_ad.app.evaluate import evaluate
from siamese_ad.checkpoint import CHECKPOINT, RGBD_MANIFEST
from siamese_ad.config import Config, ConfigError
from siamese_ad.data.decode import list_folders
from siamese_ad.data.sample import DataError
from siamese_ad.evaluation.evaluate import COUNT_COLUMNS, METRIC_COLUMNS
from siamese_ad.io import atomic_write_text
from siamese_ad.reporting.html import fmt
from siamese_ad.reporting.report import write_benchmark_report
from siamese_ad.training.trainer import train

DATASETS = ("mvtec", "mvtec3d", "folder")
MODALITIES = ("rgb", "depth", "rgbd")
RESULT_COLUMNS = (
    ("category", "category"),
    ("setup", "setup"),
    ("modality", "modality"),
    ("seed", "seed"),
)
RESULT_COLUMNS += (
    *METRIC_COLUMNS,
    *COUNT_COLUMNS,
    ("image_auroc_range", "image AUROC range over seeds"),
)
NUMERIC = tuple(key for key, _ in METRIC_COLUMNS)
COUNTED = {"n_images": "image_auroc", "n_pixel_images": "pixel_auroc"}  # count -> its metric
_SETUP = re.compile(r"^(full|(\d+)shot)(-real(\d+))?(-basic)?$")


@dataclass(frozen=True)
class Setup:
    """What a setup name asks for: `<full|Kshot>[-real<K>][-basic]`.

    Attributes:
        shots: 0 for every normal image, else a seeded choice of that many.
        real_anomalies: real anomalies per defect type moved into training.
        basic: the basic block only (no CPAM, no stage-1 contrast, no stage 2), trained for
            the full method's stage-1 plus stage-2 epochs.
    """

    shots: int
    real_anomalies: int = 0
    basic: bool = False


def parse_setup(setup: str) -> Setup:
    """Setup name -> Setup: "full", "16shot", "full-real2", "full-basic", "16shot-real2-basic"."""
    match = _SETUP.match(setup)
    if not match or match.group(2) == "0":
        raise ConfigError(
            f"setup {setup!r} is not valid; use 'full' or '<k>shot' (e.g. '16shot'), optionally "
            "followed by '-real<K>' (K real anomalies per defect type) and '-basic'"
        )
    shots = int(match.group(2)) if match.group(2) else 0
    return Setup(shots, int(match.group(4) or 0), bool(match.group(5)))


def apply_setup(cfg: Config, setup: Setup) -> None:
    """Sets the data and method fields that `setup` names on cfg, in place."""
    cfg.data.shots, cfg.data.real_anomalies = setup.shots, setup.real_anomalies
    if setup.basic:
        if cfg.deviation.enabled:
            cfg.train.epochs += cfg.deviation.epochs
        cfg.model.cpam = cfg.contrastive.enabled = cfg.deviation.enabled = False


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
        found = [p for p in list_folders(root) if (p / "train").is_dir()]
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


def _mean_of(
    members: list[dict[str, Any]], base: dict[str, Any], over_seeds: bool
) -> dict[str, Any]:
    """The mean of each metric over `members`, and the images behind it: over seeds the count
    they share (the same test images), over categories the sum of the counts of the members
    that have the metric; None where a count is unknown."""
    mean = dict(base)
    for key in NUMERIC:
        values = [r[key] for r in members if r.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    for key, metric in COUNTED.items():
        counts = [r.get(key) for r in members if r.get(metric) is not None]
        if not counts or None in counts or (over_seeds and len(set(counts)) > 1):
            mean[key] = None
        else:
            mean[key] = counts[0] if over_seeds else sum(counts)
    return mean


def seed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (category, setup, modality) run with several seeds: the mean of each metric
    over its seeds (seed "mean") and the range (max - min) of image AUROC."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["category"], row["setup"], row["modality"]), []).append(row)
    out = []
    for (category, setup, modality), members in groups.items():
        if len(members) < 2:
            continue
        base = {"category": category, "setup": setup, "modality": modality, "seed": "mean"}
        row = _mean_of(members, base, over_seeds=True)
        scores = [r["image_auroc"] for r in members if r.get("image_auroc") is not None]
        row["image_auroc_range"] = float(max(scores) - min(scores)) if scores else None
        out.append(row)
    return out


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One "mean" row per (setup, modality): the mean of each metric over its categories (over
    the per-category seed means where a category ran several seeds)."""
    averaged = {(r["category"], r["setup"], r["modality"]) for r in rows if r.get("seed") == "mean"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["category"], row["setup"], row["modality"])
        if key in averaged and row.get("seed") != "mean":
            continue
        groups.setdefault((row["setup"], row["modality"]), []).append(row)
    return [
        _mean_of(
            members, {"category": "mean", "setup": setup, "modality": modality}, over_seeds=False
        )
        for (setup, modality), members in groups.items()
    ]


def write_results(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    """results.json (the rows as given), results.csv and results.md, each written atomically;
    the tables print an absent value (a pixel metric without masks, say) as n/a."""
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2))
    keys = [key for key, _ in RESULT_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: (fmt(None) if r.get(k) is None else r[k]) for k in keys} for r in rows])
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
    seeds: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Runs every cell, then writes results.{csv,json,md} and report.html into out_dir.

    With shard (k, n) this process runs only the cells whose index i satisfies i % n == k, so n
    processes (one per GPU, say) share the work; the results files are written by whichever
    process finds every cell finished (a last run without a shard always does).

    Args:
        categories: "all" or a list of category folder names under data_root.
        setups: setup names (`parse_setup`): "full", "16shot", "full-real2", "full-basic", ...
        modalities: "rgb" and/or "depth" (mvtec3d).
        base_config: training settings; data root, format, shots and modality are set per cell.
        seeds: training seeds; None runs base_config's one seed. With several, every cell runs
            once per seed (in <cell>/seed<k>) and gets a row of seed means and ranges.

    Returns:
        One row per cell and seed (category, setup, modality, seed, metrics, "cell" folder
        relative to out_dir), then the seed-mean rows, then one "mean" row per setup and
        modality.
    """
    out_dir = Path(out_dir)
    parsed = {setup: parse_setup(setup) for setup in setups}
    _check_modalities(modalities, dataset)
    folders = find_categories(data_root, dataset, categories)
    seed_list = list(seeds) if seeds else [base_config.train.seed]
    rows, pending = [], []
    combos = [(f, s, m, k) for f in folders for s in setups for m in modalities for k in seed_list]
    for index, (folder, setup, modality, seed) in enumerate(combos):
        cell = Path(folder.name) / cell_name(setup, modality)
        if len(seed_list) > 1:
            cell = cell / f"seed{seed}"
        mine = index % shard[1] == shard[0]
        if not mine and not (out_dir / cell / "metrics.json").exists():
            pending.append(cell.as_posix())
            continue
        cfg = copy.deepcopy(base_config)
        cfg.data.root, cfg.data.format, cfg.data.modality = str(folder), dataset, modality
        cfg.train.seed = seed
        apply_setup(cfg, parsed[setup])
        tqdm.write(f"benchmark cell {cell}")
        result = run_cell(cfg.validate(), out_dir / cell, heatmaps)
        row = {"category": folder.name, "setup": setup, "modality": modality, "seed": seed}
        row.update({key: result.get(key) for key in (*NUMERIC, *COUNTED)})
        rows.append({**row, "cell": cell.as_posix()})
    if pending:
        tqdm.write(f"{len(pending)} cells belong to other shards and are not finished yet")
        return rows
    rows += seed_rows(rows)
    rows += mean_rows(rows)
    write_results(out_dir, rows)
    cells = [
        (cell_name(r["setup"], r["modality"]), r["cell"], out_dir / r["cell"])
        for r in rows
        if r.get("cell")
    ]
    write_benchmark_report(out_dir, rows, RESULT_COLUMNS, cells)
    return rows
