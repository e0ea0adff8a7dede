"""Thresholds at evaluation: read from the checkpoint, or chosen in memory for an old run.

`train` chooses the decision thresholds on the held-out validation images and stores them in the
checkpoint (siamese_ad/thresholds.py holds the rules). A checkpoint trained before that holds
none; `evaluate` then chooses them the same way for its own report and never saves them.
"""

from __future__ import annotations

from pathlib import Path

from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.modality import image_loader
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.data.splits import SplitManifest, relative_key
from siamese_ad.evaluation.inference import Detector
from siamese_ad.thresholds import Thresholds, thresholds_for

__all__ = ["Thresholds", "validation_samples", "validation_thresholds"]


def validation_samples(detector: Detector, data_root: str | Path | None = None) -> list[Sample]:
    """The checkpoint's validation images (manifest "validation"), read from the data root."""
    cfg = detector.cfg
    data = read_category(Path(data_root or cfg.data.root), cfg.data.format)
    wanted = set(SplitManifest.from_dict(detector.payload["manifest"]).validation)
    found = [s for s in data.train + data.validation if relative_key(s, data.root) in wanted]
    if not wanted or len(found) != len(wanted):
        raise DataError(
            f"the checkpoint lists {len(wanted)} validation image(s), {len(found)} found under "
            f"{data.root}: thresholds need them; retrain with data.validation_fraction > 0 "
            "or point --data at the data set trained on"
        )
    return found


def validation_thresholds(
    detector: Detector,
    run_dir: Path,
    data_root: str | Path | None = None,
    batch_size: int | None = None,
) -> Thresholds:
    """Thresholds chosen now on the checkpoint's validation images, in memory only.

    Args:
        run_dir: the checkpoint's folder (where a depth run caches its depth images).

    Raises:
        DataError: the run lists no validation images, or they are not under the data root.
    """
    cfg = detector.cfg
    samples = validation_samples(detector, data_root)
    loader = image_loader(cfg.data, run_dir)
    images = load_images(samples, cfg.data.image_size, loader, "validation images")
    out = detector.run(images.images, batch_size, images.originals)
    return thresholds_for(images, out.scores, out.maps, cfg.scoring.threshold_quantile)
