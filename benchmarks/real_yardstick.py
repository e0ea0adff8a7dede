"""The real-defects yardstick: a run's held-out normals and a few real defects per type, taken out
of the test split, so that choices can be judged on real defects without reading the test split.

The painted yardsticks (training's defects yardstick, benchmarks/shape_yardstick.py) paint small
defects (0.2-3% of an image) into held-out normals. Three times they disagreed with magnetic_tile's
test split on changes that help its large or long real defects (docs/ablations.md). This yardstick
takes `--per-type` real anomalies of each defect type out of the test split instead (drawn with the
run's seed, so every candidate of a seed meets the same images), adds the run's held-out validation
normals (never trained on), and scores them at each image's own geometry through
`Detector.predict`: image AUROC (the max of the map), pixel AUROC (pixels pooled at each image's
size) and AUPRO (maps and masks at the model's input). It then scores the rest of the test split,
without those images, as `siamese-ad evaluate` does ("rest", reported beside and never chosen by).
For a model trained on a letterboxed copy (benchmarks/letterbox_probe.py), `--copy` letterboxes each
image to the model's input ratio and crops its map back.

    python benchmarks/real_yardstick.py ../shared/datasets/<category> runs/exp/<run> [more runs] \
        [--copy /tmp/pad/<category>] [--per-type 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from letterbox_probe import crop, key, letterbox, original_of, ratio_of, score_test

from siamese_ad import metrics
from siamese_ad.data.dataset import read_category
from siamese_ad.data.decode import open_image, to_rgb_uint8
from siamese_ad.data.images import load_mask
from siamese_ad.data.sample import Sample
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples

SALT = 104_729  # keeps this draw apart from the split's and the painted yardsticks'


def drawn(test: list[Sample], per_type: int, seed: int) -> list[Sample]:
    """`per_type` anomalous test images of each defect type, drawn with `seed`.

    Raises:
        SystemExit: a defect type with `per_type` images or fewer (none would be left to test).
    """
    rng = np.random.default_rng([seed, SALT])
    chosen = []
    for defect in sorted({s.defect for s in test if s.label == 1}):
        pool = sorted((s for s in test if s.defect == defect), key=lambda s: s.image.name)
        if len(pool) <= per_type:
            raise SystemExit(f"defect type {defect!r} has {len(pool)} images; use fewer per type")
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), per_type, replace=False))]
    return chosen


def score_run(
    run: Path, original: Path, copy: Path | None, per_type: int, detector: Detector | None = None
) -> dict:
    """The yardstick's figures for one run, then its test split without the drawn images.

    `detector` (default: the run's, loaded) lets a probe score the run with another scorer.
    """
    detector = detector or Detector.load(run, "cpu")
    size = detector.cfg.data.size_hw
    normals = [Path(s.image) for s in validation_samples(detector)]
    if copy:
        normals = [original_of(p, copy, original) for p in normals]
    anomalies = drawn(read_category(original, "mvtec").test, per_type, detector.cfg.train.seed)
    masks, scores, configured, maps, small_maps, small_masks = [], [], [], [], [], []
    pairs = [(p, None) for p in normals] + [(s.image, s.mask) for s in anomalies]
    for path, mask_path in pairs:
        image = to_rgb_uint8(open_image(path)[0])
        hw = image.shape[:2]
        if copy:
            padded, box = letterbox(image, "symmetric", ratio_of(detector))
            amap = crop(detector.predict([padded])[0].anomaly_map, box)
        else:
            prediction = detector.predict([image])[0]
            amap = torch.as_tensor(prediction.anomaly_map)
            configured.append(prediction.score)
        scores.append(float(amap.max()))
        maps.append(amap.numpy().ravel())
        small_maps.append(F.interpolate(amap[None, None], size=size, mode="bilinear")[0, 0])
        if mask_path is None:  # a normal image: no defect anywhere
            masks.append(np.zeros(hw[0] * hw[1], bool))
            small_masks.append(np.zeros(size, bool))
        else:
            masks.append(load_mask(mask_path, hw, hw, path).numpy().ravel())
            small_masks.append(load_mask(mask_path, size, hw, path).numpy())
    labels = np.r_[np.zeros(len(normals)), np.ones(len(anomalies))].astype(np.int64)
    flat, truth = np.concatenate(maps)[None, None], np.concatenate(masks)[None, None]
    row = {
        "run": run.name,
        "category": original.name,
        "seed": detector.cfg.train.seed,
        "normals": len(normals),
        "anomalies": len(anomalies),
        "real_image": metrics.image_auroc(np.array(scores), labels),
        "real_pixel": metrics.pixel_auroc(flat, truth),
        # the configured image score (after stage 2: deviation or max, as train chose)
        "real_image_configured": metrics.image_auroc(np.array(configured), labels)
        if configured
        else None,
        "real_aupro": metrics.aupro(torch.stack(small_maps).numpy(), np.stack(small_masks)),
    }
    print(
        f"{run.name}: {len(normals)} normals + {len(anomalies)} real anomalies: image AUROC "
        f"{100 * row['real_image']:.2f}, pixel AUROC {100 * row['real_pixel']:.2f}, "
        f"AUPRO {100 * row['real_aupro']:.2f}",
        flush=True,
    )
    drawn_keys = frozenset(key(s.image, original) for s in anomalies)
    rest = score_test(run, original, copy, drawn_keys, detector)
    row.update({f"rest_{name}": value for name, value in rest.items()})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="the category, MVTec AD layout")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--copy", type=Path, help="the letterboxed copy the runs trained on")
    parser.add_argument("--per-type", type=int, default=3, help="real anomalies per defect type")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="mask .* holds values")  # magnetic_tile's masks
    rows = [score_run(run, args.original, args.copy, args.per_type) for run in args.runs]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
