"""Stage weights of the anomaly map, chosen on the defects yardstick, the test split beside it.

The map is the sum over the teacher's stages of each stage's (1 - cos) map divided by its mean over
the held-out normals (`scoring.map_norm: mean`), upsampled and blurred (eq. 2). Here stage i's
term is also multiplied by a weight w_i, and each candidate weighting is scored from one forward
pass per image: on the run's validation images with one defect painted into each (the defects
yardstick at the model's input, as train makes it) and on the test split (reported, never chosen
by). The image score is the max of the map (the `cpu` preset has no stage 2).

The summary weights each category's seed mean by its number of validation normals, so a category
with 6 validation images counts for less than one with 76.

    python benchmarks/stage_weights.py runs/exp/<run> [more runs] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from siamese_ad import metrics
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.modality import image_loader
from siamese_ad.data.splits import SplitManifest, exclude_trained
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples
from siamese_ad.scoring import GaussianBlur, combine_stages, stage_distances
from siamese_ad.training.validation import make_validation_set

# candidate weights of the stages, shallowest first (Lite0's stages 2, 4, 5: strides 8, 16, 32)
CANDIDATES = {
    "W0 (1,1,1)": (1.0, 1.0, 1.0),
    "W1 (1,1,2)": (1.0, 1.0, 2.0),
    "W2 (1,1,4)": (1.0, 1.0, 4.0),
    "W3 (0,1,1)": (0.0, 1.0, 1.0),
    "W4 (0,1,2)": (0.0, 1.0, 2.0),
    "W5 (0,0,1)": (0.0, 0.0, 1.0),
}
PRO_LIMIT = 0.3


@torch.inference_mode()
def stage_maps(detector: Detector, images: torch.Tensor) -> list[torch.Tensor]:
    """(N, 3, H, W) uint8 -> per stage (N, h_i, w_i) (1 - cos) maps divided by the stage mean."""
    scorer, cfg = detector.scorer, detector.cfg
    scale = scorer.map_scale()
    parts = [
        [
            d.float().cpu()
            for d in stage_distances(
                scorer.model(to_device(chunk, detector.device, cfg.train.channels_last))
            )
        ]
        for chunk in images.split(cfg.train.batch_size)
    ]
    maps = [torch.cat(stage) for stage in zip(*parts, strict=True)]
    return maps if scale is None else [m / s for m, s in zip(maps, scale.tolist(), strict=True)]


def weighted_map(dists: list[torch.Tensor], weights: tuple[float, ...], size, sigma: float):
    """Sum of w_i * d_i upsampled to size, blurred -> (N, H, W) float32 numpy."""
    terms = [w * d for d, w in zip(dists, weights, strict=True) if w != 0]
    return combine_stages(terms, size, GaussianBlur(sigma)).numpy()


def yardstick_and_test(detector: Detector, run: Path, test: bool = True):
    """The run's defects yardstick (validation normals, one defect painted into each) and, if
    asked, its test split minus any trained-on images -> (ValidationSet, LoadedImages | None)."""
    cfg = detector.cfg
    loader = image_loader(cfg.data, run)
    normals = load_images(
        validation_samples(detector), cfg.data.size_hw, loader, "validation images"
    )
    vset = make_validation_set(normals.images, cfg, None, "defects")
    if not test:
        return vset, None
    data = read_category(cfg.data.root, cfg.data.format)
    manifest = SplitManifest.from_dict(detector.payload["manifest"])
    kept = exclude_trained(data.test, manifest, data.root)
    return vset, load_images(kept, cfg.data.size_hw, loader, "test")


def score_run(run: Path, aupro: bool) -> dict[str, dict[str, float]]:
    detector = Detector.load(run, "cpu")
    cfg = detector.cfg
    size = cfg.data.size_hw
    vset, test = yardstick_and_test(detector, run)
    splits = {
        "val": (stage_maps(detector, vset.images), vset.labels, vset.masks.numpy()),
        "test": (stage_maps(detector, test.images), test.labels.numpy(), test.masks.numpy()),
    }
    rows = {}
    category = Path(cfg.data.root).name
    for name, weights in CANDIDATES.items():
        row: dict = {"category": category, "n_val_normals": float((vset.labels == 0).sum())}
        for split, (dists, labels, masks) in splits.items():
            amap = weighted_map(dists, weights, size, cfg.scoring.sigma)
            row[f"{split}_image"] = metrics.image_auroc(amap.reshape(len(amap), -1).max(1), labels)
            row[f"{split}_pixel"] = metrics.pixel_auroc(amap, masks)
            if aupro and split == "test":
                row["test_aupro"] = metrics.aupro(amap, masks, PRO_LIMIT)
        rows[name] = row
        shown = " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
        print(f"{run.name:>24} {name:<12} {shown}", flush=True)
    return rows


def summary(
    table: dict[str, dict[str, dict]],
    names: tuple[str, ...] = tuple(CANDIDATES),
    label: str = "weights",
) -> None:
    """Per category seed means of each candidate in `names` (the keys of a run's rows), then the
    validation-size-weighted mean over categories."""
    by_cat: dict[str, list[str]] = defaultdict(list)
    for run, rows in table.items():
        by_cat[next(iter(rows.values()))["category"]].append(run)
    keys = ["val_image", "val_pixel", "test_image", "test_pixel", "test_aupro"]
    print(
        f"| {label} | "
        + " | ".join(by_cat)
        + " | weighted val image / pixel |\n"
        + "(per category: val image / val pixel / test image / test pixel [/ test AUPRO], %)"
    )
    for name in names:
        cells, wsum, acc = [], 0.0, np.zeros(2)
        for runs in by_cat.values():
            rows = [table[r][name] for r in runs]
            mean = {k: np.mean([r[k] for r in rows]) * 100 for k in keys if k in rows[0]}
            cells.append(" / ".join(f"{mean[k]:.1f}" for k in keys if k in mean))
            w = np.mean([r["n_val_normals"] for r in rows])
            acc += w * np.array([mean["val_image"], mean["val_pixel"]])
            wsum += w
        acc /= wsum
        print(f"| {name} | " + " | ".join(cells) + f" | {acc[0]:.2f} / {acc[1]:.2f} |")


def main(
    score: Callable[[Path, bool], dict[str, dict]] = score_run,
    names: tuple[str, ...] = tuple(CANDIDATES),
    label: str = "weights",
    doc: str = __doc__,
) -> None:
    """The command line: score each run (`score(run, aupro)`), print the summary, write JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-aupro", action="store_true", help="skip the test AUPRO (faster)")
    args = parser.parse_args()
    table = {str(run): score(run, not args.no_aupro) for run in args.runs}
    summary(table, names, label)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
