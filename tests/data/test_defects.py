"""Tests for the defect families (scratch, stain, noise) on tiny smooth colour and grey images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siamese_ad.data.defects import DEFECT_FAMILIES, DefectSynthesizer, defect_foregrounds

SHAPES = [(64, 64), (96, 160)]
SEEDS = range(6)
THRESHOLD = 8  # DefectSynthesizer's default change_threshold


def _image(height: int, width: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    """Smooth noise in 80-180, (height, width, 3) uint8; with `grey` its 3 channels are equal."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(80, 180, (height // 8, width // 8, 1 if grey else 3)).astype(np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.repeat(image[..., None], 3, axis=2) if grey else image


def _moved(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(H, W) int: the largest change over the channels."""
    return np.abs(out.astype(np.int16) - image).max(axis=2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_changes_stay_inside_a_non_empty_mask(family: str, shape: tuple[int, int]) -> None:
    image = _image(*shape)
    synth = DefectSynthesizer()
    for seed in SEEDS:
        out, mask = synth(image, np.random.default_rng(seed), family)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert mask.shape == shape and mask.dtype == bool
        assert mask.sum() >= 0.001 * mask.size
        moved = _moved(image, out)
        assert moved[~mask].max(initial=0) < THRESHOLD
        assert (moved[mask] >= THRESHOLD).mean() > 0.8  # closing adds only pinholes


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_grey_stays_grey(family: str) -> None:
    image = _image(64, 64, grey=True)
    for seed in SEEDS:
        out, mask = DefectSynthesizer()(image, np.random.default_rng(seed), family)
        assert mask.any()
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("family", [*DEFECT_FAMILIES, None])
def test_same_seed_same_defect_other_seed_another(family: str | None) -> None:
    image, synth = _image(96, 160), DefectSynthesizer()
    first = synth(image, np.random.default_rng(3), family)
    again = synth(image, np.random.default_rng(3), family)
    other = synth(image, np.random.default_rng(4), family)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("family", DEFECT_FAMILIES)
def test_foreground_confines_the_defect(family: str) -> None:
    image = _image(96, 160, seed=1)
    yy, xx = np.mgrid[:96, :160]
    foreground = (yy - 48) ** 2 + (xx - 100) ** 2 <= 30**2
    for seed in SEEDS:
        out, mask = DefectSynthesizer()(image, np.random.default_rng(seed), family, foreground)
        assert mask.any() and not (mask & ~foreground).any()
        assert np.array_equal(out[~foreground], image[~foreground])


def _thickness_and_fill(mask: np.ndarray) -> tuple[float, float]:
    """The largest inscribed radius (px) and the mask's share of its bounding box."""
    ys, xs = np.nonzero(mask)
    box = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    radius = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3).max()
    return float(radius), mask.sum() / box


@pytest.mark.parametrize("shape", SHAPES)
def test_scratches_are_thin_and_stains_compact(shape: tuple[int, int]) -> None:
    image, synth = _image(*shape), DefectSynthesizer()
    scratch_fill, stain_fill = [], []
    for seed in range(10):
        scratch = synth(image, np.random.default_rng(seed), "scratch")[1]
        radius, fill = _thickness_and_fill(scratch)
        ys, xs = np.nonzero(scratch)
        assert radius <= 3.5 and max(np.ptp(ys), np.ptp(xs)) >= 4 * radius
        scratch_fill.append(fill)
        stain_fill.append(
            _thickness_and_fill(synth(image, np.random.default_rng(seed), "stain")[1])[1]
        )
    assert np.median(scratch_fill) < 0.35 < 0.6 < np.median(stain_fill)
    assert min(stain_fill) > 0.4


def test_a_dark_image_still_gets_a_mask_and_a_black_one_an_empty_stain() -> None:
    dark = np.full((64, 64, 3), 30, np.uint8)  # a stain's gain moves 30 by 6-18: some tries fail
    synth = DefectSynthesizer()
    for seed in range(10):
        assert synth(dark, np.random.default_rng(seed), "stain")[1].sum() >= 0.001 * 64 * 64
    black = np.zeros((64, 64, 3), np.uint8)  # no gain changes 0: every try is empty, the last kept
    out, mask = synth(black, np.random.default_rng(0), "stain")
    assert not mask.any() and np.array_equal(out, black)


def test_bad_arguments_name_the_choices() -> None:
    image, rng = _image(64, 64), np.random.default_rng(0)
    with pytest.raises(ValueError, match="scratch, stain, noise"):
        DefectSynthesizer()(image, rng, "crack")
    with pytest.raises(ValueError, match="non-empty"):
        DefectSynthesizer()(image, rng, "stain", np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="auto, texture, object"):
        defect_foregrounds([image], "thing")


def test_foregrounds_follow_the_object_type() -> None:
    textures = [_image(64, 64, seed) for seed in range(2)]
    assert defect_foregrounds(textures, "texture") == [None, None]
    assert defect_foregrounds(textures, "auto") == [None, None]
    disc = np.full((64, 64, 3), 20, np.uint8)
    cv2.circle(disc, (32, 32), 16, (200, 180, 160), -1)
    (foreground,) = defect_foregrounds([disc], "object")
    assert foreground is not None and foreground[32, 32] and not foreground[2, 2]
