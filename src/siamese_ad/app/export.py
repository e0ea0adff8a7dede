"""Exporting a trained detector as one graph: images -> (anomaly map, image score[, decision]).

The graph holds everything `AnomalyScorer` does in float32 (teacher, bottleneck, student, eq. 2
map with each stage divided by its normal mean under scoring.map_norm "mean", Gaussian blur, the
configured image score with its deviation standardisation) and, when the checkpoint holds them
(train stores them in its `extra`), the image and pixel decisions, with the thresholds chosen in
float32 (a scoring.bf16 run stores those apart). Inputs are fixed at the checkpoint's image size
H x W (EfficientNet-Lite's TF-SAME padding is resolved at that size); the batch size is dynamic.
A JSON file beside the model says how to feed and read it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from siamese_ad.checkpoint import CHECKPOINT
from siamese_ad.config import as_hw
from siamese_ad.evaluation.inference import Detector
from siamese_ad.io import atomic_write, atomic_write_text
from siamese_ad.scoring import AnomalyScorer
from siamese_ad.thresholds import LOGIT_AT_CENTRE, float32_thresholds

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts")}
INPUT_NAME = "images"
OPSET = 17
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class Decision:
    """Validation thresholds baked into the graph (siamese_ad/thresholds.py, same rules).

    Attributes:
        image: an image is anomalous when its score > image.
        pixel: a pixel is anomalous when its map value > pixel.
        spread: scale of the normalised score sigmoid(ln 9 (score - image) / spread).
    """

    image: float
    pixel: float
    spread: float

    OUTPUTS = ("anomalous", "normalised_score", "mask")


def decision_from(thresholds: Mapping[str, Any] | None) -> Decision | None:
    """Reads a checkpoint's `extra["thresholds"]` (Thresholds.to_dict()); None when absent."""
    if not thresholds:
        return None
    missing = [k for k in ("image", "pixel", "spread") if k not in thresholds]
    if missing:
        raise ValueError(f"checkpoint thresholds lack {missing}; retrain to recalibrate them")
    return Decision(
        float(thresholds["image"]), float(thresholds["pixel"]), float(thresholds["spread"])
    )


