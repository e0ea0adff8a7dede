"""Does torch.compile pay for siamese-ad inference? WRN50-2 (random weights), 256 px, batch 16,
bf16 scoring.

Usage: python benchmarks/compile_check.py   (prints eager and compiled images/s, best of 3)
"""

from __future__ import annotations

import time

import torch

from siamese_ad.config import paper_preset
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import build_unet

BATCH = 16


def images_per_second(detector: Detector, images: torch.Tensor, repeats: int = 3) -> float:
    detector.run(images, BATCH)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detector.run(images, BATCH)
        times.append(time.perf_counter() - start)
    return BATCH / min(times)


def main() -> None:
    cfg = paper_preset()
    cfg.model.weights, cfg.model.cpam, cfg.scoring.bf16 = "none", False, True
    cfg.scoring.image_score = "max"
    detector = Detector.from_model(build_unet(cfg.model), cfg, torch.device("cpu"), {})
    images = torch.randint(0, 255, (BATCH, 3, 256, 256), dtype=torch.uint8)
    print(f"eager: {images_per_second(detector, images):.2f} img/s")
    start = time.perf_counter()
    detector.scorer = torch.compile(detector.scorer)
    compiled = images_per_second(detector, images)
    elapsed = time.perf_counter() - start
    print(f"compiled: {compiled:.2f} img/s (first call and timing: {elapsed:.0f} s)")


if __name__ == "__main__":
    main()
