"""deviation.keep "auto": stage 2's weights stay only when the finished model separates the
defects validation yardstick at least as well as the stage-1 model did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_config

from siamese_ad.checkpoint import load_model, read_checkpoint
from siamese_ad.config import ConfigError, DeviationConfig
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.splits import relative_key
from siamese_ad.data.synthetic import make_synthetic_category
from siamese_ad.scoring import IMAGE_SCORE_KEY
from siamese_ad.training import stage2, trainer
from siamese_ad.training.stage2 import SNAPSHOT, stage2_pays
from siamese_ad.training.trainer import (
    FINAL_VALIDATION_KEY,
    STAGE1_VALIDATION_KEY,
    STAGE2_KEPT_KEY,
    train,
)
from siamese_ad.training.validation import DEFECTS_PREFIX, make_validation_set, validation_metrics

P = DEFECTS_PREFIX


def figures(image_max: float, deviation: float) -> dict[str, float]:
    return {f"{P}image_auroc_max": image_max, f"{P}image_auroc_deviation": deviation}


def test_stage2_pays_judges_stage_1_by_its_max_and_ties_keep_stage_2() -> None:
    # auto: the finished model by the better of its two scores, stage 1 by the max of its map
    assert stage2_pays(figures(0.8, 0.95), figures(0.6, 0.8), P, "auto")  # 0.8 against 0.8
    assert not stage2_pays(figures(0.9, 0.5), figures(0.85, 0.88), P, "auto")
    assert stage2_pays(figures(0.7, 0.99), figures(0.5, 0.71), P, "auto")
    # a fixed score compares that score
    assert not stage2_pays(figures(0.7, 0.9), figures(0.8, 0.85), P, "deviation")
    assert stage2_pays(figures(0.7, 0.9), figures(0.75, 0.1), P, "max")
    assert stage2_pays({}, figures(0.5, 0.5), P, "auto")  # no figures: the method's stage 2


def test_keep_defaults_to_always() -> None:
    assert DeviationConfig().keep == "always"


def test_keep_must_be_auto_or_always() -> None:
    with pytest.raises(ConfigError, match=r"deviation\.keep"):
        DeviationConfig(keep="never").validate()


def held_out_normals(payload: dict, cfg) -> torch.Tensor:
    """The run's validation images, in train's order."""
    data = Path(cfg.data.root)
    keys = {relative_key(s, data): s for s in read_category(data, "mvtec").train}
    held = [keys[k] for k in payload["manifest"]["validation"]]
    return load_images(held, cfg.data.image_size).images


def _train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pays: bool | None, keep: str):
    data = make_synthetic_category(
        tmp_path / "data", n_train=12, n_test_good=2, n_test_defect=1, size=32, defects=("spot",)
    )
    cfg = make_tiny_config(data)
    cfg.data.validation_fraction = 0.4  # 4 validation images: enough for the yardstick
    cfg.deviation.keep = keep
    saved: dict[str, dict] = {}
    real_save = stage2.save_snapshot

    def capture(path, model, figs):
        saved["weights"] = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        assert model.deviation_ready.item()  # the deviation statistics are in the snapshot
        real_save(path, model, figs)

    monkeypatch.setattr(trainer, "save_snapshot", capture)
    if pays is not None:
        monkeypatch.setattr(trainer, "stage2_pays", lambda *args: pays)
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
    same = all(torch.equal(payload["model"][k], before[k]) for k in before)
    assert same is not pays  # restored: every weight and buffer of stage 1; kept: stage 2's
    if not pays:
        assert extra[FINAL_VALIDATION_KEY] == extra[STAGE1_VALIDATION_KEY]
        assert extra[IMAGE_SCORE_KEY] == "max"  # stage 1's model scores by the max of the map
        model, saved = load_model(payload, run)  # the restored model, as it scores
        defects = make_validation_set(held_out_normals(payload, saved), saved, yardstick="defects")
        got = validation_metrics(model, defects, saved, torch.device("cpu"), P)
        assert got == pytest.approx(extra[STAGE1_VALIDATION_KEY], abs=1e-4)
    assert not (run.parent / SNAPSHOT).exists()  # removed once the run is finished


def test_always_keeps_stage_2_without_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, before, _ = _train(tmp_path, monkeypatch, None, "always")
    assert before is None
    assert STAGE2_KEPT_KEY not in payload["extra"]


def test_a_stale_snapshot_is_removed_by_a_new_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage1.pt left in the folder (a crash after the last save) is not read by a new run."""
    (tmp_path / "run").mkdir()
    torch.save(
        {"model": {"foreign": torch.zeros(1)}, "validation": figures(1.0, 1.0)},
        tmp_path / "run" / SNAPSHOT,
    )
    payload, before, run = _train(tmp_path, monkeypatch, None, "auto")
    assert before is not None  # this run's own snapshot was taken and compared
    assert payload["extra"][STAGE1_VALIDATION_KEY] != figures(1.0, 1.0)
    assert not (run.parent / SNAPSHOT).exists()
