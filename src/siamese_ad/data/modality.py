"""Which picture of a sample the network sees: its RGB image, or its depth as 3 channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from siamese_ad.config import DataConfig, ImageSize
from siamese_ad.data.dataset import ImageLoader, fitted_loader
from siamese_ad.data.decode import fit_rgb
from siamese_ad.data.sample import DataError, Sample

DEPTH_CACHE = "depth_cache"


def depth_loader(cache_dir: Path, fit: str = "stretch") -> ImageLoader:
    """A loader that renders each sample's point cloud as a (3, h, w) uint8 depth image, fitted
    to the input as `fit` says (data/fit.py)."""
    from siamese_ad.data.depth import DepthCache

    cache = DepthCache(cache_dir)

    def load(sample: Sample, size: ImageSize) -> tuple[torch.Tensor, tuple[int, int]]:
        if sample.xyz is None:
            raise DataError(f"{sample.image} has no point cloud; depth needs MVTec 3D-AD xyz files")
        depth = cache.get(sample.xyz)
        original = depth.shape[:2]
        depth = fit_rgb(depth, size, fit)
        return torch.from_numpy(np.array(depth)).permute(2, 0, 1).contiguous(), original

    return load


def image_loader(cfg: DataConfig, cache_root: Path, modality: str | None = None) -> ImageLoader:
    """The loader for `modality` (default cfg.modality); depth images cached under cache_root."""
    modality = modality or cfg.modality
    if modality == "rgb":
        return fitted_loader(cfg.fit)
    if modality == "depth":
        return depth_loader(Path(cache_root) / DEPTH_CACHE, cfg.fit)
    raise DataError(f"modality {modality!r} is made of branches; load 'rgb' and 'depth' separately")
