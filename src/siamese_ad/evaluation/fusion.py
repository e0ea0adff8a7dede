"""RGB-D evaluation: each branch standardised on normal validation images, then averaged.

For each branch (rgb, depth) the anomaly maps and the image scores of the category's normal
validation images give a mean and a standard deviation: one pair for all map pixels, one pair per
image score (configured, max of map, deviation). A test image's map and scores are z-scored with
its branch's pairs, and the fused output is the mean of the branches' z-scored outputs:

    fused_map = mean_b (map_b - mu_map_b) / sigma_map_b
    fused_score = mean_b (score_b - mu_score_b) / sigma_score_b     (each score kind alike)

Standardising first puts branches with different map scales on one footing; the validation split
is held out from training, and the test split is only scored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamese_ad.checkpoint import read_rgbd_manifest
from siamese_ad.data.dataset import ImageSet, load_images, read_category
from siamese_ad.data.modality import image_loader
from siamese_ad.data.sample import Sample
from siamese_ad.data.splits import SplitManifest, exclude_trained
from siamese_ad.evaluation.evaluate import Evaluation, compute_metrics, pixel_curves
from siamese_ad.evaluation.inference import Detector, Inference
from siamese_ad.evaluation.thresholds import validation_samples
from siamese_ad.thresholds import Thresholds, thresholds_for

STD_FLOOR = 1e-6

MeanStd = tuple[float, float]


@dataclass(frozen=True)
class NormalStats:
    """One branch's (mean, std) pairs over normal validation images.

    Attributes:
        map: over every pixel of every validation anomaly map.
        score, score_max: over the validation images' configured and max-of-map scores.
        score_deviation: over their deviation scores; None when the branch has no stage 2.
    """

    map: MeanStd
    score: MeanStd
    score_max: MeanStd
    score_deviation: MeanStd | None


def mean_std(values: np.ndarray) -> MeanStd:
    """Mean and standard deviation (unbiased when more than one value, floored at STD_FLOOR)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    std = float(flat.std(ddof=1)) if flat.size > 1 else 0.0
    return float(flat.mean()), max(std, STD_FLOOR)


def normal_stats(normal: Inference) -> NormalStats:
    """The statistics of a branch's inference over normal validation images."""
    deviation = normal.scores_deviation
    return NormalStats(
        map=mean_std(normal.maps),
        score=mean_std(normal.scores),
        score_max=mean_std(normal.scores_max),
        score_deviation=None if deviation is None else mean_std(deviation),
    )


def _z(values: np.ndarray, stats: MeanStd) -> np.ndarray:
    return ((values.astype(np.float64) - stats[0]) / stats[1]).astype(np.float32)


def standardise(inference: Inference, stats: NormalStats) -> Inference:
    """Z-scores the maps (N, H, W) and every image score (N,) with the branch's statistics."""
    deviation = None
    if inference.scores_deviation is not None and stats.score_deviation is not None:
        deviation = _z(inference.scores_deviation, stats.score_deviation)
    return Inference(
        maps=_z(inference.maps, stats.map),
        scores=_z(inference.scores, stats.score),
        scores_max=_z(inference.scores_max, stats.score_max),
        scores_deviation=deviation,
        seconds=inference.seconds,
    )


def fuse(branches: list[Inference]) -> Inference:
    """The mean of standardised branch outputs over the same images; seconds add up.

    Raises:
        ValueError: the branches' maps differ in shape (other images or image sizes).
    """
    shapes = {b.maps.shape for b in branches}
    if len(shapes) != 1:
        raise ValueError(f"branch maps differ in shape {sorted(shapes)}; cannot fuse them")
    deviations = [b.scores_deviation for b in branches]
    return Inference(
        maps=np.mean([b.maps for b in branches], axis=0),
        scores=np.mean([b.scores for b in branches], axis=0),
        scores_max=np.mean([b.scores_max for b in branches], axis=0),
        scores_deviation=None if any(d is None for d in deviations) else np.mean(deviations, 0),
        seconds=float(sum(b.seconds for b in branches)),
    )


