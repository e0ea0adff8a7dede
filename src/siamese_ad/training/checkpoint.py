"""Checkpoints: written atomically at the end of every epoch, loaded safely (weights_only=True)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamese_ad.config import Config, ConfigError
from siamese_ad.models.teacher import TEACHERS
from siamese_ad.models.unet import TeacherStudentUNet, build_unet
from siamese_ad.training.errors import CheckpointError

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"  # its name inside a run folder


@dataclass
class TrainingState:
    """Where training stands: the stage in progress and the epochs it has finished."""

    stage: str = "stage1"  # stage1 | stage2 | done
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(h["seconds"] for h in self.history))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    atomic_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint with weights_only=True; a run folder means its checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).exists() and (path / "rgbd.json").exists():
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
    spec = TEACHERS.get(model.get("backbone", ""))
    legacy = spec.legacy_stages if spec is not None else None
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
    try:
        if payload.get("teacher") is not None:
            model.teacher.load_state_dict(payload["teacher"])
        missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    except RuntimeError as err:  # shapes or names that do not fit
        raise CheckpointError(
            f"{path} holds weights that do not fit the model its config describes "
            f"({' '.join(str(err).split())[:300]}); restore the checkpoint train wrote, or retrain."
        ) from err
    missing = [k for k in missing if not k.startswith("teacher.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model built from its config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); from another version?"
        )
    return model, cfg
