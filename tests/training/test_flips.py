"""train.flips: random flips of the basic block's normal images, with their teacher features."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from siamese_ad.config import FLIPS, Config, ConfigError
from siamese_ad.models.unet import build_unet
from siamese_ad.training.stage1 import Stage1Step, flip_batch
from siamese_ad.training.teacher_cache import TeacherCache


def test_none_returns_the_images_and_draws_nothing() -> None:
    images = torch.rand(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out, codes = flip_batch(images, "none", gen)
    assert out is images and codes is None
    assert torch.equal(torch.rand(1, generator=gen), torch.rand(1, generator=_seeded(0)))


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["h", "hv"])
def test_each_image_gets_the_flip_its_code_names(kind: str) -> None:
    images = torch.randint(0, 255, (64, 3, 6, 5), dtype=torch.uint8)
    out, codes = flip_batch(images, kind, _seeded(1))
    assert codes is not None and set(codes.tolist()) == set(range(len(FLIPS[kind])))
    for image, flipped, code in zip(images, out, codes.tolist(), strict=True):
        dims = FLIPS[kind][code]
        assert torch.equal(flipped, image.flip(dims) if dims else image)
    assert not torch.equal(out, images)


def test_cached_teacher_of_flipped_images_is_the_teachers(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    """What the step reads from the cache is the teacher's features of each flipped image."""
    cfg = make_config(tiny_category)
    cfg.contrastive.enabled = cfg.deviation.enabled = False
    cfg.train.flips, cfg.train.channels_last = "hv", False
    cfg.validate()
    torch.manual_seed(0)
    model = build_unet(cfg.model)
    normals = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    cache = TeacherCache(model, torch.device("cpu"), False, False, 2)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    step = Stage1Step(model, opt, normals, None, cfg, torch.device("cpu"), cache)
    idx = torch.tensor([4, 1, 1, 0, 2, 3])
    codes = torch.tensor([0, 1, 2, 3, 3, 2])
    got = step._flipped_teacher(idx, codes)
    pairs = zip(idx.tolist(), codes.tolist(), strict=True)
    flipped = torch.stack([normals[i].flip(FLIPS["hv"][c]) for i, c in pairs])
    direct = model.teacher_features(flipped.float() / 255)
    for a, b in zip(got, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(cache._sets) == 4  # one cached set per flip


def test_a_run_with_flips_trains(
    tiny_category: Path, make_config: Callable[[Path], Config], tmp_path: Path
) -> None:
    from siamese_ad.training.trainer import train

    cfg = make_config(tiny_category)
    cfg.contrastive.enabled = cfg.deviation.enabled = False
    cfg.train.flips = "hv"
    run = train(cfg.validate(), tmp_path / "run")
    assert run.is_file()


def test_config_rejects_unknown_flips_and_stage_1() -> None:
    with pytest.raises(ConfigError, match=r"train\.flips"):
        Config().merged({"train": {"flips": "diagonal"}, "contrastive": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"train\.flips=hv applies to the basic block"):
        Config().merged({"train": {"flips": "hv"}, "contrastive": {"enabled": True}})
    ok = Config().merged({"train": {"flips": "h"}, "contrastive": {"enabled": False}})
    assert ok.train.flips == "h"
