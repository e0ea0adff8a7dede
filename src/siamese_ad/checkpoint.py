"""The run folder's format: checkpoints (written atomically at the end of every epoch, loaded
safely with weights_only=True) and the rgbd.json that names the two branches of an RGB-D run.

Below training and evaluation: train writes this format, everything else only reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamese_ad.backbones import ALIASES
from siamese_ad.config import Config, ConfigError
from siamese_ad.io import atomic_torch_save, atomic_write_text
from siamese_ad.models.teacher import upgrade_teacher_state
from siamese_ad.models.unet import TeacherStudentUNet, build_unet

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"  # its name inside a run folder
RGBD_MANIFEST = "rgbd.json"  # an RGB-D run folder's list of its branch run folders
# Depth first: its point clouds are read before any training, so a broken cloud fails fast.
BRANCHES = ("depth", "rgb")
RGBD_FORMAT = 1
# buffers added after checkpoints were first written: an older checkpoint lacks them and keeps
# the model's initial values, which reproduce the scoring it was trained with
LATER_BUFFERS = ("stage_map_mean",)


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit; the message names the file and the fix."""


@dataclass
class TrainingState:
    """Where training stands: the stage in progress and the epochs it has finished."""

    stage: str = "stage1"  # stage1 | stage2 | done
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(h["seconds"] for h in self.history))


def save_checkpoint(
    path: Path,
    model: TeacherStudentUNet,
    cfg: Config,
    state: TrainingState,
    manifest: dict[str, list[str]],
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Writes everything needed to resume training or to score images."""
    payload = {
        "format": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "signature": cfg.model_signature(),
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "teacher": model.teacher.state_dict() if cfg.model.weights == "none" else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "state": {"stage": state.stage, "epoch": state.epoch, "history": state.history},
        "manifest": manifest,
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint with weights_only=True; a run folder means its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).exists() and (path / RGBD_MANIFEST).exists():
            raise CheckpointError(
                f"{path} is an RGB-D run of two models: give one branch's checkpoint "
                f"({path / 'rgb' / CHECKPOINT} or {path / 'depth' / CHECKPOINT}), "
                "or evaluate the folder to score the fused pair"
            )
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: train first (siamese-ad train ... --out DIR)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {err}. Retrain or restore it."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a siamese-ad checkpoint (format {FORMAT_VERSION})")
    return payload


def with_legacy_stages(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved config from before `model.teacher_stages` existed names the stages its teacher
    had then (the backbone's legacy default); newer configs are returned as they are."""
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or "teacher_stages" in model:
        return raw
    alias = ALIASES.get(model.get("backbone", ""))
    legacy = alias.legacy_stages if alias is not None else None
    return {**raw, "model": {**model, "teacher_stages": list(legacy or ())}}


def _refuse_edited_config(payload: dict[str, Any], cfg: Config, path: Path) -> None:
    """Raises CheckpointError when the config inside the checkpoint no longer gives the model
    signature its weights were saved under (the config was edited after training)."""
    saved, now = payload.get("signature") or {}, cfg.model_signature()
    edited = {k: (v, now.get(k)) for k, v in saved.items() if now.get(k) != v}
    if edited:
        raise CheckpointError(
            f"{path} holds weights that do not fit its config (at training vs now: {edited}): "
            "the config inside it was changed; restore the checkpoint train wrote, or retrain."
        )


def load_model(
    payload: dict[str, Any], path: Path, expect: Config | None = None, weights: str | None = None
) -> tuple[TeacherStudentUNet, Config]:
    """Rebuilds the U-Net from a checkpoint payload.

    Args:
        payload: what read_checkpoint returned.
        path: the checkpoint's path, for messages.
        expect: when given, the checkpoint's model signature must equal this config's.
        weights: overrides where the teacher's weights come from.
    """
    try:
        cfg = Config.from_dict(with_legacy_stages(payload["config"]))
    except ConfigError as err:
        raise CheckpointError(f"{path} holds an invalid config: {err}") from err
    if expect is not None and expect.model_signature() != payload["signature"]:
        diff = {
            k: (payload["signature"].get(k), v)
            for k, v in expect.model_signature().items()
            if payload["signature"].get(k) != v
        }
        raise CheckpointError(
            f"{path} was trained with another configuration (checkpoint vs requested: {diff}); "
            "use a new --out folder, or the checkpoint's own config."
        )
    _refuse_edited_config(payload, cfg, path)
    model = build_unet(cfg.model, weights=weights)
    if payload.get("teacher") is not None:
        teacher = upgrade_teacher_state(
            payload["teacher"], cfg.model.backbone, cfg.model.teacher_stages
        )
        try:
            model.teacher.load_state_dict(teacher)
        except RuntimeError as err:
            raise CheckpointError(
                f"{path} holds teacher weights that do not fit the model its config describes "
                f"({cfg.model.backbone!r}: {str(err).splitlines()[0]}); restore the checkpoint "
                "train wrote, or retrain it with this version"
            ) from err
    load_trainable(model, payload["model"], path)
    return model, cfg


def load_trainable(model: TeacherStudentUNet, weights: dict[str, Any], path: Path) -> None:
    """Loads everything but the teacher (trainable_state_dict's keys) into `model`; weights that
    do not fit it, by shape or by name, are a CheckpointError naming `path`."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shapes or names that do not fit
        raise CheckpointError(
            f"{path} holds weights that do not fit the model its config describes "
            f"({' '.join(str(err).split())[:300]}); restore the checkpoint train wrote, or retrain."
        ) from err
    missing = [k for k in missing if not k.startswith("teacher.") and k not in LATER_BUFFERS]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); from another version?"
        )


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


def write_rgbd_manifest(out_dir: Path) -> Path:
    """Writes out_dir/rgbd.json, naming each branch's checkpoint; returns its path."""
    path = out_dir / RGBD_MANIFEST
    branches = {name: f"{name}/{CHECKPOINT}" for name in BRANCHES}
    manifest = {"format": RGBD_FORMAT, "modality": "rgbd", "branches": branches}
    atomic_write_text(path, json.dumps(manifest, indent=2))
    return path
