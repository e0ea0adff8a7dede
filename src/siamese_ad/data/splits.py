"""Which images train and which are scored: few-shot choice, real anomalies, and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamese_ad.data.sample import CategoryData, DataError, Sample


@dataclass
class SplitManifest:
    """The images a model trained on, as paths relative to the data root (POSIX form).

    Attributes:
        train: normal training images.
        anomalies: real anomalous images moved from the test split into the training pool.
    """

    train: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "anomalies": list(self.anomalies)}

    @classmethod
    def from_dict(cls, raw: dict[str, list[str]]) -> SplitManifest:
        return cls(train=list(raw.get("train", [])), anomalies=list(raw.get("anomalies", [])))

    def trained_on(self) -> set[str]:
        return set(self.train) | set(self.anomalies)


def relative_key(sample: Sample, root: Path) -> str:
    """The sample's image path relative to `root`, or absolute when outside it."""
    try:
        return sample.image.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return sample.image.resolve().as_posix()


@dataclass
class Split:
    """Normal training images, real anomalies for training, and the images to score."""

    train: list[Sample]
    anomalies: list[Sample]
    test: list[Sample]
    manifest: SplitManifest


def make_split(data: CategoryData, shots: int, real_anomalies: int, seed: int) -> Split:
    """Chooses the training images (all, or a seeded `shots`) and `real_anomalies` per defect type.

    Raises:
        DataError: fewer normal images than `shots`, or a defect type with no image left to score.
    """
    rng = np.random.default_rng(seed)
    train = list(data.train)
    if shots:
        if shots > len(train):
            raise DataError(
                f"{shots}-shot asks for more normal images than {data.root} has ({len(train)})"
            )
        train = [train[i] for i in sorted(rng.choice(len(train), size=shots, replace=False))]
    anomalies: list[Sample] = []
    if real_anomalies:
        for defect in data.defect_types:
            pool = [s for s in data.test if s.defect == defect and s.label == 1]
            if real_anomalies >= len(pool):
                raise DataError(
                    f"defect type {defect!r} has {len(pool)} images; --real-anomalies "
                    f"{real_anomalies} would leave none to score. Use a smaller value."
                )
            anomalies += [
                pool[i] for i in sorted(rng.choice(len(pool), real_anomalies, replace=False))
            ]
    manifest = SplitManifest(
        train=[relative_key(s, data.root) for s in train],
        anomalies=[relative_key(s, data.root) for s in anomalies],
    )
    test = exclude_trained(data.test, manifest, data.root)
    return Split(train, anomalies, test, manifest)


def exclude_trained(samples: list[Sample], manifest: SplitManifest, root: Path) -> list[Sample]:
    """Drops the manifest's real anomalies from `samples`; refuses a trained normal image.

    Raises:
        DataError: a normal training image of the manifest is among `samples`.
    """
    used = set(manifest.anomalies)
    kept = [s for s in samples if relative_key(s, root) not in used]
    overlap = [s.image for s in kept if relative_key(s, root) in set(manifest.train)]
    if overlap:
        raise DataError(
            f"{overlap[0]} (and {len(overlap) - 1} more) was used to train this checkpoint and "
            "cannot be scored; evaluate on images the model has not seen."
        )
    return kept
