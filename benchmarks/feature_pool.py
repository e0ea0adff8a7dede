"""Local averaging of the features before the cosine, chosen on the defects yardstick.

The anomaly map compares the teacher's and the student's features pixel by pixel (1 - cos per
stage). PatchCore compares locally aggregated features instead (a 3 x 3 mean of each feature map
before its nearest-neighbour search). This probe scores the same trained models with each
stage's teacher and student features first averaged over a k x k window (stride 1, zero padding
not counted), k = 1 (the map as built), 3 and 5, from one forward pass per image: on the run's
validation images with one defect painted into each (the defects yardstick, as train makes it)
and on the test split (reported, never chosen by). Each variant's stage means (scoring.map_norm
"mean") are taken over the yardstick's normal images, as train takes them from the held-out
normals; the image score is the max of the map.

    python benchmarks/feature_pool.py runs/exp/<run> [more runs] [--json out.json]
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from stage_weights import PRO_LIMIT, main, yardstick_and_test

from siamese_ad import metrics
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import FeaturePair
from siamese_ad.scoring import GaussianBlur, combine_stages, stage_distances

WINDOWS = (1, 3, 5)


def pooled(pair: FeaturePair, k: int) -> FeaturePair:
    """Each stage's features averaged over a k x k window (stride 1; k = 1: unchanged)."""
    if k == 1:
        return pair

    def avg(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.float(), k, stride=1, padding=k // 2, count_include_pad=False)

    return FeaturePair([avg(t) for t in pair.teacher], [avg(s) for s in pair.student])


@torch.inference_mode()
def stage_maps(detector: Detector, images: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    """(N, 3, H, W) uint8 -> {k: per stage (N, h_i, w_i) (1 - cos) maps}, one forward pass."""
    cfg = detector.cfg
    parts: dict[int, list[list[torch.Tensor]]] = defaultdict(list)
    for chunk in images.split(cfg.train.batch_size):
        pair = detector.scorer.model(to_device(chunk, detector.device, cfg.train.channels_last))
        for k in WINDOWS:
            parts[k].append([d.float().cpu() for d in stage_distances(pooled(pair, k))])
    return {k: [torch.cat(s) for s in zip(*chunks, strict=True)] for k, chunks in parts.items()}


def score_run(run: Path, aupro: bool) -> dict[str, dict]:
    detector = Detector.load(run, "cpu")
    cfg = detector.cfg
    vset, test = yardstick_and_test(detector, run)
    val_maps, test_maps = stage_maps(detector, vset.images), stage_maps(detector, test.images)
    normal = torch.from_numpy(np.asarray(vset.labels) == 0)
    blur = GaussianBlur(cfg.scoring.sigma)
    rows = {}
    for k in WINDOWS:
        means = torch.tensor([float(d[normal].mean()) for d in val_maps[k]])
        row: dict = {"category": Path(cfg.data.root).name, "n_val_normals": float(normal.sum())}
        for split, dists, labels, masks in (
            ("val", val_maps[k], vset.labels, vset.masks.numpy()),
            ("test", test_maps[k], test.labels.numpy(), test.masks.numpy()),
        ):
            amap = combine_stages(dists, cfg.data.size_hw, blur, means).numpy()
            row[f"{split}_image"] = metrics.image_auroc(amap.reshape(len(amap), -1).max(1), labels)
            row[f"{split}_pixel"] = metrics.pixel_auroc(amap, masks)
            if aupro and split == "test":
                row["test_aupro"] = metrics.aupro(amap, masks, PRO_LIMIT)
        rows[f"k={k}"] = row
        shown = " ".join(f"{key}={v:.4f}" for key, v in row.items() if isinstance(v, float))
        print(f"{run.name:>24} k={k} {shown}", flush=True)
    return rows


if __name__ == "__main__":
    main(score_run, tuple(f"k={k}" for k in WINDOWS), "window", __doc__)
