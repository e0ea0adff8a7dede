"""The side-by-side table of docs/results.md: siamese-ad (seed means and ranges, from `siamese-ad
benchmark --seeds ...` results.json files) beside the peers of `benchmarks/peers.py`, with the
issue-10 targets checked per category.

Usage:
    python benchmarks/results_table.py --ours runs/bench/main/results.json \\
        runs/bench/fewshot/results.json runs/bench/real2/results.json \\
        --basic runs/bench/basic/results.json --peers runs/peers.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

METRICS = ("image_auroc", "pixel_auroc", "aupro")
IMAGE_CAP = 0.995
MT_FLOOR = 0.95


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def seed_summary(rows: list[dict[str, Any]], category: str, setup: str) -> dict[str, Any] | None:
    """The seed-mean row of (category, setup), or its one seed's row; None when absent."""
    found = [r for r in rows if r["category"] == category and r["setup"] == setup]
    means = [r for r in found if r.get("seed") == "mean"]
    if means:
        row = dict(means[0])
        row["seeds"] = len(found) - 1
        return row
    if found:
        return {**found[0], "seeds": 1, "image_auroc_range": None}
    return None


def peer_summary(peers: list[dict[str, Any]], model: str, category: str) -> dict[str, Any] | None:
    found = [r for r in peers if r["model"] == model and r["category"] == category]
    found = [r for r in found if r.get("status", "ok") == "ok"]
    if not found:
        return None
    out: dict[str, Any] = {"seeds": len(found), "train_images": found[0].get("train_images")}
    out["label"] = f"anomalib {model}"
    if found[0].get("backbone", "tf_efficientnet_lite0") != "tf_efficientnet_lite0":
        out["label"] += f" ({found[0]['backbone']}, not our teacher)"
    for key in METRICS:
        out[key] = sum(r[key] for r in found) / len(found)
    return out


def targets(ours: dict[str, Any], basic: dict[str, Any] | None, pc: dict[str, Any] | None,
            category: str) -> list[str]:  # fmt: skip
    """The issue's targets for one category, each as 'name: met|missed (ours vs goal)'."""
    checks = []
    if pc is not None:
        goal = min(pc["image_auroc"] + 0.03, IMAGE_CAP)
        if category == "magnetic_tile":
            goal = max(goal, MT_FLOOR)
        checks.append(("image AUROC", ours["image_auroc"], goal))
        checks.append(("pixel AUROC", ours["pixel_auroc"], pc["pixel_auroc"]))
        checks.append(("AUPRO", ours["aupro"], pc["aupro"]))
    if basic is not None:
        checks.append(("ahead of the basic block", ours["image_auroc"], basic["image_auroc"]))
    out = [
        f"{name} {'met' if a >= b else 'missed'} ({pct(a)} vs {pct(b)})" for name, a, b in checks
    ]
    if ours.get("image_auroc_range") is not None:
        spread = ours["image_auroc_range"]
        out.append(f"seed range {'met' if spread <= 0.03 else 'missed'} ({pct(spread)} vs 3.0)")
    return out


def main(args: argparse.Namespace) -> None:
    ours_rows = [row for path in args.ours for row in json.loads(Path(path).read_text())]
    basic_rows = json.loads(Path(args.basic).read_text()) if args.basic else []
    peers = json.loads(Path(args.peers).read_text())["results"] if args.peers else []
    categories = sorted({r["category"] for r in ours_rows if r["category"] != "mean"})
    setups = list(dict.fromkeys(r["setup"] for r in ours_rows))
    print(
        "| category | method | seeds | image AUROC (mean, range) | pixel AUROC | AUPRO "
        "| training s |"
    )
    print("|---|---|---|---|---|---|---|")
    notes = []
    for category in categories:
        for model in ("patchcore", "rd"):
            peer = peer_summary(peers, model, category)
            if peer is not None:
                print(
                    f"| {category} | {peer['label']} | {peer['seeds']} | "
                    f"{pct(peer['image_auroc'])} | {pct(peer['pixel_auroc'])} | "
                    f"{pct(peer['aupro'])} | |"
                )
        basic = seed_summary(basic_rows, category, "full-basic")
        labelled = [(f"siamese-ad {s}", seed_summary(ours_rows, category, s)) for s in setups]
        labelled.append(("siamese-ad basic block", basic))
        for label, row in labelled:
            if row is None:
                continue
            spread = row.get("image_auroc_range")
            spread_text = "" if spread is None else f" ({pct(spread)})"
            print(
                f"| {category} | {label} | {row['seeds']} | {pct(row['image_auroc'])}{spread_text} "
                f"| {pct(row['pixel_auroc'])} | {pct(row['aupro'])} "
                f"| {row.get('training_seconds') or 0:.0f} |"
            )
        full = seed_summary(ours_rows, category, "full")
        if full is not None:
            checks = targets(full, basic, peer_summary(peers, "patchcore", category), category)
            notes.append(f"- {category}: " + "; ".join(checks))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ours", required=True, nargs="+", help="results.json of the benchmarks (setups)"
    )
    parser.add_argument("--basic", help="results.json of the basic-block benchmark")
    parser.add_argument("--peers", help="JSON written by benchmarks/peers.py")
    main(parser.parse_args())
