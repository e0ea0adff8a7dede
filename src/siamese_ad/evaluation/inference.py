"""Running a trained detector over images, batch by batch, without gradients.

`Detector.run` scores decoded (N, 3, h, w) uint8 images; `Detector.predict` and `predict_iter`
take paths, PIL images or arrays of any size (evaluation/inputs.py) and give one `Prediction`
each, its map back at the image's size, with the decisions of the thresholds `train` stored.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from siamese_ad.checkpoint import CHECKPOINT, load_model, read_checkpoint
from siamese_ad.config import Config
from siamese_ad.device import autocast, select_device, to_device
from siamese_ad.evaluation.inputs import ImageInput, batches, resize_map
from siamese_ad.models.folding import fold_checked
from siamese_ad.models.unet import TeacherStudentUNet
from siamese_ad.scoring import AnomalyOutput, AnomalyScorer, trained_scoring
from siamese_ad.thresholds import Thresholds, stored_thresholds

OriginalSizes = torch.Tensor | Sequence[tuple[int, int]]  # (N, 2): each image's (height, width)


@dataclass
class Inference:
    """Scores and maps for N images.

    Attributes:
        maps: (N, H, W) float32 anomaly maps.
        scores: (N,) the configured image score.
        scores_max: (N,) max of the map.
        scores_deviation: (N,) deviation score, or None before stage 2.
        seconds: wall time of the forward passes.
    """

    maps: np.ndarray
    scores: np.ndarray
    scores_max: np.ndarray
    scores_deviation: np.ndarray | None
    seconds: float

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(len(self.scores), 1)


@dataclass
class Prediction:
    """What the detector says about one image, at the image's original size (H, W).

    Attributes:
        score: the configured image score (deviation after stage 2, else max of the map).
        normalised_score: in (0, 1), 0.5 exactly at the image threshold; None without thresholds.
        anomalous: score > the image threshold; None without thresholds.
        anomaly_map: (H, W) float32, the map resized bilinearly from the model's input size.
        mask: (H, W) bool, anomaly_map > the pixel threshold; None without thresholds.
    """

    score: float
    normalised_score: float | None
    anomalous: bool | None
    anomaly_map: np.ndarray
    mask: np.ndarray | None


@dataclass
class Detector:
    """A loaded checkpoint ready to score images.

    With `compile=True` the scorer runs through `torch.compile` (Inductor, weights frozen as
    constants): the first batch of each size pays the compilation (seconds to a minute), later
    ones run faster. `run` pads a short last batch to the batch size so that one compiled graph
    serves every batch. If compilation fails (no C++ compiler, say) it warns and runs eagerly.
    Scoring runs in float32, or under bf16 autocast when the checkpoint's scoring.bf16 says so
    (its stored thresholds were then chosen in bf16 too).
    """

    scorer: AnomalyScorer
    cfg: Config
    payload: dict
    device: torch.device
    compile: bool = False
    _forward: Callable[[torch.Tensor], AnomalyOutput] | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str = "auto",
        weights: str | None = None,
        compile: bool = False,
    ) -> Detector:
        """Loads a checkpoint (weights_only=True) onto `device` in eval mode; only reads it.

        Args:
            checkpoint: train's run folder (--out) or its checkpoint.pt.
            device: auto, cpu, cuda or cuda:N.
            weights: overrides where the teacher's weights come from.
            compile: score through torch.compile (class doc).
        """
        path = Path(checkpoint)
        payload = read_checkpoint(path)
        model, cfg = load_model(
            payload, path / CHECKPOINT if path.is_dir() else path, weights=weights
        )
        return cls.from_model(model, cfg, select_device(device), payload, compile=compile)

    @classmethod
    def from_model(
        cls,
        model: TeacherStudentUNet,
        cfg: Config,
        device: torch.device,
        payload: dict,
        compile: bool = False,
    ) -> Detector:
        """Prepares a model for inference: eval mode on `device`, channels_last as configured,
        and BatchNorm folded into the convolutions (models/folding.py) when that reproduces the
        unfolded outputs on a probe image. This changes `model` in place: it is no longer trainable.
        """
        model = model.to(device).eval()
        probe = torch.rand(1, 3, *cfg.data.size_hw, generator=torch.Generator().manual_seed(0))
        fold_checked(model, probe.to(device))
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        scoring = trained_scoring(cfg.scoring, payload.get("extra"))
        scorer = AnomalyScorer(model, scoring, cfg.deviation.topk).to(device).eval()
        return cls(scorer, cfg, payload, device, compile=compile)

    def _score(self, x: torch.Tensor) -> AnomalyOutput:
        """One batch through the scorer: compiled when asked for and possible, else eager."""
        if not self.compile:
            return self.scorer(x)
        if self._forward is None:
            self._forward = torch.compile(self.scorer, dynamic=False, options={"freezing": True})
        try:
            return self._forward(x)
        except Exception as err:  # any compiler failure: eager re-raises real errors
            warnings.warn(
                f"torch.compile failed, scoring without it ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); drop --compile to silence this",
                RuntimeWarning,
                stacklevel=3,
            )
            self.compile, self._forward = False, None
            return self.scorer(x)

    @property
    def thresholds(self) -> Thresholds | None:
        """The decision thresholds train stored in the checkpoint; None for a run without
        validation images, or one trained before train stored them."""
        return stored_thresholds(self.payload)

    def _batch(
        self, chunk: torch.Tensor, bs: int, originals: OriginalSizes | None = None
    ) -> AnomalyOutput:
        """(n, 3, h, w) uint8 with n <= bs -> the n images' outputs, on the CPU in float32.

        With data.fit "pad" and the images' `originals` ((height, width) each), each map is
        cropped to its image's part of the letterboxed input and resized back (data/fit.py), and
        the max of the map is taken there."""
        n = len(chunk)
        if self.compile and n < bs:  # one graph for every batch: pad with the last image
            chunk = torch.cat([chunk, chunk[-1:].expand(bs - n, *chunk.shape[1:])])
        x = to_device(chunk, self.device, self.cfg.train.channels_last)
        with autocast(self.device, self.cfg.scoring.bf16):  # off: float32, as the ONNX graph
            out = self._score(x)
        dev = out.score_deviation
        out = AnomalyOutput(
            out.map[:n].float().cpu(),
            out.score[:n].float().cpu(),
            out.score_max[:n].float().cpu(),
            None if dev is None else dev[:n].float().cpu(),
        )
        if originals is not None and self.cfg.data.fit == "pad":
            return out.unpadded(originals, not self.scorer.uses_deviation())
        return out

    @torch.inference_mode()
    def run(
        self,
        images: torch.Tensor,
        batch_size: int | None = None,
        originals: OriginalSizes | None = None,
    ) -> Inference:
        """(N, 3, h, w) uint8 -> Inference.

        Args:
            images: the images at the model's input size, fitted as data.fit says.
            batch_size: images per forward pass (default: train.batch_size).
            originals: (N, 2) the images' original (height, width); under data.fit "pad" the
                maps and the max of the map then cover the images only, not their padding.
        """
        bs = batch_size or self.cfg.train.batch_size
        if self.compile:
            bs = max(1, min(bs, len(images)))
        maps, scores, smax, sdev = [], [], [], []
        start = time.perf_counter()
        chunks = tqdm(images.split(bs), desc="scoring", leave=False, unit="batch")
        for i, chunk in enumerate(chunks):
            sizes = None if originals is None else originals[i * bs : i * bs + len(chunk)]
            out = self._batch(chunk, bs, sizes)
            maps.append(out.map)
            scores.append(out.score)
            smax.append(out.score_max)
            if out.score_deviation is not None:
                sdev.append(out.score_deviation)
        seconds = time.perf_counter() - start
        return Inference(
            maps=torch.cat(maps).numpy(),
            scores=torch.cat(scores).numpy(),
            scores_max=torch.cat(smax).numpy(),
            scores_deviation=torch.cat(sdev).numpy() if sdev else None,
            seconds=seconds,
        )

    def predict_iter(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int | None = None
    ) -> Iterator[Prediction]:
        """Yields one Prediction per image, in order, reading and scoring `batch_size` images
        at a time: a generator of images is consumed batch by batch, never held whole.

        Args:
            images: paths, PIL images or arrays ((H, W) or (H, W, 3), uint8 or float in
                [0, 1]), in any iterable; a single one is one image.
            batch_size: images per forward pass (default: train.batch_size).
        """
        bs = self.cfg.train.batch_size if batch_size is None else batch_size
        if bs < 1:
            raise ValueError(f"batch size {bs} must be at least 1")
        thresholds = self.thresholds
        for chunk, sizes in batches(images, self.cfg.data.image_size, bs, self.cfg.data.fit):
            with torch.inference_mode():
                out = self._batch(chunk, bs, sizes)
            scores = out.score.numpy()
            for i, size in enumerate(sizes):
                yield _prediction(float(scores[i]), resize_map(out.map[i], size), thresholds)

    def predict(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int | None = None
    ) -> list[Prediction]:
        """`predict_iter` collected into a list; for long streams iterate `predict_iter`."""
        return list(self.predict_iter(images, batch_size))


def _prediction(score: float, amap: np.ndarray, thresholds: Thresholds | None) -> Prediction:
    """One image's Prediction from its score and (H, W) map, with the thresholds' decisions."""
    if thresholds is None:
        return Prediction(score, None, None, amap, None)
    normalised = float(thresholds.normalise(np.array([score]))[0])
    anomalous = bool(thresholds.decide(np.array([score]))[0])
    return Prediction(score, normalised, anomalous, amap, thresholds.mask(amap))
