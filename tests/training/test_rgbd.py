"""MVTec 3D-AD end to end: rgb, depth and rgbd train and evaluate on a tiny fake category.

One rgbd run trains both branches through `train` with modality rgb and depth (the same calls a
plain rgb or depth run makes); each branch folder is then evaluated as a plain run, and the rgbd
folder as a fused one, through the CLI.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_mvtec3d import write_fake_mvtec3d
from PIL import Image

import siamese_ad.data.depth as depth_module
from siamese_ad.app.evaluate import evaluate
from siamese_ad.checkpoint import RGBD_MANIFEST, CheckpointError, read_checkpoint
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.data.dataset import load_images, read_category
from siamese_ad.data.modality import DEPTH_CACHE, image_loader
from siamese_ad.evaluation.fusion import fuse, normal_stats, standardise
from siamese_ad.evaluation.inference import Detector, Inference
from siamese_ad.reporting.heatmaps import panel_name
from siamese_ad.training.trainer import train

COUNTS = {"train": 2, "validation": 2, "test": 4}  # test: 2 good, 1 bump, 1 dent


def tiny_config(root, modality: str) -> Config:
    cfg = Config()
    cfg.data.root, cfg.data.format, cfg.data.modality = str(root), "mvtec3d", modality
    cfg.data.image_size = 32
    cfg.model.backbone, cfg.model.weights, cfg.model.decoder_blocks = "resnet18", "none", 1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device = 1, 2, "cpu"
    cfg.deviation.epochs = 1
    cfg.synthesis.pool_size = 2
    return cfg.validate()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Trains rgbd through the CLI, evaluates fused and per branch; counts depth computations."""
    tmp = tmp_path_factory.mktemp("rgbd")
    root = write_fake_mvtec3d(tmp, size=48, train=2, validation=2, test_good=2)
    out = tmp / "run"
    config = tmp / "tiny.yaml"
    tiny_config(root, "rgb").to_yaml(config)
    computed = []
    original = depth_module.depth_map
    counts = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            depth_module, "depth_map", lambda *a, **k: computed.append(1) or original(*a, **k)
        )
        assert (
            main(["train", "--config", str(config), "--modality", "rgbd", "--out", str(out)]) == 0
        )
        counts["train"] = len(computed)
        assert main(["evaluate", "--checkpoint", str(out), "--device", "cpu"]) == 0
        counts["fused"] = len(computed)
        branch = {m: evaluate(out / m, tmp / f"eval_{m}", device="cpu") for m in ("rgb", "depth")}
        counts["branches"] = len(computed)
    fused = json.loads((out / "eval" / "metrics.json").read_text())
    return {
        "root": root,
        "out": out,
        "counts": counts,
        "fused": fused,
        "branch": branch,
        "tmp": tmp,
    }


def test_rgbd_train_writes_two_branch_runs(run):
    out = run["out"]
    manifest = json.loads((out / RGBD_MANIFEST).read_text())
    assert manifest["branches"] == {"rgb": "rgb/checkpoint.pt", "depth": "depth/checkpoint.pt"}
    assert Config.from_yaml(out / "config.yaml").data.modality == "rgbd"
    for modality in ("rgb", "depth"):
        assert (out / modality / "checkpoint.pt").is_file()
        assert Config.from_yaml(out / modality / "config.yaml").data.modality == modality
        means = read_checkpoint(out / modality)["model"]["stage_map_mean"]  # set by finish()
        assert (means > 0).all() and not torch.equal(means, torch.ones_like(means))
    assert not (out / "rgb" / DEPTH_CACHE).exists()


