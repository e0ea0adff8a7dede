"""Floating-point work per image, siamese-ad against anomalib's Reverse Distillation, and the
throughput our inference reaches: the roofline behind docs/performance.md.

Counts come from `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products,
2 FLOPs per multiply-add) on one 256 px image, random weights. The timed part runs siamese-ad's
scorer eagerly at batch 16 as `Detector` does with scoring.bf16 on (bf16 autocast, channels_last,
BatchNorm folded), and the torch profiler splits its time between convolutions and the rest.

    python benchmarks/flops.py --out runs/flops.json          # needs: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from speed import bench_config  # benchmarks/speed.py, beside this script
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import build_unet

CONV_OPS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")


def gflops(fn: object, *args: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fn(*args)  # type: ignore[operator]
    return counter.get_total_flops() / 1e9


def ours(backbone: str, blocks: int, size: int) -> Detector:
    """The bf16 basic block of benchmarks/speed.py, ready for inference."""
    cfg = bench_config(backbone, size, blocks, bf16=True, cpam=False)
    torch.manual_seed(0)
    return Detector.from_model(build_unet(cfg.model), cfg, torch.device("cpu"), {})


def parts(detector: Detector, image: torch.Tensor) -> dict[str, float]:
    """GFLOP per image of the teacher, the bottleneck and the student."""
    model = detector.scorer.model
    with torch.inference_mode():
        teacher = model.teacher(image)
        embedding = model.bottleneck(teacher)
    return {
        "teacher": gflops(model.teacher, image),
        "bottleneck": gflops(model.bottleneck, teacher),
        "student": gflops(model.student, embedding),
    }


def timed(detector: Detector, batch: int, size: int, repeats: int) -> dict[str, float]:
    """Best seconds per batch of Detector.run, and the share of it spent in convolutions."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    detector.run(images, batch)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detector.run(images, batch)
        best = min(best, time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        detector.run(images, batch)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    return {"seconds_per_batch": best, "conv_share": conv / total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="wide_resnet50_2")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args()
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel

    size = args.image_size
    image = torch.rand(1, 3, size, size)
    rd = ReverseDistillationModel(
        args.backbone,
        (size, size),
        ["layer1", "layer2", "layer3"],
        AnomalyMapGenerationMode.ADD,
        pre_trained=False,
    ).eval()
    result: dict = {"backbone": args.backbone, "anomalib_rd_gflop": gflops(rd, image)}
    del rd
    for blocks in (2, 1):
        detector = ours(args.backbone, blocks, size)
        row = parts(detector, image)
        row["total"] = sum(row.values())
        row.update(timed(detector, args.batch_size, size, args.repeats))
        row["images_per_s"] = args.batch_size / row["seconds_per_batch"]
        row["achieved_gflops"] = row["total"] * row["images_per_s"]
        row["conv_gflops"] = row["achieved_gflops"] / row["conv_share"]
        result[f"siamese_ad_decoder_blocks_{blocks}"] = row
        print(f"decoder_blocks={blocks}: {json.dumps(row)}", flush=True)
    print(f"anomalib RD: {result['anomalib_rd_gflop']:.1f} GFLOP per image")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
