"""MVTec AD category reader: train/good, test/<type>, ground_truth/<type>/<name>_mask.png."""

from __future__ import annotations

from pathlib import Path

from siamese_ad.data.decode import list_folders
from siamese_ad.data.images import list_images
from siamese_ad.data.sample import GOOD, CategoryData, DataError, Sample, warn_missing_masks

LAYOUT_HINT = (
    "An MVTec AD category holds train/good/*.png, test/<type>/*.png and "
    "ground_truth/<type>/<name>_mask.png."
)


def _find_mask(root: Path, defect: str, image: Path, siblings: list[Path]) -> Path | None:
    """The ground-truth mask of `image`: ground_truth/<defect>/<stem>_mask.png (or <stem>.png).

    A mask is found by the image's stem, so it is only taken when no other image in the same
    test folder (`siblings`) has that stem: for test/scratch/000.png and 000.jpg the mask
    000_mask.png could belong to either, and taking it for both would score one image against
    the other's defect.

    Raises:
        DataError: a mask exists but another image shares the stem (ambiguous mask).
    """
    folder = root / "ground_truth" / defect
    found = next(
        (
            folder / n
            for n in (f"{image.stem}_mask.png", f"{image.stem}.png")
            if (folder / n).is_file()
        ),
        None,
    )
    refuse_shared_mask(found, image, siblings)
    return found


def refuse_shared_mask(mask: Path | None, image: Path, siblings: list[Path]) -> None:
    """Refuses a stem-matched `mask` when another of `siblings` (the images of the same folder)
    shares `image`'s stem: the mask could belong to either.

    Raises:
        DataError: naming the mask and the images, with the fix.
    """
    twins = [p for p in siblings if p.stem == image.stem and p != image]
    if mask is not None and twins:
        names = " and ".join(str(p) for p in sorted([image, *twins]))
        raise DataError(
            f"ambiguous mask {mask}: it could belong to {names}, which share the name "
            f"{image.stem!r}. Rename all but one of them (and give each its own mask)."
        )


def read_mvtec(root: str | Path) -> CategoryData:
    """Reads one MVTec AD category folder.

    Raises:
        DataError: the folder is missing, empty or mis-laid, or a mask is ambiguous (two
            images of one defect folder share a stem). A defect image without a mask is kept,
            with a warning: it counts for the image metrics only.
    """
    root = Path(root)
    train_dir, test_dir = root / "train" / GOOD, root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DataError(f"{root} is not an MVTec AD category: {LAYOUT_HINT}")
    train = [Sample(p, 0) for p in list_images(train_dir)]
    if not train:
        raise DataError(f"{train_dir} holds no images: {LAYOUT_HINT}")
    test: list[Sample] = []
    for folder in list_folders(test_dir):
        defect = folder.name
        images = list_images(folder)
        for image in images:
            if defect == GOOD:
                test.append(Sample(image, 0, GOOD))
                continue
            test.append(Sample(image, 1, defect, _find_mask(root, defect, image, images)))
    if not test:
        raise DataError(f"{test_dir} holds no images: {LAYOUT_HINT}")
    warn_missing_masks(test, root)
    return CategoryData(name=root.name, root=root, train=train, test=test)
