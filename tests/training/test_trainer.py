"""Training: seeded runs repeat exactly, a checkpoint per epoch, resume equals an unbroken run."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import siamese_ad.training.trainer as trainer_module
from siamese_ad.checkpoint import CheckpointError, load_model, read_checkpoint
from siamese_ad.config import Config
from siamese_ad.training.stage1 import Stage1Step
from siamese_ad.training.stage2 import Stage2Step
from siamese_ad.training.trainer import train


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of an epoch."""


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _losses(path: Path) -> list[tuple[str, int, float]]:
    history = read_checkpoint(path)["state"]["history"]
    return [(h["stage"], h["epoch"], h["loss"]) for h in history]


@pytest.fixture(scope="module")
def unbroken(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> Path:
    """Two stage-1 epochs and two stage-2 epochs in one go; the reference for the tests below."""
    cfg = make_config(tiny_category)
    cfg.train.epochs, cfg.deviation.epochs = 2, 2
    return train(cfg, tmp_path_factory.mktemp("unbroken"))


def _two_by_two(tiny_config: Config) -> Config:
    tiny_config.train.epochs, tiny_config.deviation.epochs = 2, 2
    return tiny_config


def test_same_seed_gives_the_same_checkpoint(
    unbroken: Path, tiny_config: Config, tmp_path: Path
) -> None:
    again = train(_two_by_two(tiny_config), tmp_path / "again")
    _assert_same_weights(unbroken, again)
    assert _losses(again) == _losses(unbroken)
    payload = read_checkpoint(again)
    assert payload["state"]["stage"] == "done"
    assert bool(payload["model"]["deviation_ready"])


def test_another_seed_gives_other_weights(
    unbroken: Path, tiny_config: Config, tmp_path: Path
) -> None:
    cfg = _two_by_two(tiny_config)
    cfg.train.seed = 1
    other = _weights(train(cfg, tmp_path / "other"))
    reference = _weights(unbroken)
    assert any(not torch.equal(reference[k], other[k]) for k in reference)


def test_a_checkpoint_is_written_after_every_epoch(
    tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[tuple[str, int]] = []
    original = trainer_module.save_checkpoint

    def spy(path: Path, model, cfg, state, *args, **kwargs) -> None:
        original(path, model, cfg, state, *args, **kwargs)
        on_disk = torch.load(path, map_location="cpu", weights_only=True)["state"]
        saved.append((on_disk["stage"], on_disk["epoch"]))

    monkeypatch.setattr(trainer_module, "save_checkpoint", spy)
    train(_two_by_two(tiny_config), tmp_path)
    assert saved == [
        ("stage1", 1),
        ("stage1", 2),
        ("stage2", 0),
        ("stage2", 1),
        ("stage2", 2),
        ("done", 2),
    ]


@pytest.mark.parametrize(
    ("step_class", "crash_at_call", "expect"),
    [
        pytest.param(Stage1Step, 3, ("stage1", 1), id="stage1-epoch2"),
        pytest.param(Stage2Step, 2, ("stage2", 0), id="stage2-epoch1"),
        pytest.param(Stage2Step, 3, ("stage2", 1), id="stage2-epoch2"),
    ],
)
def test_resume_after_a_crash_equals_an_unbroken_run(
    unbroken: Path,
    tiny_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step_class: type,
    crash_at_call: int,
    expect: tuple[str, int],
) -> None:
    """4 training images at batch 2 give 2 steps per epoch; crash part-way into an epoch."""
    cfg = _two_by_two(tiny_config)
    original = step_class.__call__
    calls = []

    def crashing(self, idx: torch.Tensor, generator: torch.Generator) -> float:
        calls.append(1)
        loss = original(self, idx, generator)  # the step runs, its epoch is never saved
        if len(calls) == crash_at_call:
            raise Interrupted
        return loss

    with monkeypatch.context() as patch:
        patch.setattr(step_class, "__call__", crashing)
        with pytest.raises(Interrupted):
            train(cfg, tmp_path)
    state = read_checkpoint(tmp_path / "checkpoint.pt")["state"]
    assert (state["stage"], state["epoch"]) == expect
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg, tmp_path)
    resumed = train(cfg, tmp_path, resume=True)
    _assert_same_weights(unbroken, resumed)
    assert _losses(resumed) == _losses(unbroken)


def _copy_run(checkpoint: Path, tmp_path: Path) -> Path:
    """A fresh run folder holding a copy of `checkpoint`."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(checkpoint.read_bytes())
    return run


def test_resume_with_another_model_is_refused(
    unbroken: Path, tiny_config: Config, tmp_path: Path
) -> None:
    run = _copy_run(unbroken, tmp_path)
    cfg = _two_by_two(tiny_config)
    cfg.model.cpam = False
    with pytest.raises(CheckpointError, match=re.escape(str(run / "checkpoint.pt"))):
        train(cfg, run, resume=True)
    with pytest.raises(CheckpointError, match="cpam"):
        load_model(read_checkpoint(unbroken), unbroken, expect=cfg)


def test_resume_with_other_training_settings_is_refused(
    unbroken: Path, tiny_config: Config, tmp_path: Path
) -> None:
    """A finished run resumed with more epochs must not silently return the old checkpoint."""
    run = _copy_run(unbroken, tmp_path)
    cfg = _two_by_two(tiny_config)
    cfg.train.epochs = 3
    with pytest.raises(CheckpointError, match=r"train\.epochs"):
        train(cfg, run, resume=True)
    cfg.train.epochs = 2
    cfg.train.device = "cpu"  # the device may change between sessions
    assert train(cfg, run, resume=True) == run / "checkpoint.pt"


def test_a_run_saved_before_a_config_field_existed_resumes_with_its_default(
    unbroken: Path, tiny_config: Config, tmp_path: Path
) -> None:
    """A checkpoint written before a field was added (here scoring.map_norm) holds no value
    for it: resuming with the field's default is the same training, not "other settings"."""
    run = _copy_run(unbroken, tmp_path)
    payload = read_checkpoint(run / "checkpoint.pt")
    del payload["config"]["scoring"]["map_norm"]
    torch.save(payload, run / "checkpoint.pt")
    cfg = _two_by_two(tiny_config)
    assert train(cfg, run, resume=True) == run / "checkpoint.pt"
    cfg.scoring.map_norm = "none"  # a value other than the default is still a change
    with pytest.raises(CheckpointError, match=r"scoring\.map_norm"):
        train(cfg, run, resume=True)


def test_checkpoint_loads_with_weights_only(unbroken: Path, tiny_config: Config) -> None:
    payload = torch.load(unbroken, map_location="cpu", weights_only=True)
    tiny_config.model.teacher_stages = (0, 1, 2)  # saved resolved: resnet18's default stages
    assert Config.from_dict(payload["config"]) == _two_by_two(tiny_config)
    model, cfg = load_model(payload, unbroken, expect=tiny_config)
    state = model.state_dict()
    for key, value in payload["model"].items():
        assert torch.equal(state[key], value), key
    assert payload["manifest"]["train"]  # which images it trained on
    assert cfg.model.backbone == "resnet18"


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "missing.pt"))):
        read_checkpoint(tmp_path / "missing.pt")


def test_a_run_folder_reads_as_its_checkpoint(unbroken: Path, tmp_path: Path) -> None:
    assert read_checkpoint(unbroken.parent)["state"] == read_checkpoint(unbroken)["state"]
    rgbd = tmp_path / "rgbd-run"
    rgbd.mkdir()
    (rgbd / "rgbd.json").write_text("{}")
    with pytest.raises(CheckpointError, match="branch"):
        read_checkpoint(rgbd)
