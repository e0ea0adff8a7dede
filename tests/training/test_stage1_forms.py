"""Stage 1's aligned form, the teacher-feature cache and the validation signal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.config import Config
from siamese_ad.data.synthesis import foreground_mask
from siamese_ad.models.unet import build_unet
from siamese_ad.training.pool import AnomalyPool
from siamese_ad.training.stage1 import masked_margin_loss, rotate_batch, stage_masks
from siamese_ad.training.teacher_cache import TeacherCache
from siamese_ad.training.trainer import build_pool, train
from siamese_ad.training.validation import (
    make_validation_set,
    validation_metrics,
    yardstick_metrics,
)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 32), (32, 96)])
def test_rotation_turns_non_square_images_without_shearing(height: int, width: int) -> None:
    """A centred bar keeps its spread about the centre: a rotation in pixels, not a shear."""
    yy, xx = torch.meshgrid(
        torch.arange(height) - (height - 1) / 2,
        torch.arange(width) - (width - 1) / 2,
        indexing="ij",
    )
    radius2 = xx**2 + yy**2
    bar = ((xx.abs() <= 8) & (yy.abs() <= 1.5)).float()
    images = bar.expand(8, 3, height, width).contiguous()
    centre = radius2 <= 144  # out of reach of the reflected borders
    turned = rotate_batch(images, 60.0, torch.Generator().manual_seed(0))[:, 0] * centre
    spread = (turned * radius2).sum((1, 2)) / turned.sum((1, 2))
    expected = float((bar * radius2).sum() / bar.sum())
    assert torch.allclose(spread, torch.full_like(spread, expected), rtol=0.05)
    assert ((turned - bar * centre).abs().sum((1, 2)) > 10).any()  # some bars did turn


def test_stage_masks_mark_cells_at_least_half_anomalous() -> None:
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # the top-left quarter
    masks[0, 4, 4] = True  # a quarter of one 2x2 cell
    (coarse,) = stage_masks(masks, [(4, 4)])
    expected = torch.zeros(1, 4, 4)
    expected[0, :2, :2] = 1.0
    assert torch.equal(coarse, expected)


def test_masked_margin_loss_is_zero_only_when_the_margin_holds() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 4, 3, 3)
    mask = torch.zeros(2, 3, 3)
    mask[:, 1, 1] = 1.0
    # the student equals the teacher on N (cos 1) and on A (cos 1): hinge = margin inside mask
    same = masked_margin_loss([t], [t.clone()], [t], [t.clone()], [mask], margin=0.5)
    assert same.item() == pytest.approx(0.5)
    # on A the student is the negative of the teacher (cos -1): -1 - 1 + 0.5 < 0, no loss
    apart = masked_margin_loss([t], [-t], [t], [t.clone()], [mask], margin=0.5)
    assert apart.item() == 0.0
    # outside the mask nothing counts: an empty mask gives 0
    empty = masked_margin_loss([t], [t.clone()], [t], [t.clone()], [torch.zeros(2, 3, 3)], 0.5)
    assert empty.item() == 0.0


def test_aligned_pool_has_an_anomaly_of_every_normal_image(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    cfg = make_config(tiny_category)
    cfg.contrastive.form = "aligned"
    cfg.synthesis.pool_size = 2  # fewer than the normal images: the pool grows to cover them
    normals = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    pool = build_pool(normals, None, cfg)
    assert len(pool) == 5 and sorted(pool.destinations.tolist()) == [0, 1, 2, 3, 4]
    picks = pool.draw_aligned(torch.tensor([3, 0, 3]), torch.Generator().manual_seed(0))
    assert pool.destinations[picks].tolist() == [3, 0, 3]
    outside = ~pool.masks[picks[0]]
    assert torch.equal(pool.images[picks[0]][:, outside], normals[3][:, outside])


def test_draw_aligned_needs_destinations() -> None:
    pool = AnomalyPool(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 8, 8).bool())
    with pytest.raises(ValueError, match="does not record"):
        pool.draw_aligned(torch.tensor([0]), torch.Generator())


def test_teacher_cache_returns_what_the_teacher_computes(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    cfg = make_config(tiny_category)
    torch.manual_seed(0)
    model = build_unet(cfg.model)
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    idx = torch.tensor([4, 1, 1])
    for budget in (10**9, 0):  # kept, and too big to keep (computed per call)
        cache = TeacherCache(model, torch.device("cpu"), False, False, 2, max_bytes=budget)
        got = cache.features("normal", idx, images)
        direct = model.teacher_features(images[idx].float() / 255)
        for a, b in zip(got, direct, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert (cache.bytes > 0) == (budget > 0)


def test_validation_set_and_metrics(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    cfg = make_config(tiny_category)
    normals = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    assert make_validation_set(normals[:1], cfg) is None
    vset = make_validation_set(normals, cfg)
    assert vset is not None and len(vset.images) == 8
    assert torch.equal(vset.images[:4], normals) and not vset.masks[:4].any()
    assert vset.labels[:4].sum() == 0 and np.array_equal(
        vset.labels[4:], vset.masks[4:].flatten(1).any(1).numpy().astype(int)
    )
    metrics = validation_metrics(build_unet(cfg.model), vset, cfg, torch.device("cpu"))
    if 0 < vset.labels.sum() < len(vset.labels):
        assert set(metrics) == {"val_image_auroc_max", "val_pixel_auroc"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_defects_yardstick_paints_one_defect_per_normal_and_leaves_blend_as_it_was(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    cfg = make_config(tiny_category)
    noise = torch.Generator().manual_seed(0)
    normals = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8, generator=noise)
    vset = make_validation_set(normals, cfg, yardstick="defects")
    assert vset is not None and len(vset.images) == 12
    assert vset.labels.tolist() == [0] * 6 + [1] * 6
    assert torch.equal(vset.images[:6], normals) and not vset.masks[:6].any()
    assert vset.masks[6:].flatten(1).any(1).all()
    outside = ~vset.masks[6:].unsqueeze(1).expand(-1, 3, -1, -1)
    moved = (vset.images[6:].int() - normals.int()).abs()
    assert moved[outside].max() < 8  # a defect's soft edge stays below its mask's threshold
    default = make_validation_set(normals, cfg)  # as before the yardstick existed
    blend = make_validation_set(normals, cfg, None, "blend")
    assert default is not None and blend is not None
    assert torch.equal(default.images, blend.images) and torch.equal(default.masks, blend.masks)
    assert not torch.equal(vset.images, default.images)
    with pytest.raises(ValueError, match="blend, defects"):
        make_validation_set(normals, cfg, yardstick="cracks")


def test_defects_yardstick_keeps_to_the_object(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    cfg = make_config(tiny_category)
    cfg.data.object_type = "object"
    discs = np.full((3, 48, 48, 3), 20, np.uint8)
    for i, disc in enumerate(discs):
        cv2.circle(disc, (20 + 4 * i, 24), 12, (200, 170, 150), -1)
    normals = torch.from_numpy(discs).permute(0, 3, 1, 2).contiguous()
    vset = make_validation_set(normals, cfg, yardstick="defects")
    assert vset is not None and vset.labels.tolist() == [0] * 3 + [1] * 3
    for disc, mask in zip(discs, vset.masks[3:], strict=True):
        assert not (mask.numpy() & ~foreground_mask(disc)).any()


@pytest.mark.parametrize("form", ["aligned", "triplet"])
def test_both_stage1_forms_train(
    form: str, tiny_category: Path, make_config: Callable[[Path], Config], tmp_path: Path
) -> None:
    cfg = make_config(tiny_category)
    cfg.contrastive.form = form
    cfg.data.validation_fraction = 0.0
    path = train(cfg, tmp_path / form)
    history = read_checkpoint(path)["state"]["history"]
    assert [h["stage"] for h in history] == ["stage1", "stage2"]
    assert all(np.isfinite(h["loss"]) for h in history)


def test_cosine_schedule_decays_to_zero_and_constant_keeps_the_rate() -> None:
    from siamese_ad.training.loop import schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = schedule(opt, 0.1, "cosine")
    rates = []
    for p in (0.0, 0.5, 0.999):
        cosine(p)
        rates.append(opt.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(0.05)
    assert 0 < rates[2] < 1e-5
    schedule(opt, 0.1, "constant")(0.7)
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_second_training_into_one_folder_stops_while_the_first_holds_it(tmp_path: Path) -> None:
    from siamese_ad.checkpoint import CheckpointError
    from siamese_ad.training.trainer import run_lock

    first = run_lock(tmp_path / "run")
    second = run_lock(tmp_path / "run")
    with first, pytest.raises(CheckpointError, match="another training"), second:
        pass
    with run_lock(tmp_path / "run"):  # released: the next training may start
        pass


def test_saved_data_root_is_absolute(
    tiny_category: Path,
    make_config: Callable[[Path], Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tiny_category.parent)
    cfg = make_config(Path(tiny_category.name))  # relative to the working folder
    cfg.deviation.enabled = False
    path = train(cfg, tmp_path / "run")
    saved = read_checkpoint(path)["config"]["data"]["root"]
    assert Path(saved).is_absolute() and Path(saved) == tiny_category.resolve()


def test_both_yardsticks_scored_in_one_pass_give_the_separate_figures(
    tiny_category: Path, make_config: Callable[[Path], Config]
) -> None:
    """train scores the shared normals once for the two yardsticks; the figures must be those of
    scoring each set on its own, and sets from other normals are refused."""
    cfg = make_config(tiny_category)
    noise = torch.Generator().manual_seed(1)
    normals = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8, generator=noise)
    blend = make_validation_set(normals, cfg)
    defects = make_validation_set(normals, cfg, yardstick="defects")
    assert blend is not None and defects is not None
    model, cpu = build_unet(cfg.model), torch.device("cpu")
    together = yardstick_metrics(model, {"val_": blend, "val_defects_": defects}, cfg, cpu)
    apart = validation_metrics(model, defects, cfg, cpu, "val_defects_")
    if 0 < blend.labels.sum() < len(blend.labels):
        apart |= validation_metrics(model, blend, cfg, cpu)
    assert together.keys() == apart.keys() and "val_defects_pixel_auroc" in together
    for key, value in apart.items():
        assert together[key] == pytest.approx(value, abs=1e-6), key
    other = make_validation_set(torch.flip(normals, dims=[0]), cfg, yardstick="defects")
    with pytest.raises(ValueError, match="same normal images"):
        yardstick_metrics(model, {"val_": defects, "val_defects_": other}, cfg, cpu)
