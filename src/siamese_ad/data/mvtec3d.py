"""MVTec 3D-AD category reader: <split>/<type>/{rgb/*.png, xyz/*.tiff, gt/*.png}.

Only file headers are read here (image sizes, TIFF shapes); pixels are loaded later.
"""

from __future__ import annotations

from pathlib import Path

import tifffile
from PIL import Image, UnidentifiedImageError

from siamese_ad.data.decode import list_folders
from siamese_ad.data.sample import GOOD, CategoryData, DataError, Sample

SPLITS = ("train", "validation", "test")
LAYOUT_HINT = (
    "An MVTec 3D-AD category holds train/, validation/ and test/, each with "
    "<type>/rgb/<name>.png, <type>/xyz/<name>.tiff and (test) <type>/gt/<name>.png; "
    "train/ and validation/ hold only good/."
)


def _png_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image, read from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {path}: {err}; replace the file") from err
    return height, width


def _check_xyz(xyz: Path, size: tuple[int, int], rgb: Path) -> None:
    """Checks from the TIFF header that the cloud is H x W x 3 with the rgb image's H and W."""
    if not xyz.is_file():
        raise DataError(f"{xyz} is missing: every rgb image needs a point cloud ({rgb}).")
    try:
        with tifffile.TiffFile(xyz) as tif:
            shape = tuple(tif.series[0].shape)
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as err:
        raise DataError(f"cannot read point cloud {xyz}: {err}; replace the file") from err
    if len(shape) != 3 or shape[2] != 3:
        raise DataError(f"{xyz} has shape {shape}; a point cloud is H x W x 3 (x, y, z)")
    if shape[:2] != size:
        raise DataError(
            f"{xyz} is {shape[0]}x{shape[1]} but {rgb} is {size[0]}x{size[1]}; "
            "the point cloud and the rgb image must have the same size"
        )


def _read_type(folder: Path, with_masks: bool) -> list[Sample]:
    """Samples of one <split>/<type> folder, checked against their point clouds and masks."""
    rgb_dir = folder / "rgb"
    if not rgb_dir.is_dir():
        raise DataError(f"{rgb_dir} is missing. {LAYOUT_HINT}")
    defect = folder.name
    samples = []
    for rgb in sorted(rgb_dir.glob("*.png")):
        size = _png_size(rgb)
        xyz = folder / "xyz" / f"{rgb.stem}.tiff"
        _check_xyz(xyz, size, rgb)
        mask = None
        if with_masks:
            mask = folder / "gt" / f"{rgb.stem}.png"
            if not mask.is_file():
                raise DataError(f"{mask} is missing: every test image needs a mask ({rgb}).")
            if _png_size(mask) != size:
                raise DataError(f"{mask} and {rgb} differ in size; the mask must match the image")
        samples.append(Sample(rgb, int(defect != GOOD), defect, mask, xyz))
    return samples


def _read_split(folder: Path) -> list[Sample]:
    """Samples of one split folder; masks only for the test split."""
    if not folder.is_dir():
        raise DataError(f"split folder {folder} is missing. {LAYOUT_HINT}")
    with_masks = folder.name == "test"
    samples = []
    for type_dir in [p for p in list_folders(folder) if p.name[0] != "."]:
        if not with_masks and type_dir.name != GOOD:
            raise DataError(
                f"{type_dir}: {folder.name}/ may hold only good/ images; move it under test/"
            )
        samples.extend(_read_type(type_dir, with_masks))
    return samples


def read_mvtec3d(root: str | Path) -> CategoryData:
    """Reads one MVTec 3D-AD category folder.

    Each Sample has image = the rgb PNG, xyz = the point-cloud TIFF and, in the test split, mask
    = the gt PNG (all zero for good images); train and validation samples carry no mask.

    Raises:
        DataError: a split folder is missing, train or test is empty, an rgb image lacks its
            point cloud or mask, or their sizes differ.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. {LAYOUT_HINT}")
    train, validation, test = (_read_split(root / split) for split in SPLITS)
    for split, samples in (("train", train), ("test", test)):
        if not samples:
            raise DataError(f"{root / split} holds no rgb/*.png images. {LAYOUT_HINT}")
    return CategoryData(name=root.name, root=root, train=train, test=test, validation=validation)
