"""MVTec AD category reader: train/good, test/<type>, ground_truth/<type>/<name>_mask.png."""

from __future__ import annotations

from pathlib import Path

from siamese_ad.data.images import list_images
from siamese_ad.data.sample import GOOD, CategoryData, DataError, Sample

LAYOUT_HINT = (
    "An MVTec AD category holds train/good/*.png, test/<type>/*.png and "
    "ground_truth/<type>/<name>_mask.png."
)


def _find_mask(root: Path, defect: str, image: Path) -> Path | None:
    folder = root / "ground_truth" / defect
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mvtec(root: str | Path) -> CategoryData:
    """Reads one MVTec AD category folder.

    Raises:
        DataError: the folder is missing, empty or mis-laid; a defect image lacks a mask.
    """
    root = Path(root)
    train_dir, test_dir = root / "train" / GOOD, root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DataError(f"{root} is not an MVTec AD category: {LAYOUT_HINT}")
    train = [Sample(p, 0) for p in list_images(train_dir)]
    if not train:
        raise DataError(f"{train_dir} holds no images: {LAYOUT_HINT}")
    test: list[Sample] = []
    for folder in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = folder.name
        for image in list_images(folder):
            if defect == GOOD:
                test.append(Sample(image, 0, GOOD))
                continue
            mask = _find_mask(root, defect, image)
            if mask is None:
                raise DataError(
                    f"no mask for {image}: expected {root / 'ground_truth' / defect}/"
                    f"{image.stem}_mask.png. Add the mask or move the image out of test/."
                )
            test.append(Sample(image, 1, defect, mask))
    if not test:
        raise DataError(f"{test_dir} holds no images: {LAYOUT_HINT}")
    return CategoryData(name=root.name, root=root, train=train, test=test)
