"""Decoding images and masks: every PIL mode and size, 16-bit scaling, nearest masks, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamese_ad.data.images import image_size_of, load_image, load_mask
from siamese_ad.data.sample import DataError

SIZE = 32


def _rgb(h: int = 30, w: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("L", ".png"),
        ("RGB", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("LA", ".png"),
        ("1", ".png"),
        ("CMYK", ".tiff"),
        ("RGB", ".jpg"),
        ("RGB", ".bmp"),
    ],
)
def test_any_mode_and_size_gives_3_channel_uint8(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    Image.fromarray(_rgb()).convert(mode).save(path)
    image, original = load_image(path, SIZE)
    assert image.shape == (3, SIZE, SIZE)
    assert image.dtype == torch.uint8
    assert original == (30, 44)
    assert image.float().std() > 0  # the content survived, not a blank image


def test_rgb_at_target_size_is_read_exactly(tmp_path: Path) -> None:
    rgb = _rgb(SIZE, SIZE)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image, original = load_image(tmp_path / "a.png", SIZE)
    assert original == (SIZE, SIZE)
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1))


def test_height_width_size_keeps_the_orientation(tmp_path: Path) -> None:
    """A (height, width) size: rows stay rows; an image and its mask land on the same pixels."""
    rgb = np.zeros((120, 40, 3), np.uint8)
    rgb[:60] = 255  # the top half white
    Image.fromarray(rgb).save(tmp_path / "tall.png")
    image, original = load_image(tmp_path / "tall.png", (64, 32))
    assert image.shape == (3, 64, 32) and original == (120, 40)
    assert (image[:, :31] == 255).all() and (image[:, 33:] == 0).all()
    mask = np.zeros((120, 40), np.uint8)
    mask[:, 30:] = 255  # the right quarter
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png", (64, 32), (120, 40), tmp_path / "tall.png")
    assert out.shape == (64, 32)
    assert out[:, 24:].all() and not out[:, :24].any()


def test_grey_and_palette_images_keep_their_values(tmp_path: Path) -> None:
    grey = _rgb(SIZE, SIZE)[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    image, _ = load_image(tmp_path / "grey.png", SIZE)
    for channel in image:
        assert torch.equal(channel, torch.from_numpy(grey))
    palette = Image.fromarray(_rgb(SIZE, SIZE)).convert("P")
    palette.save(tmp_path / "palette.png")
    expected = np.array(palette.convert("RGB"))
    image, _ = load_image(tmp_path / "palette.png", SIZE)
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_16_bit_png_scales_to_8_bit(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, SIZE * SIZE).round().astype(np.uint16).reshape(SIZE, SIZE)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really a 16-bit file
    image, _ = load_image(tmp_path / "deep.png", SIZE)
    assert image.shape == (3, SIZE, SIZE)
    assert int(image.max()) == 255 and int(image.min()) == 0
    expected = np.round(values / 65535.0 * 255.0)
    assert np.abs(image[0].numpy().astype(float) - expected).max() <= 1


def test_dark_16_bit_png_stays_dark(tmp_path: Path) -> None:
    """Values of a 16-bit file are scaled by 65535 even when they are all small."""
    Image.fromarray(np.full((SIZE, SIZE), 1000, np.uint16)).save(tmp_path / "dark.png")
    image, _ = load_image(tmp_path / "dark.png", SIZE)
    assert int(image.max()) == round(1000 / 65535 * 255)


def test_mask_resizes_with_nearest_and_stays_binary(tmp_path: Path) -> None:
    mask = np.zeros((60, 90), np.uint8)
    mask[10:40, 20:50] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png", SIZE, (60, 90), tmp_path / "img.png")
    assert out.shape == (SIZE, SIZE) and out.dtype == torch.bool
    assert 0 < int(out.sum()) < SIZE * SIZE
    # nearest neighbour: every output pixel copies one input pixel
    ys = (np.arange(SIZE) + 0.5) * 60 / SIZE
    xs = (np.arange(SIZE) + 0.5) * 90 / SIZE
    expected = mask[ys.astype(int)][:, xs.astype(int)] > 0
    assert (out.numpy() != expected).mean() < 0.01


def test_mask_any_non_zero_value_is_anomalous(tmp_path: Path) -> None:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:8, 4:8] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png", SIZE, (SIZE, SIZE), tmp_path / "img.png")
    assert torch.equal(out, torch.from_numpy(mask > 0))


def test_mask_of_other_size_names_both_files(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError) as err:
        load_mask(tmp_path / "m.png", SIZE, (30, 44), tmp_path / "img.png")
    assert str(tmp_path / "m.png") in str(err.value)
    assert str(tmp_path / "img.png") in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "broken_data"])
def test_unreadable_image_raises_data_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(_rgb()).save(good)
    data = good.read_bytes()
    bad = tmp_path / f"{damage}.png"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not an image at all")
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        broken = bytearray(data)
        start = data.find(b"IDAT") + 20
        broken[start : start + 16] = bytes(16)
        bad.write_bytes(bytes(broken))
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_image(bad, SIZE)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_mask(bad, SIZE, (30, 44), good)


def test_image_size_of_reads_the_header(tmp_path: Path) -> None:
    Image.fromarray(_rgb(17, 23)).save(tmp_path / "a.png")
    assert image_size_of(tmp_path / "a.png") == (17, 23)
    (tmp_path / "b.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"b\.png"):
        image_size_of(tmp_path / "b.png")
