"""scoring.image_score "auto": train picks max or deviation on its validation signal, and every
later scorer (Detector, thresholds, export) uses that choice."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import TinyRun, make_tiny_config

from siamese_ad.checkpoint import TrainingState, load_model, read_checkpoint
from siamese_ad.config import Config, ScoringConfig
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.splits import relative_key
from siamese_ad.data.synthetic import make_synthetic_category
from siamese_ad.evaluation.inference import Detector
from siamese_ad.scoring import IMAGE_SCORE_KEY, choose_image_score, trained_scoring
from siamese_ad.training.trainer import FINAL_VALIDATION_KEY, _Run, train
from siamese_ad.training.validation import DEFECTS_PREFIX, make_validation_set, validation_metrics

CPU = torch.device("cpu")


def test_the_rule_keeps_deviation_unless_max_is_strictly_better() -> None:
    assert choose_image_score(0.61, 0.55) == "max"
    assert choose_image_score(0.90, 0.90) == "deviation"
    assert choose_image_score(0.80, 0.93) == "deviation"


def test_only_auto_takes_the_stored_choice() -> None:
    auto, fixed = ScoringConfig(), ScoringConfig(image_score="deviation")
    assert trained_scoring(auto, {IMAGE_SCORE_KEY: "max"}).image_score == "max"
    assert trained_scoring(fixed, {IMAGE_SCORE_KEY: "max"}).image_score == "deviation"
    assert trained_scoring(auto, {}).image_score == "auto"
    assert trained_scoring(auto, None) is auto


@pytest.mark.parametrize("choice", ["max", "deviation"])
def test_detector_scores_with_the_stored_choice(tiny_run: TinyRun, choice: str) -> None:
    payload = copy.deepcopy(read_checkpoint(tiny_run.run))
    payload.setdefault("extra", {})[IMAGE_SCORE_KEY] = choice
    plain = Detector.load(tiny_run.run, device="cpu")
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    model = copy.deepcopy(plain.scorer.model)
    detector = Detector.from_model(model, plain.cfg, torch.device("cpu"), payload)
    out = detector.run(images)
    expected = out.scores_max if choice == "max" else out.scores_deviation
    assert detector.scorer.uses_deviation() == (choice == "deviation")
    assert (out.scores == expected).all()


def test_train_chooses_on_the_finished_models_defects_scores(tmp_path: Path) -> None:
    """The finished model, its map means set, is scored on the defects yardstick at the end
    (extra["final_validation"]) and the choice is made on those figures, not on the last epoch's
    (scored before the means were set: the plain sum)."""
    data = make_synthetic_category(
        tmp_path / "data", n_train=12, n_test_good=2, n_test_defect=1, size=32, defects=("spot",)
    )
    cfg = make_tiny_config(data)
    cfg.data.validation_fraction = 0.4  # 4 validation images: enough for the signal
    run = train(cfg, tmp_path / "run")
    payload = read_checkpoint(run)
    last = payload["state"]["history"][-1]
    assert {"val_image_auroc_deviation", "val_defects_image_auroc_deviation"} <= last.keys()
    final = payload["extra"][FINAL_VALIDATION_KEY]
    assert final["val_defects_image_auroc_deviation"] == last["val_defects_image_auroc_deviation"]
    model, saved = load_model(payload, run)  # as it scores: map means set
    keys = {relative_key(s, data): s for s in read_category(data, "mvtec").train}
    held_out = [keys[k] for k in payload["manifest"]["validation"]]  # in train's order
    normals = load_images(held_out, saved.data.image_size).images
    defects = make_validation_set(normals, saved, yardstick="defects")
    got = validation_metrics(model, defects, saved, CPU, DEFECTS_PREFIX)
    assert final == pytest.approx(got, abs=1e-4)  # memory layouts: float noise in pixel AUROC
    wanted = choose_image_score(
        final["val_defects_image_auroc_max"], final["val_defects_image_auroc_deviation"]
    )  # the defects yardstick decides; the blend one is logged beside it
    assert payload["extra"][IMAGE_SCORE_KEY] == wanted
    detector = Detector.load(run, device="cpu")
    assert detector.scorer.uses_deviation() == (wanted == "deviation")


@pytest.mark.parametrize(
    ("entry", "wanted"),
    [
        # the defects yardstick decides when the history has it, whatever the blend one says
        (
            {
                "val_image_auroc_max": 0.9,
                "val_image_auroc_deviation": 0.5,
                "val_defects_image_auroc_max": 0.6,
                "val_defects_image_auroc_deviation": 0.7,
            },
            "deviation",
        ),
        (
            {
                "val_image_auroc_max": 0.5,
                "val_image_auroc_deviation": 0.9,
                "val_defects_image_auroc_max": 0.8,
                "val_defects_image_auroc_deviation": 0.7,
            },
            "max",
        ),
        # a history written before the defects yardstick existed (a resumed run): blend decides
        ({"val_image_auroc_max": 0.9, "val_image_auroc_deviation": 0.5}, "max"),
        ({"val_image_auroc_max": 0.9}, None),
    ],
)
def test_auto_choice_reads_the_defects_yardstick_first(
    entry: dict[str, float], wanted: str | None
) -> None:
    state = TrainingState()
    state.history.append({"stage": "stage2", **entry})
    run = _Run.__new__(_Run)
    run.cfg, run.state = Config(), state
    assert run.auto_image_score() == wanted


def test_the_finished_models_figures_override_the_last_epochs() -> None:
    state = TrainingState()
    state.history.append(
        {
            "stage": "stage2",
            "val_defects_image_auroc_max": 0.9,  # the plain sum, before the map means were set
            "val_defects_image_auroc_deviation": 0.7,
        }
    )
    run = _Run.__new__(_Run)
    run.cfg, run.state = Config(), state
    assert run.auto_image_score() == "max"
    final = {"val_defects_image_auroc_max": 0.6, "val_defects_image_auroc_deviation": 0.7}
    assert run.auto_image_score(final) == "deviation"


def test_the_rule_chooses_with_per_epoch_validation_off(tmp_path: Path) -> None:
    """`train.track_validation: false` drops the per-epoch signal, not the finished model's
    defects scores: the image-score rule still has what it reads."""
    data = make_synthetic_category(
        tmp_path / "data", n_train=12, n_test_good=2, n_test_defect=1, size=32, defects=("spot",)
    )
    cfg = make_tiny_config(data)
    cfg.data.validation_fraction = 0.4
    cfg.train.track_validation = False
    payload = read_checkpoint(train(cfg, tmp_path / "run"))
    assert all("val_image_auroc_max" not in h for h in payload["state"]["history"])
    final = payload["extra"][FINAL_VALIDATION_KEY]
    wanted = choose_image_score(
        final["val_defects_image_auroc_max"], final["val_defects_image_auroc_deviation"]
    )
    assert payload["extra"][IMAGE_SCORE_KEY] == wanted
