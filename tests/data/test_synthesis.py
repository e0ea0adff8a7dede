"""Tests for NSA-style anomaly synthesis on tiny synthetic textures and disc objects."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siamese_ad.config import SynthesisConfig
from siamese_ad.data.synthesis import AnomalySynthesizer, foreground_mask, is_texture

SIZE = 64


def _noise_textures(count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour noise, a different pattern per image; each (SIZE, SIZE, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, SIZE // 4, SIZE // 4, 3)).astype(np.uint8)
    return [cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC) for c in coarse]


def _discs(count: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bright textured discs on a dark noisy background, and their (SIZE, SIZE) bool masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, masks = [], []
    for _ in range(count):
        cy, cx = rng.integers(SIZE // 2 - 6, SIZE // 2 + 6, 2)
        radius = rng.integers(SIZE // 4, SIZE // 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image = 25 + rng.integers(-5, 6, (SIZE, SIZE, 3))
        texture = cv2.resize(rng.integers(120, 256, (8, 8, 3)).astype(np.uint8), (SIZE, SIZE))
        image[disc] = texture[disc]
        images.append(image.astype(np.uint8))
        masks.append(disc)
    return images, masks


def _constant_pool(count: int) -> list[np.ndarray]:
    """Images of one distinct flat colour each: the colour of a pasted patch names its source."""
    return [np.full((SIZE, SIZE, 3), (40 * i, 255 - 40 * i, 100), np.uint8) for i in range(count)]


@pytest.mark.parametrize("blend", ["poisson", "paste"])
@pytest.mark.parametrize("kind", ["texture", "object"])
def test_output_shape_and_unchanged_outside_mask(blend: str, kind: str) -> None:
    images = _noise_textures(4) if kind == "texture" else _discs(4)[0]
    synth = AnomalySynthesizer(images, object_type=kind, blend=blend)
    rng = np.random.default_rng(0)
    changed_any = False
    for index in range(len(images)):
        out, mask = synth(index, rng)
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool
        assert np.array_equal(out[~mask], images[index][~mask])
        changed_any |= bool(mask.any())
    assert changed_any


def test_mask_nonempty_for_texture() -> None:
    images = _noise_textures(4)
    synth = AnomalySynthesizer(images, object_type="texture")
    rng = np.random.default_rng(1)
    for index in range(len(images)):
        for _ in range(3):
            assert synth(index, rng)[1].sum() > 0


def test_patch_never_comes_from_destination() -> None:
    images = _constant_pool(4)
    colours = [tuple(image[0, 0]) for image in images]
    synth = AnomalySynthesizer(images, object_type="texture", blend="paste")
    rng = np.random.default_rng(2)
    for index in range(len(images)):
        for _ in range(5):
            out, mask = synth(index, rng)
            assert mask.any()
            used = {tuple(c) for c in out[mask]}
            assert used <= set(colours) - {colours[index]}


def test_two_images_use_each_other() -> None:
    images = _constant_pool(2)
    synth = AnomalySynthesizer(images, object_type="texture", blend="paste")
    rng = np.random.default_rng(3)
    for index in (0, 1):
        out, mask = synth(index, rng)
        assert np.array_equal(np.unique(out[mask], axis=0), images[1 - index][:1, 0])


def test_single_paste_is_a_rectangle_within_size_bounds() -> None:
    images = _constant_pool(3)
    synth = AnomalySynthesizer(
        images, object_type="texture", blend="paste", max_patches=1, min_size=0.2, max_size=0.3
    )
    low = 0.2 * SIZE * 0.7 / np.sqrt(2.0) - 1
    high = 0.3 * SIZE * 1.3 * np.sqrt(2.0) + 1
    rng = np.random.default_rng(4)
    for _ in range(10):
        mask = synth(0, rng)[1]
        ys, xs = np.nonzero(mask)
        h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert mask.sum() == h * w
        assert low <= h <= high and low <= w <= high


def test_mask_empty_only_when_blend_changes_nothing() -> None:
    images = _constant_pool(3)  # Poisson blending of a flat patch reproduces the destination
    synth = AnomalySynthesizer(images, object_type="texture", blend="poisson")
    out, mask = synth(0, np.random.default_rng(5))
    assert not mask.any()
    assert np.array_equal(out, images[0])


@pytest.mark.parametrize("blend", ["poisson", "paste"])
def test_object_anomalies_stay_on_the_foreground(blend: str) -> None:
    images, discs = _discs(4)
    synth = AnomalySynthesizer(images, object_type="object", blend=blend, max_size=0.3)
    rng = np.random.default_rng(6)
    kernel = np.ones((5, 5), np.uint8)
    nonempty = 0
    for index in range(len(images)):
        allowed = cv2.dilate(discs[index].astype(np.uint8), kernel).astype(bool)
        for _ in range(3):
            mask = synth(index, rng)[1]
            assert not (mask & ~allowed).any()
            nonempty += bool(mask.any())
    assert nonempty >= 10


def test_object_patches_come_from_another_foreground() -> None:
    discs = _discs(3)[1]
    flat = [
        np.where(disc[..., None], (200, 60 * i, 90), 20).astype(np.uint8)
        for i, disc in enumerate(discs)
    ]
    colours = [tuple(image[disc][0]) for image, disc in zip(flat, discs, strict=True)]
    synth = AnomalySynthesizer(flat, object_type="object", blend="paste")
    rng = np.random.default_rng(9)
    for index in range(len(flat)):
        for _ in range(4):
            out, mask = synth(index, rng)
            assert mask.any()
            assert {tuple(c) for c in out[mask]} <= set(colours) - {colours[index]}


def test_same_seed_same_output() -> None:
    images = _noise_textures(3)
    synth = AnomalySynthesizer(images, object_type="texture")
    first = synth(1, np.random.default_rng(7))
    second = synth(1, np.random.default_rng(7))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    third = synth(1, np.random.default_rng(8))
    assert not np.array_equal(first[1], third[1])


def test_texture_or_object_detection() -> None:
    textures, (discs, _) = _noise_textures(4), _discs(4)
    assert is_texture(textures)
    assert not is_texture(discs)
    assert AnomalySynthesizer(textures).object_type == "texture"
    assert AnomalySynthesizer(discs).object_type == "object"


def test_foreground_mask_finds_the_disc() -> None:
    images, discs = _discs(3)
    for image, disc in zip(images, discs, strict=True):
        found = foreground_mask(image)
        assert (found & disc).sum() / (found | disc).sum() > 0.9
    assert foreground_mask(_noise_textures(1)[0]).all()
    assert foreground_mask(_constant_pool(1)[0]).all()


def test_pool_and_argument_errors() -> None:
    images = _noise_textures(2)
    with pytest.raises(ValueError, match="at least 2"):
        AnomalySynthesizer(images[:1])
    with pytest.raises(ValueError, match="shape"):
        AnomalySynthesizer([images[0], images[1][:32]])
    with pytest.raises(ValueError, match="uint8"):
        AnomalySynthesizer([images[0].astype(np.float32), images[1]])
    with pytest.raises(ValueError, match="blend"):
        AnomalySynthesizer(images, blend="alpha")
    with pytest.raises(ValueError, match="object_type"):
        AnomalySynthesizer(images, object_type="liquid")
    with pytest.raises(IndexError):
        AnomalySynthesizer(images)(2, np.random.default_rng(0))


def test_from_config_uses_the_config_fields() -> None:
    config = SynthesisConfig(
        min_patches=2, max_patches=3, min_size=0.1, max_size=0.2, blend="paste"
    )
    synth = AnomalySynthesizer.from_config(_noise_textures(2), config, object_type="texture")
    assert (synth.patches, synth.sizes, synth.blend) == ((2, 3), (0.1, 0.2), "paste")
    assert synth.object_type == "texture"


def test_jitter_patch_changes_gradients_in_each_of_its_forms() -> None:
    from siamese_ad.data.synthesis import jitter_patch

    patch = _noise_textures(1)[0][:16, :16]
    grad = np.abs(np.diff(patch.astype(np.float32), axis=1)).mean()
    seen = set()
    for seed in range(30):
        out = jitter_patch(patch, np.random.default_rng(seed))
        assert out.shape == patch.shape and out.dtype == np.uint8
        new_grad = np.abs(np.diff(out.astype(np.float32), axis=1)).mean()
        inverted = np.array_equal(out, 255 - patch)
        seen.add("inverted" if inverted else "sharper" if new_grad > grad else "flatter")
    assert seen == {"inverted", "sharper", "flatter"}


@pytest.mark.parametrize("blend", ["poisson", "paste"])
def test_jittered_anomalies_keep_the_outside_and_zero_jitter_keeps_the_stream(blend: str) -> None:
    images = _noise_textures(4)
    plain = AnomalySynthesizer(images, object_type="texture", blend=blend)
    zero = AnomalySynthesizer(images, object_type="texture", blend=blend, jitter=0.0)
    full = AnomalySynthesizer(images, object_type="texture", blend=blend, jitter=1.0)
    for index in range(4):
        a, _ = plain(index, np.random.default_rng(index))
        b, _ = zero(index, np.random.default_rng(index))
        assert np.array_equal(a, b)
        out, mask = full(index, np.random.default_rng(index))
        assert np.array_equal(out[~mask], images[index][~mask])
    with pytest.raises(ValueError, match="jitter"):
        AnomalySynthesizer(images, jitter=1.5)


def test_patches_scale_with_each_side_of_a_non_square_image() -> None:
    """On a 128 x 32 pool a patch is a fraction of the height tall and of the width wide."""
    pool = [np.full((128, 32, 3), (40 * i, 255 - 40 * i, 100), np.uint8) for i in range(4)]
    synth = AnomalySynthesizer(
        pool, object_type="texture", blend="paste", min_patches=1, max_patches=1, max_size=0.25
    )
    rng = np.random.default_rng(0)
    for index in range(8):
        out, mask = synth(index % len(pool), rng)
        assert out.shape == (128, 32, 3) and mask.shape == (128, 32)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        # height <= 0.25 * 128 * sqrt(2) * 1.3 (aspect, scale); width likewise of 32
        assert height <= 59 and width <= 15 and height > width