class ExportedScorer(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> map (B, H, W), score (B,) and, with a Decision,
    anomalous (B,) bool, normalised_score (B,) in (0, 1), mask (B, H, W) bool."""

    def __init__(self, scorer: AnomalyScorer, decision: Decision | None) -> None:
        super().__init__()
        self.scorer = scorer
        self.decision = decision

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.scorer(images)
        if self.decision is None:
            return out.map, out.score
        d = self.decision
        normalised = torch.sigmoid(LOGIT_AT_CENTRE * (out.score - d.image) / d.spread)
        return out.map, out.score, out.score > d.image, normalised, out.map > d.pixel


def metadata_path(model_path: str | Path) -> Path:
    """model.onnx -> model.json, the metadata written beside the model."""
    return Path(model_path).with_suffix(".json")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: equal once resolved (symlinks followed), or, when both
    exist, the same inode (hard links, case-insensitive file systems)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_out_path(checkpoint: str | Path, out_path: str | Path, fmt: str) -> None:
    """Refuses an --out that would destroy the checkpoint or itself, or has the wrong suffix.

    Args:
        checkpoint: --checkpoint as given: checkpoint.pt or its run folder.
        out_path: --out, the model file to write; its metadata goes to out_path with suffix .json.
        fmt: "onnx" or "torchscript".

    Raises:
        ValueError: one line naming the flag and the fix.
    """
    ckpt, out = Path(checkpoint), Path(out_path)
    if ckpt.is_dir():
        ckpt = ckpt / CHECKPOINT
    suffixes = SUFFIXES[fmt]
    fix = f"choose another file, e.g. --out {out.parent / ('model' + suffixes[0])}"
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the model file to write: {fix}")
    if out.suffix.lower() not in suffixes:
        raise ValueError(
            f"--out {out} must end in {' or '.join(suffixes)} for --format {fmt}: {fix}"
        )
    meta = metadata_path(out)
    if _same_file(out, ckpt):
        raise ValueError(f"--out {out} is the --checkpoint itself and would overwrite it: {fix}")
    if _same_file(meta, ckpt) or _same_file(meta, out):
        which = "--checkpoint" if _same_file(meta, ckpt) else "--out"
        raise ValueError(
            f"--out {out} would write its metadata to {meta}, which is the {which} file: {fix}"
        )


def _export_onnx(module: nn.Module, example: Tensor, names: list[str], fh: IO[bytes]) -> None:
    dynamic = {name: {0: "batch"} for name in [INPUT_NAME, *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the fixed image size
        torch.onnx.export(
            module,
            (example,),
            fh,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _export_torchscript(module: nn.Module, example: Tensor, fh: IO[bytes]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings; torch.jit's deprecation notice
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, fh)


def build_exportable(
    checkpoint: str | Path, weights: str | None = None
) -> tuple[ExportedScorer, dict[str, Any]]:
    """Loads a checkpoint (run folder or checkpoint.pt, only read) on the CPU in float32 eval
    mode; returns the module and its metadata."""
    detector = Detector.load(checkpoint, device="cpu", weights=weights)
    scorer = detector.scorer.to(memory_format=torch.contiguous_format).float().eval()
    thresholds = float32_thresholds(detector.payload)  # the graph scores in float32
    decision = decision_from(thresholds)
    module = ExportedScorer(scorer, decision).eval()
    cfg = detector.cfg
    size = cfg.data.image_size
    scale = scorer.map_scale()
    meta = {
        "image_size": size if isinstance(size, int) else list(size),  # a side, or [height, width]
        "fit": cfg.data.fit,  # pad: letterbox the input, crop the map back (data/fit.py)
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, *cfg.data.size_hw],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "NCHW RGB",
        },
        "outputs": ["map", "score", *(Decision.OUTPUTS if decision else ())],
        "score": "deviation" if scorer.uses_deviation() else "max",
        "map_norm": scorer.map_norm,  # mean: stage i's map divided by stage_map_mean[i]
        "stage_map_mean": None if scale is None else [float(v) for v in scale],
        "thresholds": dict(thresholds) if thresholds else None,
        "backbone": cfg.model.backbone,
        "modality": cfg.data.modality,
        "checkpoint": str(Path(checkpoint)),
    }
    return module, meta


def export_model(
    checkpoint: str | Path, out_path: str | Path, fmt: str = "onnx", weights: str | None = None
) -> Path:
    """Writes the detector of `checkpoint` as one ONNX or TorchScript graph, plus metadata.

    Args:
        checkpoint: checkpoint.pt written by train, or its run folder (only read).
        out_path: the model file to write; its metadata goes to out_path with suffix .json.
        fmt: "onnx" or "torchscript".
        weights: overrides where the teacher's weights come from (as Detector.load).

    Returns:
        out_path. Both files are written atomically.

    Raises:
        ValueError: an unknown format, or an out_path refused by `check_out_path` (the
            checkpoint itself, a folder, a wrong suffix, a metadata file over either file).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_out_path(checkpoint, out_path, fmt)
    out_path = Path(out_path)
    module, meta = build_exportable(checkpoint, weights)
    height, width = as_hw(meta["image_size"])
    example = torch.rand(
        EXAMPLE_BATCH, 3, height, width, generator=torch.Generator().manual_seed(0)
    )
    source = Path(checkpoint) / CHECKPOINT if Path(checkpoint).is_dir() else Path(checkpoint)
    with torch.no_grad():
        if fmt == "onnx":
            write = partial(_export_onnx, module, example, meta["outputs"])
        else:
            write = partial(_export_torchscript, module, example)
        atomic_write(out_path, write, inputs=[source])
    meta["format"] = fmt
    atomic_write_text(metadata_path(out_path), json.dumps(meta, indent=2), inputs=[source])
    return out_path
