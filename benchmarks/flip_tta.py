"""Flip test-time augmentation, scored on the defects yardstick (and optionally the test split).

Each image's per-stage (1 - cos) maps, divided by the stage means as `scoring.map_norm: mean` does,
are averaged over the image and its flips (each map flipped back) before the map is made (the map
is linear in them, so this equals averaging the finished maps). Variants: none, h (+ horizontal
flip), hv (+ vertical), hv4 (all four flips). Image score: the max of the map.

    python benchmarks/flip_tta.py runs/exp/<run> [more runs] [--test] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from stage_weights import stage_maps, weighted_map, yardstick_and_test

from siamese_ad import metrics
from siamese_ad.evaluation.inference import Detector

VARIANTS: dict[str, list[tuple[int, ...]]] = {
    "none": [()],
    "h": [(), (-1,)],
    "hv": [(), (-1,), (-2,)],
    "hv4": [(), (-1,), (-2,), (-2, -1)],
}


def flipped_maps(detector: Detector, images: torch.Tensor) -> dict[tuple[int, ...], list]:
    """Flip dims -> per stage (N, h_i, w_i) normalised maps of the flipped images, flipped back."""
    out = {}
    for dims in {d for flips in VARIANTS.values() for d in flips}:
        maps = stage_maps(detector, images.flip(dims) if dims else images)
        out[dims] = [m.flip(dims) if dims else m for m in maps]
    return out


def score_run(run: Path, test: bool) -> dict[str, dict]:
    detector = Detector.load(run, "cpu")
    cfg = detector.cfg
    size = cfg.data.size_hw
    vset, images = yardstick_and_test(detector, run, test)
    splits = {"val": (vset.images, vset.labels, vset.masks.numpy())}
    if images is not None:
        splits["test"] = (images.images, images.labels.numpy(), images.masks.numpy())
    rows: dict[str, dict] = {
        name: {
            "category": Path(cfg.data.root).name,
            "n_val_normals": float((vset.labels == 0).sum()),
        }
        for name in VARIANTS
    }
    for split, (images, labels, masks) in splits.items():
        per_flip = flipped_maps(detector, images)
        for name, flips in VARIANTS.items():
            stages = range(len(per_flip[()]))
            dists = [torch.stack([per_flip[d][i] for d in flips]).mean(0) for i in stages]
            amap = weighted_map(dists, (1.0,) * len(dists), size, cfg.scoring.sigma)
            scores = amap.reshape(len(amap), -1).max(1)
            rows[name][f"{split}_image"] = metrics.image_auroc(scores, labels)
            rows[name][f"{split}_pixel"] = metrics.pixel_auroc(amap, masks)
    for name, row in rows.items():
        shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
        print(f"{run.name:>24} {name:<5} {shown}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--test", action="store_true", help="also score the test split")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    table = {str(run): score_run(run, args.test) for run in args.runs}
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
