"""A test-free validation signal: held-out normal images plus synthetic anomalies made from them.

Scored after every epoch, it shows how training progresses without touching the test split, so
schedules and settings can be chosen from it (METHOD.md: choices are settled on training and
validation data). The anomalies are made once, seeded, from the validation images alone (a patch
of one validation image blended into another) with the default synthesis settings, so nothing
here was ever trained on and runs that differ in their synthesis are measured alike.

That yardstick shares its family with training's anomalies, so it flatters whatever fits them; the
"defects" yardstick (scratches, stains and noise patches, data/defects.py) is made of families
training never sees and measures generalisation to unseen kinds of defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from siamese_ad.config import Config, SynthesisConfig
from siamese_ad.data.defects import DEFECT_FAMILIES, DefectSynthesizer, defect_foregrounds
from siamese_ad.data.synthesis import AnomalySynthesizer
from siamese_ad.metrics import image_auroc, pixel_auroc
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.training.calibration import Scored, score_images
from siamese_ad.training.loop import STAGE_SALT

DEFECTS_PREFIX = "val_defects_"  # history keys of the defects yardstick (train scores both)
MIN_VALIDATION = 2  # a synthetic anomaly needs a destination and another image as its source
YARDSTICKS = ("blend", "defects")  # how make_validation_set makes its anomalies


@dataclass
class ValidationSet:
    """Normal validation images followed by one synthetic anomaly made from each.

    Attributes:
        images: (M, 3, H, W) uint8.
        masks: (M, H, W) bool, True where an image was changed.
        labels: (M,) 1 for an image with a non-empty mask, else 0.
    """

    images: Tensor
    masks: Tensor
    labels: np.ndarray


def make_validation_set(
    normals: Tensor,
    cfg: Config,
    synthesis: SynthesisConfig | None = None,
    yardstick: str = "blend",
) -> ValidationSet | None:
    """Builds the set from (N, 3, H, W) uint8 validation images; None when N < MIN_VALIDATION.

    `yardstick` "blend" makes each anomaly as training does, a patch of another validation image
    blended in; "defects" paints one scratch, stain or noise patch into each (the families in
    turn), kinds training never sees. Both follow `cfg.data.object_type`.

    `synthesis` ("blend" only) defaults to the default SynthesisConfig, not the run's: one
    yardstick for runs that differ in their synthesis (benchmarks may pass another to make a
    harder one).
    """
    if yardstick not in YARDSTICKS:
        raise ValueError(f"yardstick={yardstick!r}; choose one of {', '.join(YARDSTICKS)}")
    if synthesis is not None and yardstick != "blend":
        raise ValueError(f"a synthesis applies to the blend yardstick only, not {yardstick!r}")
    if len(normals) < MIN_VALIDATION:
        return None
    arrays = [img.permute(1, 2, 0).numpy() for img in normals]
    if yardstick == "blend":
        synth = AnomalySynthesizer.from_config(
            arrays, synthesis or SynthesisConfig(), cfg.data.object_type
        )
        rng = _validation_rng(cfg)
        made = [synth(i, rng) for i in range(len(arrays))]
    else:
        made = _paint_defects(arrays, cfg)
    anomalies = torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image, _ in made])
    masks = torch.stack([torch.from_numpy(mask) for _, mask in made])
    images = torch.cat([normals, anomalies])
    all_masks = torch.cat([torch.zeros(len(normals), *masks.shape[1:], dtype=torch.bool), masks])
    labels = all_masks.flatten(1).any(dim=1).numpy().astype(np.int64)
    return ValidationSet(images, all_masks, labels)


def _validation_rng(cfg: Config) -> np.random.Generator:
    """The validation anomalies' generator: the same for every yardstick of a seed."""
    return np.random.default_rng(cfg.train.seed * 1_000_003 + STAGE_SALT["validation"])


def _paint_defects(arrays: list[np.ndarray], cfg: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """One defect per (H, W, 3) uint8 image, the families in turn, seeded as the blend path;
    on objects confined to the image's estimated foreground. -> (image, (H, W) bool mask) each."""
    synth = DefectSynthesizer()
    foregrounds = defect_foregrounds(arrays, cfg.data.object_type)
    rng = _validation_rng(cfg)
    return [
        synth(image, rng, DEFECT_FAMILIES[i % len(DEFECT_FAMILIES)], foreground)
        for i, (image, foreground) in enumerate(zip(arrays, foregrounds, strict=True))
    ]


def validation_metrics(
    model: TeacherStudentUNet,
    vset: ValidationSet,
    cfg: Config,
    device: torch.device,
    prefix: str = "val_",
) -> dict[str, float]:
    """Image AUROC (max of map, and deviation once stage 2 set its statistics) and pixel AUROC
    of the model on the validation set; keys start with `prefix` ("val_", or "val_defects_"
    for the defects yardstick), e.g. "val_image_auroc_max"."""
    return yardstick_metrics(model, {prefix: vset}, cfg, device)


def yardstick_metrics(
    model: TeacherStudentUNet,
    sets: dict[str, ValidationSet],
    cfg: Config,
    device: torch.device,
) -> dict[str, float]:
    """`validation_metrics` of several sets made by `make_validation_set` from the same normal
    images (prefix -> set), scoring those normals once: the same figures for less work. A set
    whose labels are all alike gives no figures."""
    usable = {p: v for p, v in sets.items() if 0 < v.labels.sum() < len(v.labels)}
    if not usable:
        return {}
    first = next(iter(usable.values()))
    n = len(first.images) // 2  # each set is its normals followed by one anomaly per normal
    if not all(
        len(v.images) == 2 * n and torch.equal(v.images[:n], first.images[:n])
        for v in usable.values()
    ):
        raise ValueError("yardstick_metrics needs sets made from the same normal images")
    images = torch.cat([first.images[:n], *(v.images[n:] for v in usable.values())])
    scored = score_images(model, images, cfg, device)
    result: dict[str, float] = {}
    for i, (prefix, vset) in enumerate(usable.items()):
        rows = np.r_[0:n, n * (i + 1) : n * (i + 2)]
        result |= _metrics(_rows(scored, rows), vset, prefix)
    return result


def _rows(scored: Scored, rows: np.ndarray) -> Scored:
    """The outputs of the images at `rows`."""
    deviations = None if scored.deviations is None else scored.deviations[rows]
    return Scored(scored.maps[rows], scored.scores[rows], scored.maxima[rows], deviations)


def _metrics(scored: Scored, vset: ValidationSet, prefix: str) -> dict[str, float]:
    result = {f"{prefix}image_auroc_max": image_auroc(scored.maxima, vset.labels)}
    if scored.deviations is not None:
        result[f"{prefix}image_auroc_deviation"] = image_auroc(scored.deviations, vset.labels)
    result[f"{prefix}pixel_auroc"] = pixel_auroc(scored.maps, vset.masks.numpy())
    return result
