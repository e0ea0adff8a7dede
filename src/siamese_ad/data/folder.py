"""A plain folder layout for users' own data.

root/good/*.png            normal images; every k-th (by name) is held out for testing
root/<defect>/*.png        anomalous images of each defect type, test only
root/masks/<defect>/<name>.png   optional masks (non-zero = defective), same size as the image
"""

from __future__ import annotations

from pathlib import Path

from siamese_ad.data.decode import list_folders
from siamese_ad.data.images import list_images
from siamese_ad.data.mvtec import refuse_shared_mask
from siamese_ad.data.sample import GOOD, CategoryData, DataError, Sample, warn_missing_masks

MASKS = "masks"
LAYOUT_HINT = (
    "A folder data set holds good/*.png (normal images), <defect>/*.png (anomalous images) "
    "and optionally masks/<defect>/<name>.png."
)


def _mask_for(root: Path, defect: str, image: Path, siblings: list[Path]) -> Path | None:
    """The mask of `image`: masks/<defect>/<stem>.* or <stem>_mask.*, None when absent.

    Raises:
        DataError: a mask exists but another image of the defect folder (`siblings`) shares the
            stem, so it could belong to either (as data/mvtec.py).
    """
    folder = root / MASKS / defect
    candidates = sorted(folder.glob(f"{image.stem}*")) if folder.is_dir() else []
    found = next((c for c in candidates if c.stem in (image.stem, f"{image.stem}_mask")), None)
    refuse_shared_mask(found, image, siblings)
    return found


def read_folder(root: str | Path, holdout_every: int = 5) -> CategoryData:
    """Reads the plain folder layout.

    Args:
        root: the data set folder.
        holdout_every: every `holdout_every`-th good image (sorted by name) is kept for testing.

    Raises:
        DataError: `good/` is missing or empty; a mask is ambiguous (two images of one defect
            folder share a stem).
    """
    root = Path(root)
    good_dir = root / GOOD
    if not good_dir.is_dir():
        raise DataError(f"{root} has no good/ folder: {LAYOUT_HINT}")
    good = list_images(good_dir)
    if len(good) < 2:
        raise DataError(f"{good_dir} needs at least 2 images, found {len(good)}: {LAYOUT_HINT}")
    train = [Sample(p, 0) for i, p in enumerate(good) if (i + 1) % holdout_every]
    test = [Sample(p, 0) for i, p in enumerate(good) if not (i + 1) % holdout_every]
    for folder in [p for p in list_folders(root) if p.name not in (GOOD, MASKS)]:
        images = list_images(folder)
        test += [Sample(p, 1, folder.name, _mask_for(root, folder.name, p, images)) for p in images]
    warn_missing_masks(test, root)
    return CategoryData(name=root.name, root=root, train=train, test=test)
