"""`siamese-ad demo`: the whole job, offline, on a synthetic category built on the spot."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from siamese_ad.app.evaluate import evaluate
from siamese_ad.checkpoint import CHECKPOINT, CheckpointError, read_checkpoint
from siamese_ad.config import Config, cpu_preset
from siamese_ad.data.synthetic import make_synthetic_category
from siamese_ad.training.trainer import as_trained, train

DEMO_IMAGE_SIZE = 128
DEMO_EPOCHS = 8
DEMO_POOL = 120


def run_demo(
    out: str | Path, epochs: int | None = None, device: str = "auto"
) -> tuple[dict[str, Any], Path]:
    """Builds the synthetic category under out/data, trains under out/model, evaluates to out/eval.

    A finished model in out/model is reused, so a second run only evaluates; one of another
    model (the demo of an earlier version, whose preset differed) is trained again.
    """
    out = Path(out)
    data = make_synthetic_category(out / "data", size=DEMO_IMAGE_SIZE)
    cfg = cpu_preset()
    cfg.data.root = str(data)
    cfg.data.image_size = DEMO_IMAGE_SIZE
    cfg.train.epochs = epochs or DEMO_EPOCHS
    cfg.train.device = device
    cfg.synthesis.pool_size = DEMO_POOL
    model_dir = out / "model"
    cfg = cfg.validate()
    if _another_model(model_dir / CHECKPOINT, as_trained(cfg)):
        print(f"{model_dir} holds the demo model of another version: training it again")
        shutil.rmtree(model_dir)
    ckpt = train(cfg, model_dir, resume=(model_dir / CHECKPOINT).exists())
    eval_dir = out / "eval"
    return evaluate(ckpt, eval_dir, device=device), eval_dir


def _another_model(checkpoint: Path, cfg: Config) -> bool:
    """Whether `checkpoint` exists and holds a model other than the one `cfg` (as `train` saves
    it) builds. An unreadable checkpoint is left to `train`, which names what is wrong with it."""
    if not checkpoint.exists():
        return False
    try:
        saved = read_checkpoint(checkpoint).get("signature")
    except CheckpointError:
        return False
    return saved != cfg.model_signature()
