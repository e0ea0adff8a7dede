"""deviation.keep "auto": stage 2's weights stay only when the finished model separates the
defects validation yardstick at least as well as the stage-1 model did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_config

from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.config import ConfigError, DeviationConfig
from siamese_ad.data.synthetic import make_synthetic_category
from siamese_ad.training import stage2, trainer
from siamese_ad.training.stage2 import SNAPSHOT, stage2_pays
from siamese_ad.training.trainer import (
    FINAL_VALIDATION_KEY,
    STAGE1_VALIDATION_KEY,
    STAGE2_KEPT_KEY,
    train,
)
from siamese_ad.training.validation import DEFECTS_PREFIX

P = DEFECTS_PREFIX


def figures(image_max: float, deviation: float) -> dict[str, float]:
    return {f"{P}image_auroc_max": image_max, f"{P}image_auroc_deviation": deviation}


def test_stage2_pays_compares_the_better_image_score_and_ties_keep_it() -> None:
    assert stage2_pays(figures(0.8, 0.7), figures(0.6, 0.8), P)  # 0.8 against 0.8: a tie
    assert not stage2_pays(figures(0.9, 0.5), figures(0.85, 0.88), P)
    assert stage2_pays(figures(0.7, 0.7), figures(0.5, 0.71), P)


def test_keep_must_be_auto_or_always() -> None:
    with pytest.raises(ConfigError, match="deviation.keep"):
        DeviationConfig(keep="never").validate()


def _train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pays: bool | None, keep: str):
    data = make_synthetic_category(
        tmp_path / "data", n_train=12, n_test_good=2, n_test_defect=1, size=32, defects=("spot",)
    )
    cfg = make_tiny_config(data)
    cfg.data.validation_fraction = 0.4  # 4 validation images: enough for the yardstick
    cfg.deviation.keep = keep  # the default is tested by the config tests
    saved: dict[str, dict] = {}
    real_save = stage2.save_snapshot

    def capture(path, model, figs):
        saved["weights"] = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        assert model.deviation_ready.item()  # the deviation statistics are in the snapshot
        real_save(path, model, figs)

    monkeypatch.setattr(trainer, "save_snapshot", capture)
    if pays is not None:
        monkeypatch.setattr(trainer, "stage2_pays", lambda before, after, prefix: pays)
    run = train(cfg, tmp_path / "run")
    return read_checkpoint(run), saved.get("weights"), run


@pytest.mark.parametrize("pays", [False, True])
def test_auto_restores_stage_1_only_when_stage_2_does_not_pay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pays: bool
) -> None:
    payload, before, run = _train(tmp_path, monkeypatch, pays, "auto")
    assert before is not None
    extra = payload["extra"]
    assert extra[STAGE2_KEPT_KEY] is pays
    student = [k for k in before if k.startswith("student.") and before[k].is_floating_point()]
    same = all(torch.equal(payload["model"][k], before[k]) for k in student)
    assert same is not pays  # restored: stage 1's weights exactly; kept: stage 2 moved them
    if not pays:
        assert extra[FINAL_VALIDATION_KEY] == extra[STAGE1_VALIDATION_KEY]
        assert torch.equal(payload["model"]["stage_map_mean"], before["stage_map_mean"])
    assert not (run.parent / SNAPSHOT).exists()  # removed once the run is finished


def test_always_keeps_stage_2_without_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, before, _ = _train(tmp_path, monkeypatch, None, "always")
    assert before is None
    assert STAGE2_KEPT_KEY not in payload["extra"]
