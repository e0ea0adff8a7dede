"""scoring.map_norm "mean": each stage's (1 - cos) map divided by its mean over normal images
before the stages are summed; train sets the means at its end, old checkpoints keep the sum."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import torch
from conftest import TinyRun

from siamese_ad.checkpoint import CHECKPOINT, read_checkpoint
from siamese_ad.evaluation.inference import Detector
from siamese_ad.io import atomic_torch_save
from siamese_ad.scoring import GaussianBlur, combine_stages
from siamese_ad.training.trainer import FINAL_VALIDATION_KEY

SIZE = (32, 48)


def _distances(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 8, 12, generator=g), 5 * torch.rand(3, 4, 6, generator=g)]


def test_scale_divides_each_stage_before_the_sum() -> None:
    dists, blur = _distances(), GaussianBlur(1.0)
    scale = torch.tensor([0.5, 4.0])
    got = combine_stages(dists, SIZE, blur, scale)
    want = combine_stages([d / s for d, s in zip(dists, scale, strict=True)], SIZE, blur)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, combine_stages(dists, SIZE, blur))


def test_mean_normalised_map_ignores_how_large_a_stage_is() -> None:
    """Multiplying one stage's distances by any factor leaves the normalised map unchanged, while
    the plain sum is dominated by the larger stage."""
    dists, blur = _distances(), GaussianBlur(1.0)
    louder = [dists[0] * 30.0, dists[1]]

    def means(ds: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([d.mean() for d in ds])

    torch.testing.assert_close(
        combine_stages(dists, SIZE, blur, means(dists)),
        combine_stages(louder, SIZE, blur, means(louder)),
    )
    assert not torch.allclose(combine_stages(dists, SIZE, blur), combine_stages(louder, SIZE, blur))


def test_train_stores_the_stage_means_and_the_final_validation(tiny_run: TinyRun) -> None:
    payload = read_checkpoint(tiny_run.run)
    means = payload["model"]["stage_map_mean"]
    assert means.shape == (3,) and (means > 0).all() and not torch.equal(means, torch.ones(3))
    final = payload["extra"].get(FINAL_VALIDATION_KEY)
    if final is not None:  # only where the tiny run held out enough validation images
        assert all(k.startswith("val_defects_") for k in final)


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)


def test_a_checkpoint_from_before_the_means_scores_with_the_plain_sum(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_run.run, old)
    payload = read_checkpoint(old)
    del payload["model"]["stage_map_mean"]  # written before the buffer existed
    atomic_torch_save(payload, old / CHECKPOINT)
    images = _images()
    from_old = Detector.load(old, device="cpu").run(images)

    current = Detector.load(tiny_run.run, device="cpu")
    cfg = copy.deepcopy(current.cfg)
    cfg.scoring = dataclasses.replace(cfg.scoring, map_norm="none")
    model = copy.deepcopy(current.scorer.model)
    plain = Detector.from_model(model, cfg, torch.device("cpu"), read_checkpoint(tiny_run.run))
    from_plain = plain.run(images)
    torch.testing.assert_close(torch.as_tensor(from_old.maps), torch.as_tensor(from_plain.maps))
    normed = current.run(images)
    assert not torch.allclose(torch.as_tensor(normed.maps), torch.as_tensor(from_old.maps))
