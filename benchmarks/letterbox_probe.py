"""Letterboxed input, probed without changing the project: mirror each image out to the input's
aspect ratio.

The `cpu` preset stretches every image to its input (256 x 256 for magnetic_tile, whose images'
height / width ranges from 0.38 to 2.8). A letterbox keeps each image's aspect ratio instead: this
probe writes a copy of a category (MVTec AD layout, outside the project) in which every image is
mirrored out to a square of its long side, or with `--ratio R` to the smallest box of height /
width R that holds it (numpy's "symmetric" padding, so the border continues the texture), and every
mask is padded with 0. Pad to the ratio of the input the copy will be trained at (kolektorsdd's
`auto` input is 384 x 192: `--ratio 2`). A model trained on that copy with the unchanged
`train` then sees each image isotropically scaled. Three commands:

    python benchmarks/letterbox_probe.py make ../shared/datasets/magnetic_tile /tmp/mt_pad
    siamese-ad train --data /tmp/mt_pad --preset cpu --seed 0 --train.track_validation false \
        --out runs/exp/PAD-magnetic_tile-s0
    python benchmarks/letterbox_probe.py test runs/exp/PAD-magnetic_tile-s0 \
        ../shared/datasets/magnetic_tile --copy /tmp/mt_pad
    python benchmarks/letterbox_probe.py shape runs/exp/PAD-magnetic_tile-s0 \
        ../shared/datasets/magnetic_tile --copy /tmp/mt_pad

`test` scores the test split on the original geometry: each map is cropped to its image's box in
the padded image and resized to the model's input, and each mask is read from the original category
at that size, as `siamese-ad evaluate` scores a stretched model (without `--copy` it scores a model
trained on the original category the same way, which reproduces `evaluate`'s figures, a model
trained with `data.fit: pad` included). The image
score is the max of the cropped map. `shape` is benchmarks/shape_yardstick.py's validation signal
for such a model: its defects are painted into each held-out validation image at its own size,
then the painted image is letterboxed as above, and the map cropped back.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from shape_yardstick import defective_set

from siamese_ad import metrics
from siamese_ad.data.dataset import read_category
from siamese_ad.data.images import load_image, load_mask
from siamese_ad.evaluation.inference import Detector
from siamese_ad.evaluation.thresholds import validation_samples

BOXES = "boxes.json"  # in the copy: relative path -> [top, left, height, width, padded h, w]
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def letterbox(array: np.ndarray, fill: str, ratio: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """(H, W[, C]) -> (H', W'[, C]): the smallest box of height / width `ratio` that holds the
    image, the image centred.

    Args:
        array: the image or mask.
        fill: "symmetric" (mirror the image outwards) or "constant" (zeros, for masks).
        ratio: the box's height / width (1: a square of the long side).

    Returns:
        The padded array and the image's box in it, [top, left, height, width, H', W'].
    """
    h, w = array.shape[:2]
    if h / w < ratio:
        height, width = max(h, round(w * ratio)), w
    else:
        height, width = h, max(w, round(h / ratio))
    top, left = (height - h) // 2, (width - w) // 2
    pad = [(top, height - h - top), (left, width - w - left)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode=fill), [top, left, h, w, height, width]


def make_copy(source: Path, out: Path, ratio: float = 1.0) -> None:
    """Writes the letterboxed copy of `source` (images as PNG, masks under their own names),
    each padded to height / width `ratio`."""
    boxes = {}
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in SUFFIXES):
        rel = path.relative_to(source)
        is_mask = rel.parts[0] == "ground_truth"
        fill = "constant" if is_mask else "symmetric"
        square, box = letterbox(np.asarray(Image.open(path)), fill, ratio)
        dest = rel if is_mask else rel.with_suffix(".png")
        (out / dest).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(square).save(out / dest)
        boxes[dest.as_posix()] = box
    (out / BOXES).write_text(json.dumps(boxes))
    print(f"{len(boxes)} files letterboxed into {out}")


def crop(amap: np.ndarray | torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """The part of an (h, w) map of a padded image that covers the image's `box`
    ([top, left, height, width, padded height, padded width], as `letterbox` returns it)."""
    amap = torch.as_tensor(amap)
    top, left, h, w, height, width = box
    kh, kw = amap.shape[-2] / height, amap.shape[-1] / width
    return amap[round(top * kh) : round((top + h) * kh), round(left * kw) : round((left + w) * kw)]


def key(path: Path, root: Path) -> str:
    """A file's path under its category without its suffix (the copy's images are PNG)."""
    return path.relative_to(root).with_suffix("").as_posix()


def ratio_of(detector: Detector) -> float:
    """The height / width of the model's input, which its letterboxed copy was padded to."""
    height, width = detector.cfg.data.size_hw
    return height / width


def original_of(path: Path, copy: Path, original: Path) -> Path:
    """The original file behind `path` in the copy (the copy's images are PNG)."""
    rel = path.relative_to(copy)
    return next((original / rel.parent).glob(rel.stem + ".*"))


