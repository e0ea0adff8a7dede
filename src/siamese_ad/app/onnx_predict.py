"""`predict --model model.onnx`: scores images with an exported graph, without torch.

Needs only onnxruntime, NumPy and PIL (plus matplotlib for the heat-map colours); writes the same
scores.csv, heat maps and maps.npy as `predict --checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siamese_ad.config import as_hw
from siamese_ad.data.decode import collect_images, read_rgb
from siamese_ad.data.fit import unpad, unpad_images
from siamese_ad.data.sample import DataError
from siamese_ad.reporting.predictions import mask_paths, write_masks, write_predictions
from siamese_ad.thresholds import Thresholds

DEFAULT_BATCH = 8


@dataclass
class OnnxDetector:
    """An exported detector: an onnxruntime session and the metadata written beside it."""

    session: Any
    meta: dict[str, Any]

    @classmethod
    def load(cls, model: str | Path) -> OnnxDetector:
        """Opens model.onnx and reads model.json beside it (written by export_model)."""
        import onnxruntime as ort

        model = Path(model)
        meta_path = model.with_suffix(".json")
        if not model.is_file() or not meta_path.is_file():
            raise DataError(
                f"need {model} and its metadata {meta_path}: write both with "
                "siamese-ad export --checkpoint CKPT --format onnx --out MODEL.onnx"
            )
        fix = f"export it again: siamese-ad export --checkpoint CKPT --format onnx --out {model}"
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{meta_path} is not valid JSON ({err}); {fix}") from err
        try:
            session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for corrupt graphs
            reason = " ".join(str(err).split())[:200]
            raise DataError(f"cannot load {model}, corrupt or cut short ({reason}); {fix}") from err
        mismatch = _mismatch(meta, session)
        if mismatch:
            raise DataError(f"{meta_path} does not match {model}: {mismatch}; {fix}")
        return cls(session, meta)

    @property
    def image_hw(self) -> tuple[int, int]:
        """The graph's input (height, width), from model.json's image_size (a side or a pair)."""
        return as_hw(self.meta["image_size"])

    def run(self, images: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> {output name: (N, ...) array}: map (N, H, W), score (N,) and,
        with thresholds, anomalous (N,), normalised_score (N,), mask (N, H, W).

        Raises:
            ValueError: batch_size is given and below 1.
        """
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size {batch_size} must be at least 1 (--batch-size)")
        bs = batch_size or DEFAULT_BATCH
        names = list(self.meta["outputs"])
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, len(images), bs):
            chunk = images[start : start + bs].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            feed = {self.meta["input"]["name"]: np.ascontiguousarray(chunk)}
            for name, value in zip(names, self.session.run(names, feed), strict=True):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}


def _mismatch(meta: Any, session: Any) -> str | None:
    """What in model.json does not describe the graph of `session`; None when all does."""
    try:
        hw, name, outputs = as_hw(meta["image_size"]), meta["input"]["name"], list(meta["outputs"])
    except (KeyError, TypeError, ValueError) as err:
        return f"it lacks or garbles {err}"
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != name:
        return f"its input is {name!r}, the graph's {[i.name for i in inputs]}"
    if list(inputs[0].shape[2:]) != list(hw):
        return f"its image_size is {meta['image_size']}, the graph takes {inputs[0].shape[2:]}"
    graph = [o.name for o in session.get_outputs()]
    if outputs[:2] != ["map", "score"] or not set(outputs) <= set(graph):
        return f"its outputs are {outputs}, the graph's {graph}"
    return None


def unpadded(
    outputs: dict[str, np.ndarray], originals: list[tuple[int, int]], meta: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Under data.fit "pad": each map cropped to its image's part of the letterboxed input
    (data/fit.py), and what the graph derived from the map taken again there, as `Detector`
    scores: the max-of-map score, and with thresholds the decisions and the mask."""
    out = dict(outputs)
    maps = np.stack([unpad(m, hw) for m, hw in zip(outputs["map"], originals, strict=True)])
    out["map"] = maps
    if meta["score"] == "max":
        out["score"] = maps.reshape(len(maps), -1).max(axis=1).astype(outputs["score"].dtype)
    if "anomalous" in outputs and meta.get("thresholds"):
        thresholds = Thresholds.from_dict(meta["thresholds"])
        out["anomalous"] = thresholds.decide(out["score"])
        out["normalised_score"] = thresholds.normalise(out["score"]).astype(np.float32)
        out["mask"] = thresholds.mask(maps)
    return out


def predict_onnx(
    model: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    batch_size: int | None = None,
) -> list[dict]:
    """Writes scores.csv, heat maps and maps.npy under out_dir; returns the CSV rows."""
    detector = OnnxDetector.load(model)
    paths = collect_images(inputs)
    fit = detector.meta.get("fit", "stretch")  # models exported before data.fit: stretch
    read = [read_rgb(p, detector.image_hw, fit) for p in paths]
    images = np.stack([rgb for rgb, _ in read])
    outputs = detector.run(images, batch_size)
    if fit == "pad":
        originals = [hw for _, hw in read]
        outputs = unpadded(outputs, originals, detector.meta)
        images = unpad_images(images.transpose(0, 3, 1, 2), np.array(originals))
        images = images.transpose(0, 2, 3, 1)
    maps, scores = outputs["map"], outputs["score"]
    if "anomalous" not in outputs:
        return write_predictions(out_dir, paths, images, maps, scores)
    masks = mask_paths(out_dir, paths)
    extra = {
        "anomalous": outputs["anomalous"],
        "normalised_score": outputs["normalised_score"],
        "mask": np.array([m.as_posix() for m in masks]),
    }
    rows = write_predictions(out_dir, paths, images, maps, scores, extra)
    write_masks(masks, outputs["mask"])
    return rows
