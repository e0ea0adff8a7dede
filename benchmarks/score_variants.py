"""Scoring variants of one trained run, on the validation signal and on the test split.

The anomaly map and image score are computed from the per-stage (1 - cos) maps; this script
computes those once per image and then scores each variant from them, so choices of scoring
(stage weights, blur, image score) can be compared without retraining. Choose on the "val"
columns (held-out normal images + one synthetic anomaly each, training/validation.py); the test
columns are reported beside them.

The validation anomalies are made as training's validation signal makes them (`--val-yardstick
blend`, the default: patches of other validation images blended in, the family training learns
from) or, with `--val-yardstick defects`, as scratches, stains and noise patches (data/defects.py),
kinds training never sees: a check that a choice generalises beyond the synthetic family.

    python benchmarks/score_variants.py runs/exp/mt-base [more runs] --json out.json
    python benchmarks/score_variants.py runs/exp/mt-base --val-yardstick defects --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from siamese_ad import metrics
from siamese_ad.config import SynthesisConfig
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.modality import image_loader
from siamese_ad.data.splits import SplitManifest, exclude_trained
from siamese_ad.device import to_device
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples
from siamese_ad.losses import topk_mean
from siamese_ad.scoring import GaussianBlur, combine_stages, deviation_score, stage_distances
from siamese_ad.training.validation import YARDSTICKS, make_validation_set

PRO_LIMIT = 0.3


@torch.inference_mode()
def stage_maps(detector: Detector, images: torch.Tensor) -> list[torch.Tensor]:
    """(N, 3, S, S) uint8 -> per stage (N, h_i, w_i) (1 - cos) maps, in float32 as Detector."""
    model, cfg, device = detector.scorer.model, detector.cfg, detector.device
    out: list[list[torch.Tensor]] = []
    for chunk in images.split(cfg.train.batch_size):
        dists = stage_distances(model(to_device(chunk, device, cfg.train.channels_last)))
        out.append([d.float().cpu() for d in dists])
    return [torch.cat(parts) for parts in zip(*out, strict=True)]


def combine(
    dists: list[torch.Tensor],
    weights: list[float],
    size: tuple[int, int],
    sigma: float,
    bias: list[float],
) -> torch.Tensor:
    """Weighted sum of (d_i - bias_i) upsampled to size = (H, W), blurred: -> (N, H, W)."""
    terms = [w * (d - b) for d, w, b in zip(dists, weights, bias, strict=True) if w != 0]
    return combine_stages(terms, size, GaussianBlur(sigma))


def evaluate_maps(
    maps: np.ndarray, scores: dict, labels: np.ndarray, masks: np.ndarray, pro: bool
) -> dict[str, float]:
    out = {f"img_{k}": metrics.image_auroc(v, labels) for k, v in scores.items()}
    out["pix"] = metrics.pixel_auroc(maps, masks)
    if pro:
        out["aupro"] = metrics.aupro(maps, masks, PRO_LIMIT)
    return out


def variants(n_stages: int, normal_means: list[float], normal_stds: list[float]) -> dict:
    """name -> (weights, bias, sigma). "mean-norm s4 (default)" is what the checkpoint scores
    with (scoring.map_norm "mean", sigma 4) when its means come from these validation normals
    (train takes them from the held-out normals, at least 4, else the training images);
    "sum s4 (map_norm none)" is eq. 2's plain sum."""
    ones, zeros = [1.0] * n_stages, [0.0] * n_stages
    inv_mean = [1.0 / m for m in normal_means]
    inv_std = [1.0 / s for s in normal_stds]
    table = {
        "sum s4 (map_norm none)": (ones, zeros, 4.0),
        "sum s2": (ones, zeros, 2.0),
        "sum s8": (ones, zeros, 8.0),
        "mean-norm s4 (default)": (inv_mean, zeros, 4.0),
        "z-norm s4": (inv_std, normal_means, 4.0),
    }
    for drop in range(n_stages):
        w = [0.0 if i == drop else 1.0 for i in range(n_stages)]
        table[f"sum without stage {drop} s4"] = (w, zeros, 4.0)
    return table


