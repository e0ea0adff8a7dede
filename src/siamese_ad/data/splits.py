"""Which images train and which are scored: few-shot choice, real anomalies, and the manifest."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamese_ad.data.sample import CategoryData, DataError, Sample

VALIDATION_SALT = 5  # keeps the validation draw independent of the few-shot draw
MANIFEST = "manifest.json"  # a run folder's copy of its checkpoint's manifest


@dataclass
class SplitManifest:
    """The images a model trained on, as paths relative to the data root (POSIX form).

    Attributes:
        train: normal training images.
        anomalies: real anomalous images moved from the test split into the training pool.
        validation: images that choose the decision thresholds (never trained on, never tested).
        sha256: path -> SHA-256 of the file's bytes, for every train and anomalies image
            (`record_sha256`; empty in manifests written before it existed).
    """

    train: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "train": list(self.train),
            "anomalies": list(self.anomalies),
            "validation": list(self.validation),
            "sha256": dict(self.sha256),
        }

    @classmethod
    def from_dict(cls, raw: dict) -> SplitManifest:
        return cls(
            train=list(raw.get("train", [])),
            anomalies=list(raw.get("anomalies", [])),
            validation=list(raw.get("validation", [])),
            sha256=dict(raw.get("sha256", {})),
        )

    def trained_on(self) -> set[str]:
        return set(self.train) | set(self.anomalies)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_manifest_file(path: Path, recorded: dict) -> None:
    """Reads a run folder's manifest.json back and warns, naming it, when it is not the manifest
    the checkpoint recorded (`recorded`), which is the one used."""
    try:
        same = json.loads(path.read_text()) == recorded
    except (OSError, ValueError):
        same = False
    if not same:
        warnings.warn(
            f"{path} is missing, unreadable or differs from the manifest inside the checkpoint "
            "(edited?); the checkpoint's record of the images it trained on is used.",
            stacklevel=2,
        )


def relative_key(sample: Sample, root: Path) -> str:
    """The sample's image path relative to `root`, or absolute when outside it."""
    try:
        return sample.image.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return sample.image.resolve().as_posix()


@dataclass
class Split:
    """Normal training images, real anomalies for training, the images to score, validation."""

    train: list[Sample]
    anomalies: list[Sample]
    test: list[Sample]
    manifest: SplitManifest
    validation: list[Sample] = field(default_factory=list)


def hold_out_validation(
    data: CategoryData, fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): the data set's own validation split when it has one, else a seeded
    `fraction` of the normal training images (at least one when fraction > 0) held out of train.
    """
    if data.validation:
        return list(data.train), list(data.validation)
    count = round(fraction * len(data.train))
    count = max(count, 1) if fraction > 0 else 0
    if count and count >= len(data.train):
        raise DataError(
            f"{data.root} has {len(data.train)} normal training image(s): too few to hold out "
            f"{count} for validation; lower data.validation_fraction (0 disables it)"
        )
    rng = np.random.default_rng([seed, VALIDATION_SALT])
    chosen = {int(i) for i in rng.choice(len(data.train), size=count, replace=False)}
    train = [s for i, s in enumerate(data.train) if i not in chosen]
    return train, [s for i, s in enumerate(data.train) if i in chosen]


def make_split(
    data: CategoryData,
    shots: int,
    real_anomalies: int,
    seed: int,
    validation_fraction: float = 0.0,
) -> Split:
    """Chooses the training images (all, or a seeded `shots`) and `real_anomalies` per defect type,
    after holding out the validation images (see `hold_out_validation`).

    Raises:
        DataError: fewer normal images than `shots`, or a defect type with no image left to score.
    """
    rng = np.random.default_rng(seed)
    train, validation = hold_out_validation(data, validation_fraction, seed)
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
        validation=[relative_key(s, data.root) for s in validation],
    )
    test = exclude_trained(data.test, manifest, data.root)
    return Split(train, anomalies, test, manifest, validation)


def record_sha256(split: Split, root: Path) -> None:
    """Fills split.manifest.sha256 with the SHA-256 of every train and anomalies image."""
    split.manifest.sha256 = {
        relative_key(s, root): file_sha256(s.image) for s in split.train + split.anomalies
    }


def exclude_trained(samples: list[Sample], manifest: SplitManifest, root: Path) -> list[Sample]:
    """Drops the manifest's real anomalies from `samples`, and any image whose bytes equal a
    trained one's (a renamed copy; warned about); refuses a trained normal image by path.

    Raises:
        DataError: a normal training image of the manifest is among `samples`.
    """
    used, trained_keys = set(manifest.anomalies), set(manifest.train)
    kept = [s for s in samples if relative_key(s, root) not in used]
    overlap = [s.image for s in kept if relative_key(s, root) in trained_keys]
    if overlap:
        raise DataError(
            f"{overlap[0]} (and {len(overlap) - 1} more) was used to train this checkpoint and "
            "cannot be scored; evaluate on images the model has not seen."
        )
    trained = set(manifest.sha256.values())
    copies = [s.image for s in kept if trained and file_sha256(s.image) in trained]
    if copies:
        warnings.warn(
            f"{copies[0]} (and {len(copies) - 1} more) holds the same bytes as an image this "
            "checkpoint trained on (a renamed copy); left out of scoring.",
            stacklevel=2,
        )
    left_out = set(copies)
    return [s for s in kept if s.image not in left_out]
