"""The defects yardstick at each image's own geometry: a validation signal that can compare models
trained at different input shapes (a square input against `data.image_size: auto`).

Training's defects yardstick (training/validation.py) paints its scratches, stains and noise
patches into the validation images after they are resized to the model's input, so two input
shapes see two different sets of defects. Here each run's held-out validation images (listed in
its checkpoint's manifest, never trained on and never tested) are read at their original size, one
defect is painted into each (data/defects.py; the families in turn, seeded by the run's seed, so
runs of one seed share the same defective images whatever their input shape), and the model scores
them through `Detector.predict`, which resizes to its input and returns each map at the image's
own size. Image AUROC (the configured score) and pixel AUROC are computed there.

    python benchmarks/shape_yardstick.py runs/exp/<run> [more runs] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from siamese_ad import metrics
from siamese_ad.data.decode import open_image, to_rgb_uint8
from siamese_ad.data.defects import DEFECT_FAMILIES, DefectSynthesizer, defect_foregrounds
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples

SALT = 7_919  # keeps this yardstick's draws apart from training's


def defective_set(
    detector: Detector, paths: list[Path] | None = None
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """The run's validation normals at their own size, then one painted copy of each.

    Args:
        detector: the run's detector (its seed, object type and validation images).
        paths: read these files instead of the validation images as listed (the same images
            elsewhere, e.g. the originals of a copy the run trained on).

    Returns:
        images: 2N (H_i, W_i, 3) uint8 arrays; labels: (2N,) 0 then 1; masks: 2N (H_i, W_i) bool.
    """
    if paths is None:
        paths = [Path(s.image) for s in validation_samples(detector)]
    normals = [to_rgb_uint8(open_image(p)[0]) for p in paths]
    rng = np.random.default_rng(detector.cfg.train.seed * 1_000_003 + SALT)
    synth = DefectSynthesizer()
    foregrounds = defect_foregrounds(normals, detector.cfg.data.object_type)
    painted = [
        synth(image, rng, DEFECT_FAMILIES[i % len(DEFECT_FAMILIES)], foreground)
        for i, (image, foreground) in enumerate(zip(normals, foregrounds, strict=True))
    ]
    images = normals + [image for image, _ in painted]
    masks = [np.zeros(image.shape[:2], bool) for image in normals] + [m for _, m in painted]
    labels = np.r_[np.zeros(len(normals)), np.ones(len(painted))].astype(np.int64)
    return images, labels, masks


def score_run(run: Path) -> dict[str, float | str]:
    """Image and pixel AUROC of one run on its validation images with defects painted in."""
    detector = Detector.load(run, "cpu")
    images, labels, masks = defective_set(detector)
    predictions = detector.predict(images)
    scores = np.array([p.score for p in predictions])
    maps = np.concatenate([p.anomaly_map.ravel() for p in predictions])[None, None]
    truth = np.concatenate([m.ravel() for m in masks])[None, None]
    size = detector.cfg.data.image_size
    return {
        "run": run.name,
        "image_size": "x".join(map(str, size)) if isinstance(size, tuple) else str(size),
        "images": len(images),
        "image_auroc": metrics.image_auroc(scores, labels),
        "pixel_auroc": metrics.pixel_auroc(maps, truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = [score_run(run) for run in args.runs]
    print("| run | input | images | image AUROC | pixel AUROC |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['image_size']} | {r['images']} | "
            f"{100 * float(r['image_auroc']):.1f} | {100 * float(r['pixel_auroc']):.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