@dataclass
class BranchRun:
    """One branch scored on the normal validation and the test images.

    Attributes:
        normal_images, normal: the validation images and the branch's outputs on them.
        images, inference: the test images and the branch's outputs on them.
        stats: the normal statistics that standardise this branch.
    """

    normal_images: ImageSet
    normal: Inference
    images: ImageSet
    inference: Inference
    stats: NormalStats

    def standardised(self, on_validation: bool = False) -> Inference:
        """The test (or, with on_validation, the validation) outputs z-scored by `stats`."""
        return standardise(self.normal if on_validation else self.inference, self.stats)


def score_branch(
    detector: Detector,
    run_dir: Path,
    validation: list[Sample],
    test: list[Sample],
    batch_size: int | None,
) -> BranchRun:
    """Loads the branch's pictures (depth cached under run_dir), scores validation and test."""
    size = detector.cfg.data.image_size
    loader = image_loader(detector.cfg.data, run_dir)
    modality = detector.cfg.data.modality
    normal_images = load_images(validation, size, loader, f"{modality} validation images")
    normal = detector.run(normal_images.images, batch_size, normal_images.originals)
    images = load_images(test, size, loader, f"{modality} test images")
    inference = detector.run(images.images, batch_size, images.originals)
    return BranchRun(normal_images, normal, images, inference, normal_stats(normal))


def fused_thresholds(runs: list[BranchRun], quantile: float) -> Thresholds:
    """Decision thresholds for the fused outputs, chosen on the fused validation outputs."""
    normal = fuse([run.standardised(on_validation=True) for run in runs])
    return thresholds_for(runs[0].normal_images, normal.scores, normal.maps, quantile)


def _branch_summary(run: BranchRun, checkpoint: Path) -> dict[str, Any]:
    out = compute_metrics(run.inference, run.images)
    out["checkpoint"] = checkpoint.as_posix()
    out["normal_stats"] = dataclasses.asdict(run.stats)
    return out


def _score_branches(
    checkpoints: dict[str, Path],
    data_root: str | Path | None,
    device: str,
    batch_size: int | None,
    compile: bool = False,
) -> tuple[dict[str, BranchRun], dict[str, Detector], Path]:
    """Loads both branches and scores the run's validation images and unseen test images."""
    detectors = {
        name: Detector.load(path, device, compile=compile) for name, path in checkpoints.items()
    }
    cfg = detectors["rgb"].cfg
    root = Path(data_root or cfg.data.root)
    data = read_category(root, cfg.data.format)
    validation = validation_samples(detectors["rgb"], root)
    test = data.test
    for detector in detectors.values():
        test = exclude_trained(test, SplitManifest.from_dict(detector.payload["manifest"]), root)
    runs = {
        name: score_branch(det, checkpoints[name].parent, validation, test, batch_size)
        for name, det in detectors.items()
    }
    return runs, detectors, root


def evaluate_rgbd(
    manifest: str | Path,
    data_root: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    compile: bool = False,
) -> Evaluation:
    """Scores the test split with both branches of an rgbd run and fuses them.

    The fused maps and scores stand for the run (the RGB images with them); the result also
    holds each branch's metrics and normal statistics.

    Raises:
        DataError: the run lists no validation images to standardise the branches on.
    """
    checkpoints = read_rgbd_manifest(manifest)
    runs, detectors, root = _score_branches(checkpoints, data_root, device, batch_size, compile)
    fused = fuse([run.standardised() for run in runs.values()])
    thresholds = fused_thresholds(
        list(runs.values()), detectors["rgb"].cfg.scoring.threshold_quantile
    )
    images = runs["rgb"].images
    curves = pixel_curves(fused, images)
    result = compute_metrics(fused, images, curves)
    result["image_score"] = "deviation" if detectors["rgb"].scorer.uses_deviation() else "max"
    result["fusion"] = "mean of branch outputs z-scored on normal validation images"
    result["training_seconds"] = float(
        sum(h["seconds"] for d in detectors.values() for h in d.payload["state"]["history"])
    )
    result["checkpoint"] = Path(manifest).as_posix()
    result["data"] = root.as_posix()
    result["thresholds"] = thresholds.to_dict()
    result["branches"] = {
        name: _branch_summary(run, checkpoints[name]) for name, run in runs.items()
    }
    return Evaluation(result, images, fused, thresholds, curves)
