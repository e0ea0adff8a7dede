"""RGB-D on MVTec 3D-AD: an RGB model and a depth model, each trained by both stages.

An rgbd run folder holds rgbd.json (which names the branches), config.yaml (the rgbd config) and
one ordinary run folder per branch: <out>/rgb and <out>/depth, each with its own checkpoint.pt,
config.yaml (modality rgb or depth) and manifest.json; the depth images are cached under
<out>/depth/depth_cache. Evaluation fuses the branches (evaluation/fusion.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from siamese_ad.config import Config, ConfigError
from siamese_ad.training.checkpoint import CheckpointError

RGBD_MANIFEST = "rgbd.json"
# Depth first: its point clouds are read before any training, so a broken cloud fails fast.
BRANCHES = ("depth", "rgb")
RGBD_FORMAT = 1


def branch_config(cfg: Config, modality: str) -> Config:
    """A copy of the rgbd config that trains one branch ("rgb" or "depth")."""
    out = copy.deepcopy(cfg)
    out.data.modality = modality
    return out.validate()


def train_rgbd(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Path]:
    """Trains the depth and the RGB branch in out_dir/<branch>; returns their checkpoint paths.

    Writes out_dir/rgbd.json before training, so an interrupted run can be resumed.

    Raises:
        ConfigError: the data format is not mvtec3d (only it has point clouds).
        CheckpointError: out_dir already holds an rgbd run and `resume` is False.
    """
    from siamese_ad.training.trainer import train

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
    branches = {name: f"{name}/checkpoint.pt" for name in BRANCHES}
    manifest.write_text(
        json.dumps({"format": RGBD_FORMAT, "modality": "rgbd", "branches": branches}, indent=2)
    )
    return {
        name: train(branch_config(cfg, name), out_dir / name, resume=resume) for name in BRANCHES
    }


def find_rgbd_manifest(path: str | Path) -> Path | None:
    """The rgbd.json of a run given as its folder or as the file itself; None otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / RGBD_MANIFEST
    return path if path.name == RGBD_MANIFEST and path.is_file() else None


def read_rgbd_manifest(path: str | Path) -> dict[str, Path]:
    """Branch name -> checkpoint path, read from an rgbd.json.

    Raises:
        CheckpointError: the file is unreadable or does not name both branches.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        branches = raw["branches"]
        return {name: path.parent / branches[name] for name in BRANCHES}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path} is not an rgbd run manifest naming the branches {', '.join(BRANCHES)} "
            f"({err}); retrain with --modality rgbd"
        ) from err