def _check_metrics(metrics: dict) -> None:
    assert metrics["n_images"] == COUNTS["test"] and metrics["n_anomalous"] == 2
    for key in ("image_auroc", "image_auroc_max", "image_auroc_deviation", "pixel_auroc", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["image_score"] == "deviation"


@pytest.mark.parametrize("modality", ["rgb", "depth", "rgbd"])
def test_each_modality_evaluates_end_to_end(run, modality):
    if modality == "rgbd":
        metrics, eval_dir = run["fused"], run["out"] / "eval"
        assert set(metrics["branches"]) == {"rgb", "depth"}
        for name, branch in metrics["branches"].items():
            assert branch["image_auroc"] == run["branch"][name]["image_auroc"]
    else:
        metrics, eval_dir = run["branch"][modality], run["tmp"] / f"eval_{modality}"
    _check_metrics(metrics)
    assert json.loads((eval_dir / "metrics.json").read_text())["aupro"] == metrics["aupro"]
    with (eval_dir / "scores.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == COUNTS["test"]
    assert len(list((eval_dir / "heatmaps").glob("*.png"))) == COUNTS["test"]
    assert (eval_dir / "report.html").is_file() and np.isfinite(metrics["thresholds"]["image"])


def _left_picture(path) -> np.ndarray:
    panel = np.asarray(Image.open(path))
    return panel[:, : panel.shape[0]]


def test_fused_heatmaps_show_the_rgb_image(run):
    name = panel_name("bump", Path("000.png"))
    fused = _left_picture(run["out"] / "eval" / "heatmaps" / name)
    np.testing.assert_array_equal(fused, _left_picture(run["tmp"] / "eval_rgb" / "heatmaps" / name))
    assert not np.array_equal(fused, _left_picture(run["tmp"] / "eval_depth" / "heatmaps" / name))


def test_depth_cache_is_reused_across_train_and_evaluate(run):
    counts = run["counts"]
    # Each cloud is rendered once over training and evaluation, and never again after.
    assert COUNTS["train"] <= counts["train"] <= COUNTS["train"] + COUNTS["validation"]
    assert counts["fused"] == sum(COUNTS.values())
    assert counts["branches"] == counts["fused"]
    cache = run["out"] / "depth" / DEPTH_CACHE
    assert len(list(cache.glob("*.png"))) == sum(COUNTS.values())


def _branch_scores(run_dir, samples) -> np.ndarray:
    detector = Detector.load(run_dir / "checkpoint.pt", "cpu")
    loader = image_loader(detector.cfg.data, run_dir)
    images = load_images(samples, detector.cfg.data.image_size, loader)
    return detector.run(images.images).scores.astype(np.float64)


def _csv_scores(path, samples) -> np.ndarray:
    with path.open() as fh:
        rows = {r["image"]: float(r["score"]) for r in csv.DictReader(fh)}
    return np.array([rows[s.image.as_posix()] for s in samples])


def test_fused_score_is_mean_of_standardised_branch_scores(run):
    """Each branch rescores validation and test images (scores.csv rounds to 6 digits)."""
    data = read_category(run["root"], "mvtec3d")
    n_normal, by_hand = len(data.validation), []
    for modality in ("rgb", "depth"):
        scores = _branch_scores(run["out"] / modality, data.validation + data.test)
        normal, test = scores[:n_normal], scores[n_normal:]
        by_hand.append((test - normal.mean()) / normal.std(ddof=1))
    fused = _csv_scores(run["out"] / "eval" / "scores.csv", data.test)
    np.testing.assert_allclose(fused, np.mean(by_hand, axis=0), rtol=1e-4, atol=1e-4)


def _inference(maps, scores) -> Inference:
    scores = np.asarray(scores, dtype=np.float32)
    return Inference(np.asarray(maps, np.float32), scores, scores + 1, None, seconds=1.0)


def test_fuse_hand_values():
    maps_a = np.stack([np.zeros((2, 2)), np.full((2, 2), 2.0)])  # pixels: mean 1, std sqrt(8/7)
    normal_a = _inference(maps_a, [1.0, 3.0])  # mean 2, std sqrt(2)
    normal_b = _inference(maps_a * 2, [0.0, 4.0])  # mean 2, std 2 sqrt(2)
    test_a = _inference(np.full((1, 2, 2), 3.0), [5.0])
    test_b = _inference(np.full((1, 2, 2), 2.0), [2.0])
    fused = fuse(
        [standardise(test_a, normal_stats(normal_a)), standardise(test_b, normal_stats(normal_b))]
    )
    assert fused.scores[0] == pytest.approx((3 / np.sqrt(2) + 0.0) / 2, rel=1e-6)
    pixel_std = np.sqrt(8 / 7)
    assert fused.maps[0, 0, 0] == pytest.approx((2 / pixel_std + 0 / pixel_std) / 2, rel=1e-6)
    assert fused.scores_deviation is None and fused.seconds == 2.0
    with pytest.raises(ValueError, match="differ in shape"):
        fuse([test_a, _inference(np.zeros((1, 4, 4)), [0.0])])


def test_rgbd_refuses_an_existing_run_without_resume(run):
    cfg = tiny_config(run["root"], "rgbd")
    with pytest.raises(CheckpointError, match=r"rgbd\.json exists"):
        train(cfg, run["out"])
