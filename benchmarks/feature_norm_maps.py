"""Maps of a model trained with model.feature_norm "channel", judged on the real-defects yardstick.

Such a model's student restores the teacher's features standardised per channel, (T - m) / s, and
its map compares the two there ("standardised", the map as built). Its student's output also
implies raw features, S * s + m, which can be compared with the teacher's raw features T as the
map of a model without feature_norm does ("raw"): 1 - cos(T, S * s + m) per pixel, with no
training (with train.raw_distill the student was also trained to restore those). A third map,
"sum", adds the two, each stage divided by its mean over the held-out normals. This probe scores
each run all three ways through benchmarks/real_yardstick.py (its
real-defects yardstick, then the rest of its test split, reported and never chosen by); each
variant's per-stage means (scoring.map_norm "mean") come from the run's held-out normals, as
train takes them. A candidate that takes the image score from one map and the heat map from another
reads its figures off their rows.

    python benchmarks/feature_norm_maps.py ../shared/datasets/<category> runs/exp/<run> \
        [more runs] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from map_window import WindowScorer, normal_means
from real_yardstick import score_run

from siamese_ad.data.images import load_image
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples
from siamese_ad.metrics import image_auroc
from siamese_ad.models.unet import FeaturePair
from siamese_ad.scoring import AnomalyScorer, stage_distances
from siamese_ad.training.trainer import FINAL_VALIDATION_KEY
from siamese_ad.training.validation import make_validation_set

VARIANTS = ("standardised", "raw", "sum")


class FeatureNormScorer(WindowScorer):
    """The preset's scorer (no stage 2) on standardised or on de-standardised features."""

    def __init__(self, base: AnomalyScorer, variant: str, means: torch.Tensor) -> None:
        super().__init__(base, 1, means)
        self.variant = variant

    def distances(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's (B, h, w) map: of the standardised features, of the raw ones, or both
        (2n maps, "sum": their per-stage means make each half count alike)."""
        pair = self.model(images)
        raw = FeaturePair(*map(self.model.raw_features, (pair.teacher, pair.student)))
        chosen = {"standardised": [pair], "raw": [raw], "sum": [pair, raw]}[self.variant]
        return [d for p in chosen for d in stage_distances(p)]


@torch.inference_mode()
def defects_image_auroc(detector: Detector, scorer: FeatureNormScorer) -> float:
    """Image AUROC of the max of `scorer`'s map on the run's defects yardstick: its held-out
    normals and one painted scratch, stain or noise patch in each (training/validation.py), scored
    on the fitted input as train scores it."""
    cfg = detector.cfg
    paths = [Path(s.image) for s in validation_samples(detector)]
    normals = torch.stack([load_image(p, cfg.data.size_hw, cfg.data.fit)[0] for p in paths])
    vset = make_validation_set(normals, cfg, yardstick="defects")
    scores = [
        scorer(to_device(chunk, detector.device, cfg.train.channels_last)).score
        for chunk in vset.images.split(cfg.train.batch_size)
    ]
    return image_auroc(torch.cat(scores).float().numpy(), vset.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="the category, MVTec AD layout")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--per-type", type=int, default=3, help="real anomalies per defect type")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="mask .* holds values")  # magnetic_tile's masks
    rows = []
    for run in args.runs:
        detector = Detector.load(run, "cpu")
        if detector.cfg.model.feature_norm != "channel" or detector.scorer.deviation_ready:
            raise SystemExit(f"{run}: not a feature_norm channel model without stage 2")
        base = detector.scorer
        for variant in VARIANTS:
            scorer = FeatureNormScorer(base, variant, torch.ones(2 * base.model.num_stages)).eval()
            scorer.means = normal_means(detector, scorer.distances)
            if variant == "standardised":  # the map as built: train stored these means
                stored = base.model.stage_map_mean
                print(f"{run.name}: means {scorer.means.tolist()} stored {stored.tolist()}")
            detector.scorer = scorer
            print(f"{run.name}: {variant}", flush=True)
            row = score_run(run, args.original, None, args.per_type, detector)
            defects = defects_image_auroc(detector, scorer)
            print(f"{run.name}: {variant}: defects yardstick image AUROC {100 * defects:.2f}")
            if variant == "standardised":  # the map as built: train stored its figure
                stored = detector.payload["extra"][FINAL_VALIDATION_KEY]
                print(f"  stored {100 * stored['val_defects_image_auroc_max']:.2f}")
            rows.append({"variant": variant, **row, "defects_image_auroc": defects})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
