"""The records that describe a data set: one `Sample` per image, grouped into a `CategoryData`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

GOOD = "good"


class DataError(ValueError):
    """Bad input data; the message names the file or folder and the fix."""


@dataclass(frozen=True)
class Sample:
    """One image on disk with what is known about it.

    Attributes:
        image: path of the image file.
        label: 0 for a normal (good) image, 1 for an anomalous one.
        defect: the defect type, or "good".
        mask: path of the ground-truth mask (non-zero = anomalous), None when absent;
            a missing mask on a good image means all-normal.
        xyz: path of the point-cloud TIFF (MVTec 3D-AD), None for 2-D data sets.
    """

    image: Path
    label: int
    defect: str = GOOD
    mask: Path | None = None
    xyz: Path | None = None

    @property
    def key(self) -> str:
        """A stable identifier used in manifests and CSV files: defect/file name."""
        return f"{self.defect}/{self.image.name}"


@dataclass
class CategoryData:
    """One category of a data set, split into normal training images, validation and test."""

    name: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    validation: list[Sample] = field(default_factory=list)

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect for s in self.test if s.label == 1})


def warn_missing_masks(test: list[Sample], root: Path) -> None:
    """Warns, with their count, when defective test images have no mask: their image scores
    count, and the pixel metrics use only the images with pixel truth."""
    defective = [s for s in test if s.label == 1]
    missing = sum(s.mask is None for s in defective)
    if missing:
        warnings.warn(
            f"{missing} of {len(defective)} defective test images in {root} have no mask: "
            "image metrics use every test image, pixel AUROC and AUPRO only the images with "
            "masks (and normal ones), n/a when no defective image has a mask",
            stacklevel=2,
        )
