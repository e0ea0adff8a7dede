"""`predict`: scores new images (files or folders) with a trained checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from siamese_ad.data.dataset import load_images
from siamese_ad.data.images import list_images
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.evaluation.inference import Detector
from siamese_ad.reporting.heatmaps import colour_range, panel


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Expands folders into their images; keeps files as given; rejects missing paths."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"folder {item} holds no images (png, jpg, bmp, tif, webp)")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item} does not exist; give image files or folders of images")
    return paths


def predict(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
) -> list[dict]:
    """Writes scores.csv and one heat-map PNG per image under out_dir/heatmaps; returns the rows."""
    out_dir = Path(out_dir)
    detector = Detector.load(checkpoint, device)
    paths = collect_images(inputs)
    images = load_images([Sample(p, 0) for p in paths], detector.cfg.data.image_size, desc="images")
    inference = detector.run(images.images, batch_size)
    heat_dir = out_dir / "heatmaps"
    heat_dir.mkdir(parents=True, exist_ok=True)
    vmin, vmax = colour_range(inference.maps)
    rows = []
    for i, path in enumerate(paths):
        picture = panel(
            images.images[i].permute(1, 2, 0).numpy(), inference.maps[i], vmin, vmax, None
        )
        heatmap = heat_dir / f"{i:05d}_{path.stem}.png"
        Image.fromarray(picture).save(heatmap)
        rows.append(
            {
                "image": path.as_posix(),
                "score": float(inference.scores[i]),
                "heatmap": heatmap.as_posix(),
            }
        )
    with (out_dir / "scores.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    np.save(out_dir / "maps.npy", inference.maps.astype(np.float16))
    return rows