def score_test(
    run: Path,
    original: Path,
    copy: Path | None,
    exclude: frozenset[str] = frozenset(),
    detector: Detector | None = None,
) -> dict[str, float]:
    """Image AUROC (max of the cropped map), pixel AUROC and AUPRO, overall and per defect,
    printed and returned; images whose `key` is in `exclude` are left out. `detector` (default:
    the run's, loaded) lets a probe score the run with another scorer.
    """
    detector = detector or Detector.load(run, "cpu")
    size = detector.cfg.data.size_hw
    boxes = json.loads((copy / BOXES).read_text()) if copy else {}
    root = copy or original
    test = [s for s in read_category(root, "mvtec").test if key(s.image, root) not in exclude]
    fit = detector.cfg.data.fit  # a model trained with data.fit "pad" letterboxes itself
    loaded = [load_image(s.image, size, fit) for s in test]  # (image, original (H, W)) each
    originals = None if copy else [hw for _, hw in loaded]
    inference = detector.run(torch.stack([image for image, _ in loaded]), originals=originals)
    maps, scores, masks = [], [], []
    for amap, sample, (_, original_hw) in zip(inference.maps, test, loaded, strict=True):
        if copy:
            box = boxes[sample.image.relative_to(copy).as_posix()]
            amap = crop(amap, box)
            image, hw = original_of(sample.image, copy, original), (box[2], box[3])
        else:
            amap = torch.as_tensor(amap)
            image, hw = sample.image, original_hw
        scores.append(float(amap.max()))
        maps.append(F.interpolate(amap[None, None], size=size, mode="bilinear")[0, 0])
        if sample.mask is None:
            masks.append(np.zeros(size, bool))
        else:
            mask = original_of(sample.mask, copy, original) if copy else sample.mask
            masks.append(load_mask(mask, size, hw, image).numpy())
    stack, truth = torch.stack(maps).numpy(), np.stack(masks)
    labels, top = np.array([s.label for s in test]), np.array(scores)
    figures = {
        "image_auroc": metrics.image_auroc(top, labels),
        # the configured image score (after stage 2: deviation or max, as train chose)
        "image_auroc_configured": metrics.image_auroc(inference.scores, labels),
        "pixel_auroc": metrics.pixel_auroc(stack, truth),
        "aupro": metrics.aupro(stack, truth),
    }
    print(
        f"{run.name}: {len(test)} test images, "
        + ", ".join(f"{name} {100 * value:.1f}" for name, value in figures.items())
    )
    for defect in sorted({s.defect for s in test} - {"good"}):
        keep = np.array([s.defect in (defect, "good") for s in test])
        image = metrics.image_auroc(top[keep], labels[keep])
        pixel = metrics.pixel_auroc(stack[keep], truth[keep])
        print(f"  {defect}: image AUROC {100 * image:.1f}, pixel AUROC {100 * pixel:.1f}")
    return figures


def score_shape(run: Path, original: Path, copy: Path | None) -> None:
    """benchmarks/shape_yardstick.py's image and pixel AUROC, letterboxing when `copy` is given."""
    detector = Detector.load(run, "cpu")
    paths = [Path(s.image) for s in validation_samples(detector)]
    if copy:
        paths = [original_of(p, copy, original) for p in paths]
    images, labels, masks = defective_set(detector, paths)
    scores, maps = [], []
    for image in images:
        if copy:
            square, box = letterbox(image, "symmetric", ratio_of(detector))
            amap = crop(detector.predict([square])[0].anomaly_map, box)
            scores.append(float(amap.max()))
            maps.append(amap.numpy())
        else:
            prediction = detector.predict([image])[0]
            scores.append(prediction.score)
            maps.append(prediction.anomaly_map)
    flat = np.concatenate([m.ravel() for m in maps])[None, None]
    truth = np.concatenate([m.ravel() for m in masks])[None, None]
    print(
        f"{run.name}: {len(images)} images, shape yardstick image AUROC "
        f"{100 * metrics.image_auroc(np.array(scores), labels):.2f}, pixel AUROC "
        f"{100 * metrics.pixel_auroc(flat, truth):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="write the letterboxed copy of a category")
    make.add_argument("source", type=Path)
    make.add_argument("out", type=Path)
    make.add_argument("--ratio", type=float, default=1.0, help="height / width to pad to")
    for name in ("test", "shape"):
        score = sub.add_parser(name, help=f"score a run ({name})")
        score.add_argument("run", type=Path)
        score.add_argument("original", type=Path, help="the original category")
        score.add_argument("--copy", type=Path, help="the letterboxed copy the run trained on")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="mask .* holds values")  # magnetic_tile's masks
    if args.command == "make":
        make_copy(args.source, args.out, args.ratio)
    elif args.command == "test":
        score_test(args.run, args.original, args.copy)
    else:
        score_shape(args.run, args.original, args.copy)


if __name__ == "__main__":
    main()
