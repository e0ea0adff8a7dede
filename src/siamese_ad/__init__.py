"""siamese-ad: two-stage contrastive Siamese teacher-student U-Net for anomaly detection.

The public API a notebook needs: `Config` (every setting), `train(cfg, out_dir)` (writes a run
folder, decision thresholds included) and `Detector` (`Detector.load(run_folder)`, then
`predict` / `predict_iter`). They are imported on first use, so `import siamese_ad` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "Detector", "train"]

_HOMES = {
    "Config": "siamese_ad.config",
    "Detector": "siamese_ad.evaluation.inference",
    "train": "siamese_ad.training.trainer",
}

if TYPE_CHECKING:
    from siamese_ad.config import Config
    from siamese_ad.evaluation.inference import Detector
    from siamese_ad.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'siamese_ad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
