"""torchrun data-parallel training (2 CPU processes, gloo) against one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_config

import siamese_ad.training.trainer as trainer_module
from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.cli import main
from siamese_ad.data.synthetic import make_synthetic_category
from siamese_ad.models.unet import build_unet
from siamese_ad.training import distributed
from siamese_ad.training.loop import seed_everything
from siamese_ad.training.trainer import train

# Both runs compute the same global-batch forward pass (BatchNorm statistics over the global
# batch) and the same mean loss; only the order of floating-point sums differs. That noise is
# ~1e-7 in losses and BatchNorm statistics. Adam's first step moves each weight by about
# lr * g / (|g| + eps), i.e. lr * sign(g), so weights whose gradient is near 0 (|g| ~ eps) can
# differ by up to lr: we therefore bound the relative difference of the whole update and the
# share of weights that differ by more than WEIGHT_ATOL, not the worst weight.
STAT_ATOL = 1e-5
WEIGHT_ATOL = 1e-5
MAX_RELATIVE_UPDATE_DIFF = 1e-2
MAX_SHARE_DIFFERENT = 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trainable(state: dict[str, torch.Tensor], running: bool) -> torch.Tensor:
    """The bottleneck and student entries, flattened: weights, or BatchNorm running stats."""
    keys = sorted(
        k
        for k, v in state.items()
        if k.startswith(("student.", "bottleneck."))
        and v.is_floating_point()
        and ("running_" in k) == running
    )
    return torch.cat([state[k].float().flatten() for k in keys])


def test_two_processes_match_one(tiny_category: Path, tmp_path: Path) -> None:
    cfg = make_tiny_config(tiny_category)
    cfg.train.batch_size = 4  # one global batch of the 4 training images: 2 per process
    cfg.train.channels_last = False
    cfg.deviation.enabled = False  # stage 1 only, to stay fast
    cfg.train.cache_teacher = False  # teacher batches of one size on both sides: less noise
    config = tmp_path / "config.yaml"
    cfg.to_yaml(config)
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    torchrun += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    train = ["train", "--config", str(config), "--out"]
    done = subprocess.run(
        [*torchrun, "-m", "siamese_ad.cli", *train, str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*train, str(tmp_path / "single")]) == 0
    ddp = read_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    single = read_checkpoint(tmp_path / "single" / "checkpoint.pt")
    assert [h["stage"] for h in ddp["state"]["history"]] == ["stage1"]
    loss_ddp, loss_single = (p["state"]["history"][0]["loss"] for p in (ddp, single))
    assert abs(loss_ddp - loss_single) < STAT_ATOL  # the logged loss is the global-batch loss
    running = _trainable(ddp["model"], True) - _trainable(single["model"], True)
    assert running.abs().max() < STAT_ATOL  # BatchNorm saw the global batch on both ranks
    seed_everything(cfg.train.seed)
    init = _trainable(build_unet(cfg.model).trainable_state_dict(), False)
    step_ddp = _trainable(ddp["model"], False) - init
    step_single = _trainable(single["model"], False) - init
    diff = step_ddp - step_single
    assert step_single.abs().max() > 100 * WEIGHT_ATOL  # training did move the weights
    assert diff.norm() / step_single.norm() < MAX_RELATIVE_UPDATE_DIFF
    assert (diff.abs() > WEIGHT_ATOL).float().mean() < MAX_SHARE_DIFFERENT
    means = ddp["model"]["stage_map_mean"]  # finish() ran under torchrun too
    assert not torch.equal(means, torch.ones_like(means))
    torch.testing.assert_close(means, single["model"]["stage_map_mean"], rtol=1e-3, atol=0.0)


def test_only_rank_0_scores_the_finished_model_on_the_defects_yardstick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other ranks write nothing, so they skip the final validation (as every epoch's) and the
    image-score choice it feeds, which only rank 0 logs and stores."""
    data = make_synthetic_category(
        tmp_path / "data", n_train=12, n_test_good=2, n_test_defect=1, size=32, defects=("spot",)
    )
    cfg = make_tiny_config(data)
    cfg.data.validation_fraction = 0.4  # 4 validation images: both yardsticks exist
    scored: list[tuple] = []
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(trainer_module, "validation_metrics", lambda *a: scored.append(a) or {})
    train(cfg, tmp_path / "run")
    assert scored == []
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_helpers_are_identities_without_torchrun() -> None:
    batch = torch.arange(6)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert torch.equal(distributed.shard(batch), batch)
    assert distributed.loss_weight(6, 6) == 1.0
    assert distributed.mean_over_ranks(torch.tensor(2.5, requires_grad=True)) == 2.5
