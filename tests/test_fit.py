"""`data.fit: pad`: letterboxed inputs, maps cropped back to each image's own geometry; the
geometry alone, then a tiny run end to end (train with real anomalies, evaluate, predict, ONNX)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CommandRun, run_commands
from PIL import Image

from siamese_ad.config import Config, ConfigError, preset
from siamese_ad.data.decode import fit_rgb
from siamese_ad.data.fit import content_box, letterbox, pad_mask, padded_hw, unpad, unpad_images
from siamese_ad.evaluation.inference import Detector

HW = (64, 32)
FLAGS = [
    "--weights", "none", "--backbone", "resnet18", "--image-size", "64x32", "--data.fit", "pad",
    "--epochs", "1", "--deviation-epochs", "1", "--device", "cpu", "--real-anomalies", "1",
]  # fmt: skip
ORIGINALS = [(50, 70), (90, 30), (32, 16)]  # (height, width); the last has the input's ratio


def smooth_image(hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 with slow gradients, so that resampling changes it little."""
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]]
    r = 128 + 100 * np.sin(y / hw[0] * 3.0) * np.cos(x / hw[1] * 2.0)
    return np.repeat(r[:, :, None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("hw", [(50, 70), (90, 30), (40, 20), (7, 300)])
@pytest.mark.parametrize("ratio", [1.0, 2.0, 0.5])
def test_letterbox_has_the_ratio_and_holds_the_image_centred(
    hw: tuple[int, int], ratio: float
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    padded = letterbox(image, (round(64 * ratio), 64))
    height, width = padded.shape[:2]
    assert (height, width) == padded_hw(hw, ratio)
    assert abs(height / width - ratio) <= 1.0 / min(height, width) + 1e-9
    assert height >= hw[0] and width >= hw[1] and (height == hw[0] or width == hw[1])
    top, left = (height - hw[0]) // 2, (width - hw[1]) // 2
    np.testing.assert_array_equal(padded[top : top + hw[0], left : left + hw[1]], image)


@pytest.mark.parametrize("hw", [(50, 70), (90, 30), (300, 40)])
def test_unpadding_a_letterboxed_image_gives_its_stretched_view(hw: tuple[int, int]) -> None:
    image = smooth_image(hw)
    padded = fit_rgb(image, HW, "pad").transpose(2, 0, 1).astype(np.float32)
    stretched = fit_rgb(image, HW, "stretch").transpose(2, 0, 1).astype(np.float32)
    back = unpad(padded, hw)
    assert back.shape == stretched.shape
    assert np.abs(back - stretched).mean() < 4.0  # grey levels; a shifted box gives tens
    y, x, h, w = content_box(hw, HW)
    assert min(y, x) >= 0 and y + h <= HW[0] and x + w <= HW[1]
    assert abs(h / hw[0] - w / hw[1]) <= 1.5 / min(hw)  # one scale on both axes


def test_an_image_of_the_input_ratio_is_not_padded() -> None:
    image = smooth_image((32, 16))
    np.testing.assert_array_equal(fit_rgb(image, HW, "pad"), fit_rgb(image, HW, "stretch"))
    amap = np.random.default_rng(1).random(HW).astype(np.float32)
    np.testing.assert_array_equal(unpad(amap, (32, 16)), amap)


@pytest.mark.parametrize("hw", [(50, 70), (90, 30)])
def test_pad_mask_puts_a_mask_where_unpad_takes_it_from(hw: tuple[int, int]) -> None:
    mask = np.zeros(HW, bool)
    mask[20:44, 8:24] = True
    padded = pad_mask(mask, hw)
    y, x, h, w = content_box(hw, HW)
    outside = np.ones(HW, bool)
    outside[y : y + h, x : x + w] = False
    assert not padded[outside].any()
    back = unpad(padded.astype(np.float32), hw) > 0.5
    assert (back & mask).sum() / (back | mask).sum() > 0.8


def test_unpad_resizes_as_torch_does() -> None:
    amap = np.random.default_rng(2).random((3, *HW)).astype(np.float32)
    hw = (90, 30)
    y, x, h, w = content_box(hw, HW)
    part = torch.from_numpy(amap[:, y : y + h, x : x + w])[:, None]
    expected = F.interpolate(part, size=HW, mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(unpad(amap, hw), expected, atol=1e-5)
    images = (amap * 255).astype(np.uint8)
    assert unpad_images(images[None], np.array([hw])).shape == (1, 3, *HW)


def test_fit_is_checked_and_the_cpu_preset_letterboxes() -> None:
    assert preset("cpu").data.fit == "pad" and preset("paper").data.fit == "stretch"
    cfg = Config()
    cfg.data.fit = "crop"
    with pytest.raises(ConfigError, match=r"data\.fit"):
        cfg.validate()


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> CommandRun:
    tmp = tmp_path_factory.mktemp("fit_pad")
    pictures = [smooth_image(hw) for hw in ORIGINALS]
    return run_commands(tmp, tiny_category, make_config(tiny_category), FLAGS, pictures)


def test_scores_are_the_max_of_the_map_on_the_image_not_its_padding(run: CommandRun) -> None:
    detector = Detector.load(run.model, "cpu")
    assert detector.cfg.data.fit == "pad"
    images = [smooth_image(hw) for hw in ORIGINALS]
    pictures = torch.from_numpy(np.stack([fit_rgb(i, HW, "pad") for i in images]))
    pictures = pictures.permute(0, 3, 1, 2).contiguous()
    padded = detector.run(pictures)  # no originals: the maps cover the padded input
    cropped = detector.run(pictures, originals=ORIGINALS)
    for i, hw in enumerate(ORIGINALS):
        np.testing.assert_allclose(cropped.maps[i], unpad(padded.maps[i], hw), atol=1e-6)
        assert cropped.scores_max[i] == pytest.approx(float(cropped.maps[i].max()), abs=1e-6)
    np.testing.assert_allclose(cropped.maps[2], padded.maps[2], atol=1e-6)  # the input's ratio
    predictions = detector.predict(images)
    assert [p.anomaly_map.shape for p in predictions] == ORIGINALS
    for p, s in zip(predictions, cropped.scores, strict=True):
        assert p.score == pytest.approx(float(s), abs=1e-5)


def test_evaluate_and_predict_show_each_image_on_its_own_geometry(run: CommandRun) -> None:
    metrics = json.loads((run.eval / "metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and 0.0 <= metrics["image_auroc"] <= 1.0
    panels = sorted((run.eval / "heatmaps").glob("*.png"))
    assert panels and all(Image.open(p).size == (4 * HW[1], HW[0]) for p in panels)
    assert np.load(run.predict / "maps.npy").shape == (len(ORIGINALS), *HW)


def test_the_onnx_graph_letterboxes_and_agrees_with_pytorch(run: CommandRun) -> None:
    assert json.loads(run.onnx.with_suffix(".json").read_text())["fit"] == "pad"
    with (run.predict / "scores.csv").open() as a, (run.onnx_predict / "scores.csv").open() as b:
        ref, got = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["image"] for r in ref] == [r["image"] for r in got]
    for r, g in zip(ref, got, strict=True):
        assert abs(float(r["score"]) - float(g["score"])) < 1e-4
        assert r.get("anomalous") == g.get("anomalous")
    ref_maps, got_maps = np.load(run.predict / "maps.npy"), np.load(run.onnx_predict / "maps.npy")
    scale = max(float(np.abs(ref_maps.astype(np.float32)).max()), 1.0)
    assert np.abs(ref_maps.astype(np.float32) - got_maps).max() <= 1e-3 * scale
