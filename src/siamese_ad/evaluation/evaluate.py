"""Scores a checkpoint on test images it never trained on: the metrics and what they came from.

Writes nothing; app/evaluate.py writes the results (metrics.json, scores.csv, heat maps, report).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamese_ad import metrics
from siamese_ad.checkpoint import CHECKPOINT
from siamese_ad.data.dataset import ImageSet, load_images, read_category
from siamese_ad.data.fit import unpad_images
from siamese_ad.data.modality import image_loader
from siamese_ad.data.sample import DataError
from siamese_ad.data.splits import MANIFEST, SplitManifest, check_manifest_file, exclude_trained
from siamese_ad.evaluation.inference import Detector, Inference
from siamese_ad.evaluation.thresholds import Thresholds, validation_thresholds

# The metrics a run reports, with their column titles in tables.
METRIC_COLUMNS = (
    ("image_auroc", "image AUROC"),
    ("image_auroc_max", "image AUROC (max)"),
    ("image_auroc_deviation", "image AUROC (deviation)"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO"),
    ("image_f1_max", "F1-max"),
    ("training_seconds", "training s"),
    ("ms_per_image", "ms / image"),
)
# How many test images the metrics used, with their column titles in tables: every image for the
# image metrics, the images whose pixel truth is known (normal or with a mask) for the pixel ones.
COUNT_COLUMNS = (
    ("n_images", "images (image metrics)"),
    ("n_pixel_images", "images (pixel AUROC, AUPRO)"),
)


PRO_LIMIT = 0.3  # AUPRO integrates the PRO curve up to this false positive rate


@dataclass(frozen=True)
class PixelCurves:
    """The pixel ROC and the PRO curve (cut at PRO_LIMIT) of a set of maps, as (x, y) corners.

    Computed once per evaluation: the metrics are their areas and the report draws them.
    """

    roc: tuple[np.ndarray, np.ndarray]
    pro: tuple[np.ndarray, np.ndarray]


def pixel_curves(inference: Inference, images: ImageSet) -> PixelCurves | None:
    """The curves over the images whose pixel truth is known; None unless some pixels are
    anomalous and some normal."""
    known = images.has_mask.numpy()
    masks = images.masks.numpy()[known]
    if not masks.any() or masks.all():
        return None
    maps = inference.maps[known]
    roc = metrics.roc_points(maps.ravel(), masks.ravel())
    return PixelCurves(roc=roc, pro=metrics.pro_curve(maps, masks, PRO_LIMIT))


def _auroc_or_none(scores: np.ndarray | None, labels: np.ndarray) -> float | None:
    if scores is None or len(np.unique(labels)) < 2:
        return None
    return metrics.image_auroc(scores, labels)


def compute_metrics(
    inference: Inference, images: ImageSet, curves: PixelCurves | None = None
) -> dict[str, Any]:
    """Image AUROC (configured, max, deviation), F1-max, pixel AUROC and AUPRO, per-defect AUROC.

    Image metrics use every image; pixel metrics the images whose pixel truth is known (normal
    images and those with a mask), and are None when none of them is anomalous.
    `curves`: `pixel_curves` of the same inference and images, when already computed.
    """
    labels = images.labels.numpy()
    out: dict[str, Any] = {
        "image_auroc": _auroc_or_none(inference.scores, labels),
        "image_auroc_max": _auroc_or_none(inference.scores_max, labels),
        "image_auroc_deviation": _auroc_or_none(inference.scores_deviation, labels),
        "image_f1_max": metrics.f1_max(inference.scores, labels)[0] if labels.any() else None,
        "pixel_auroc": None,
        "aupro": None,
    }
    curves = curves or pixel_curves(inference, images)
    if curves is not None:
        out["pixel_auroc"] = metrics.area_under(*curves.roc)
        out["aupro"] = metrics.area_under(*curves.pro) / PRO_LIMIT
    defects = sorted({s.defect for s in images.samples if s.label == 1})
    good = labels == 0
    per_defect = {}
    for defect in defects:
        keep = good | np.array([s.defect == defect for s in images.samples])
        per_defect[defect] = _auroc_or_none(inference.scores[keep], labels[keep])
    out["per_defect_image_auroc"] = per_defect
    out["n_images"] = len(labels)
    out["n_anomalous"] = int(labels.sum())
    out["n_pixel_images"] = int(images.has_mask.sum())  # behind pixel AUROC and AUPRO
    out["ms_per_image"] = inference.ms_per_image
    return out


@dataclass(frozen=True)
class Evaluation:
    """One scored test split: what metrics.json, scores.csv, the heat maps and the report show.

    Attributes:
        result: the metrics and what was scored (the content of metrics.json).
        images: the N test images, in order.
        inference: the maps (N, H, W) and scores (N,) of `images` (fused, for an rgbd run).
        thresholds: the decision thresholds, or None.
        curves: `pixel_curves` of inference and images, or None.
    """

    result: dict[str, Any]
    images: ImageSet
    inference: Inference
    thresholds: Thresholds | None
    curves: PixelCurves | None


def evaluate_run(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    compile: bool = False,
) -> Evaluation:
    """Scores the test split of the checkpoint's category (or `data_root`).

    `checkpoint` is a checkpoint.pt or a run folder (train's --out), only read. `compile` runs
    the scorer through torch.compile (evaluation/inference.py's Detector).
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT
    detector = Detector.load(checkpoint, device, compile=compile)
    cfg = detector.cfg
    root = Path(data_root or cfg.data.root)
    data = read_category(root, cfg.data.format)
    manifest = SplitManifest.from_dict(detector.payload["manifest"])
    check_manifest_file(checkpoint.parent / MANIFEST, detector.payload["manifest"])
    test = exclude_trained(data.test, manifest, data.root)
    loader = image_loader(cfg.data, checkpoint.parent)
    images = load_images(test, cfg.data.image_size, loader, "test images")
    inference = detector.run(images.images, batch_size, images.originals)
    if cfg.data.fit == "pad":  # heat-map panels show each image as its maps cover it
        shown = unpad_images(images.images.numpy(), images.originals.numpy())
        images = dataclasses.replace(images, images=torch.from_numpy(shown))
    curves = pixel_curves(inference, images)
    result = compute_metrics(inference, images, curves)
    result["image_score"] = "deviation" if detector.scorer.uses_deviation() else "max"
    result["training_seconds"] = float(
        sum(h["seconds"] for h in detector.payload["state"]["history"])
    )
    result["checkpoint"] = checkpoint.as_posix()
    result["data"] = root.as_posix()
    thresholds = _thresholds_or_none(detector, checkpoint.parent, root, batch_size)
    result["thresholds"] = None if thresholds is None else thresholds.to_dict()
    return Evaluation(result, images, inference, thresholds, curves)


def _thresholds_or_none(
    detector: Detector, run_dir: Path, root: Path, batch_size: int | None
) -> Thresholds | None:
    """The thresholds train stored in the checkpoint. A run trained before train stored them
    gets them chosen now on its validation images, for this report only (never saved); None
    without validation images (data.validation_fraction 0 on a data set with no validation split).
    """
    if detector.thresholds is not None:
        return detector.thresholds
    try:
        return validation_thresholds(detector, run_dir, root, batch_size)
    except DataError as err:
        warnings.warn(f"no decision thresholds: {err}", stacklevel=2)
        return None