def image_scores(maps: torch.Tensor, dists: list[torch.Tensor], detector: Detector) -> dict:
    model = detector.scorer.model
    flat = maps.flatten(1)
    out = {
        "max": flat.amax(dim=1).numpy(),
        "top1%": topk_mean(maps, 0.01).numpy(),
    }
    if bool(model.deviation_ready):
        out["deviation"] = deviation_score(dists, model, detector.cfg.deviation.topk).numpy()
    return out


def run_one(
    run: Path, pro: bool, synthesis: SynthesisConfig | None, yardstick: str = "blend"
) -> dict:
    detector = Detector.load(run, device="cpu")
    cfg = detector.cfg
    size = cfg.data.size_hw
    loader = image_loader(cfg.data, run)
    val_images = load_images(validation_samples(detector), size, loader, "validation images")
    vset = make_validation_set(val_images.images, cfg, synthesis, yardstick)
    if vset is None:
        raise SystemExit(f"{run}: fewer than 2 validation images, no validation set")
    data = read_category(cfg.data.root, cfg.data.format)
    manifest = SplitManifest.from_dict(detector.payload["manifest"])
    test = load_images(exclude_trained(data.test, manifest, data.root), size, loader, "test")
    val_d, test_d = stage_maps(detector, vset.images), stage_maps(detector, test.images)
    normal = vset.labels == 0
    means = [float(d[torch.from_numpy(normal)].mean()) for d in val_d]
    stds = [float(d[torch.from_numpy(normal)].std()) for d in val_d]
    results = {}
    test_labels, test_masks = test.labels.numpy(), test.masks.numpy()
    for name, (w, b, sigma) in variants(len(val_d), means, stds).items():
        row, stats = {}, {}
        for split, dists, labels, masks, with_pro in (
            ("val", val_d, vset.labels, vset.masks.numpy(), False),
            ("test", test_d, test_labels, test_masks, pro),
        ):
            maps = combine(dists, w, size, sigma, b)
            scores = image_scores(maps, dists, detector)
            if not stats:  # the validation normals' statistics standardise both splits
                good = labels == 0
                stats = {k: (v[good].mean(), v[good].std()) for k, v in scores.items()}
            z = {k: (v - stats[k][0]) / stats[k][1] for k, v in scores.items()}
            if "deviation" in z:
                scores["z(max)+z(dev)"] = z["max"] + z["deviation"]
                scores["z(top1)+z(dev)"] = z["top1%"] + z["deviation"]
            got = evaluate_maps(maps.numpy(), scores, labels, masks, with_pro)
            row.update({f"{split}_{k}": v for k, v in got.items()})
        results[name] = row
        print(f"{run.name:>16} {name:<28} " + " ".join(f"{k}={v:.3f}" for k, v in row.items()))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-aupro", action="store_true")
    parser.add_argument(
        "--val-synthesis",
        help="min_patches,max_patches,min_size,max_size of the validation anomalies "
        "(default: the default synthesis, as train's validation signal; blend yardstick only)",
    )
    parser.add_argument(
        "--val-yardstick",
        choices=YARDSTICKS,
        default="blend",
        help="how the validation anomalies are made: blend (as training's validation signal) "
        "or defects (scratches, stains, noise patches that training never sees)",
    )
    args = parser.parse_args(argv)
    synthesis = None
    if args.val_synthesis and args.val_yardstick != "blend":
        parser.error("--val-synthesis applies to --val-yardstick blend only")
    if args.val_synthesis:
        lo, hi, small, large = args.val_synthesis.split(",")
        synthesis = SynthesisConfig(
            min_patches=int(lo), max_patches=int(hi), min_size=float(small), max_size=float(large)
        )
    table: dict[str, dict] = {}
    for run in args.runs:
        table[str(run)] = run_one(run, not args.no_aupro, synthesis, args.val_yardstick)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
