"""RGB-D on MVTec 3D-AD: an RGB model and a depth model, each trained by both stages.

An rgbd run folder holds rgbd.json (which names the branches), config.yaml (the rgbd config) and
one ordinary run folder per branch: <out>/rgb and <out>/depth, each with its own checkpoint.pt,
config.yaml (modality rgb or depth) and manifest.json; the depth images are cached under
<out>/depth/depth_cache. Evaluation fuses the branches (evaluation/fusion.py); the
rgbd.json format lives in checkpoint.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from siamese_ad.checkpoint import BRANCHES, RGBD_MANIFEST, CheckpointError, write_rgbd_manifest
from siamese_ad.config import Config, ConfigError

TrainOne = Callable[[Config, Path, bool], Path]


def branch_config(cfg: Config, modality: str) -> Config:
    """A copy of the rgbd config that trains one branch ("rgb" or "depth")."""
    out = copy.deepcopy(cfg)
    out.data.modality = modality
    return out.validate()


def train_rgbd(
    cfg: Config, out_dir: str | Path, resume: bool, train_branch: TrainOne
) -> dict[str, Path]:
    """Trains the depth and the RGB branch in out_dir/<branch>; returns their checkpoint paths.

    Writes out_dir/rgbd.json before training, so an interrupted run can be resumed.

    Args:
        train_branch: trains one branch's config into its folder (train in training/trainer.py,
            passed in so that this module does not import it back).

    Raises:
        ConfigError: the data format is not mvtec3d (only it has point clouds).
        CheckpointError: out_dir already holds an rgbd run and `resume` is False.
    """
    cfg.validate()
    if cfg.data.format != "mvtec3d":
        raise ConfigError(
            f"data.modality=rgbd needs data.format=mvtec3d (point clouds), not {cfg.data.format!r}"
        )
    out_dir = Path(out_dir)
    manifest = out_dir / RGBD_MANIFEST
    if manifest.exists() and not resume:
        raise CheckpointError(
            f"{manifest} exists: pass --resume to continue it, or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out_dir / "config.yaml")
    write_rgbd_manifest(out_dir)
    return {
        name: train_branch(branch_config(cfg, name), out_dir / name, resume) for name in BRANCHES
    }
