"""A localisation map from window-averaged features, judged on the real-defects yardstick.

The anomaly map compares the teacher's and the student's features pixel by pixel (1 - cos per
stage). PatchCore compares features averaged over a 3 x 3 window. benchmarks/feature_pool.py
showed on the test split (stretched inputs) that such a map localises magnetic_tile's large
defects better and ranks images worse. This probe asks whether a second map, from each stage's
features averaged over a k x k window (stride 1, zero padding not counted) before the cosine,
would serve as the heat map while the image score stays the max of the 1 x 1 map. Each k's
per-stage means (scoring.map_norm "mean") are taken over the run's held-out validation normals, as
train takes them. Every run is scored through benchmarks/real_yardstick.py (its real-defects
yardstick, then the rest of its test split, reported and never chosen by) once per k; the image
AUROC a k > 1 row prints is that of its own map's max, for information (the candidate keeps the
1 x 1 map's).

    python benchmarks/map_window.py ../shared/datasets/<category> runs/exp/<run> [more runs] \
        [--windows 1,3,5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from feature_pool import pooled
from real_yardstick import score_run

from siamese_ad.config import ScoringConfig
from siamese_ad.data.images import load_image
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples
from siamese_ad.scoring import AnomalyOutput, AnomalyScorer, combine_stages, stage_distances


class WindowScorer(AnomalyScorer):
    """The preset's scorer (no stage 2) with the map made from k x k averaged features."""

    def __init__(self, base: AnomalyScorer, k: int, means: torch.Tensor) -> None:
        super().__init__(base.model, ScoringConfig(image_score="max"), base.topk)
        self.blur, self.k, self.means = base.blur, k, means

    def distances(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> each stage's (B, h, w) (1 - cos) of averaged features."""
        return stage_distances(pooled(self.model(images), self.k))

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        amap = combine_stages(self.distances(images), images.shape[-2:], self.blur, self.means)
        score = amap.flatten(1).amax(dim=1)
        return AnomalyOutput(amap, score, score, None)


@torch.inference_mode()
def normal_means(
    detector: Detector, distances: Callable[[torch.Tensor], list[torch.Tensor]]
) -> torch.Tensor:
    """(n,) each stage's mean of `distances` (images in [0, 1] -> per-stage (B, h, w) maps) over
    the run's held-out validation normals: scoring.map_norm "mean"'s divisors, as train takes
    them."""
    cfg = detector.cfg
    paths = [Path(s.image) for s in validation_samples(detector)]
    images = torch.stack([load_image(p, cfg.data.size_hw, cfg.data.fit)[0] for p in paths])
    total = None
    for chunk in images.split(cfg.train.batch_size):
        dists = distances(to_device(chunk, detector.device, cfg.train.channels_last))
        sums = torch.stack([d.mean(dim=(1, 2)).sum() for d in dists])
        total = sums if total is None else total + sums
    return (total / len(images)).clamp_min(1e-6)


def window_means(detector: Detector, k: int) -> torch.Tensor:
    """(n,) each stage's mean (1 - cos) of k x k averaged features over the validation normals."""
    base = detector.scorer
    return normal_means(detector, WindowScorer(base, k, base.model.stage_map_mean).distances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="the category, MVTec AD layout")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--windows", default="1,3,5", help="window sizes k, comma-separated")
    parser.add_argument("--per-type", type=int, default=3, help="real anomalies per defect type")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="mask .* holds values")  # magnetic_tile's masks
    rows = []
    for run in args.runs:
        for k in (int(w) for w in args.windows.split(",")):
            detector = Detector.load(run, "cpu")
            if detector.scorer.deviation_ready:
                raise SystemExit(f"{run}: a stage-2 model; this probe scores the max of the map")
            means = window_means(detector, k)
            if k == 1:  # the map as built: its means are the ones train stored
                stored = detector.scorer.model.stage_map_mean
                print(f"{run.name}: k=1 means {means.tolist()} stored {stored.tolist()}")
            detector.scorer = WindowScorer(detector.scorer, k, means).eval()
            print(f"{run.name}: window {k}", flush=True)
            row = score_run(run, args.original, None, args.per_type, detector)
            rows.append({"window": k, **row})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
