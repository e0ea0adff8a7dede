"""`predict`: scores new images (files or folders) with a trained checkpoint."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from siamese_ad.data.dataset import fitted_loader, load_images
from siamese_ad.data.decode import collect_images
from siamese_ad.data.fit import unpad_images
from siamese_ad.data.sample import Sample
from siamese_ad.evaluation.inference import Detector
from siamese_ad.reporting.predictions import mask_paths, write_masks, write_predictions

__all__ = ["collect_images", "predict"]


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
    compile: bool = False,
) -> list[dict]:
    """Writes scores.csv and one heat-map PNG per image under out_dir/heatmaps; returns the rows.

    `checkpoint` is train's run folder or its checkpoint.pt, only read; the training data is not
    needed. With the thresholds train stored in it (siamese_ad/thresholds.py) each row also holds
    `anomalous` (score > image threshold), `normalised_score` (in (0, 1), 0.5 at the threshold)
    and `mask`: heatmaps/NNNNN_<stem>_mask.png, 255 where the map > pixel threshold, at the
    model's input size. A checkpoint without thresholds (no validation images, or trained before
    train stored them) gives scores only, with a warning.
    """
    detector = Detector.load(checkpoint, device, compile=compile)
    paths = collect_images(inputs)
    fit = detector.cfg.data.fit
    samples = [Sample(p, 0) for p in paths]
    images = load_images(samples, detector.cfg.data.image_size, fitted_loader(fit), "images")
    inference = detector.run(images.images, batch_size, images.originals)
    pictures = images.images.numpy()
    if fit == "pad":  # heat-map panels show each image as its map covers it
        pictures = unpad_images(pictures, images.originals.numpy())
    pictures = pictures.transpose(0, 2, 3, 1)
    thresholds = detector.thresholds
    if thresholds is None:
        warnings.warn(
            f"{checkpoint} holds no decision thresholds (trained without validation images, or "
            "before train stored them): scores only; retrain for decisions",
            stacklevel=2,
        )
        return write_predictions(out_dir, paths, pictures, inference.maps, inference.scores)
    masks = mask_paths(out_dir, paths)
    extra = {
        "anomalous": thresholds.decide(inference.scores),
        "normalised_score": thresholds.normalise(inference.scores),
        "mask": np.array([m.as_posix() for m in masks]),
    }
    rows = write_predictions(out_dir, paths, pictures, inference.maps, inference.scores, extra)
    write_masks(masks, thresholds.mask(inference.maps))
    return rows
