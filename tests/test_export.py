"""Export: ONNX and TorchScript graphs agree with the PyTorch scorer; predict --model matches."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import TinyRun, predict_both
from PIL import Image

from siamese_ad.app.export import decision_from, export_model, metadata_path
from siamese_ad.checkpoint import TrainingState, read_checkpoint, save_checkpoint
from siamese_ad.cli import main
from siamese_ad.config import preset
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import build_unet
from siamese_ad.thresholds import Thresholds
from siamese_ad.training.stage2 import set_statistics

SIZE = 64
TOL = 1e-4
STAGE_MAP_MEAN = torch.tensor([0.5, 1.25, 2.0])  # the graph must divide by them, as the scorer
THRESHOLDS = Thresholds(
    image=0.05, pixel=0.6, centre=0.0, spread=0.1, image_method="f1", pixel_method="quantile",
    quantile=0.99, n_normal=4, n_anomalous=2,
)  # fmt: skip


def _checkpoint(
    path: Path, backbone: str, cpam: bool, thresholds: dict | None, input_norm: str = "none"
) -> Path:
    """A small untrained checkpoint with non-zero CPAM gammas, per-stage map means other than
    ones (scoring.map_norm "mean" divides by them) and deviation statistics set."""
    cfg = preset("cpu")
    cfg.data.root, cfg.data.image_size = "unused", SIZE
    cfg.model.backbone, cfg.model.weights, cfg.model.cpam = backbone, "none", cpam
    cfg.model.input_norm = input_norm
    cfg.train.bf16 = False  # the float32 graph is compared with a float32 reference
    torch.manual_seed(0)
    model = build_unet(cfg.model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("gamma_c", "gamma_p")):
                param.fill_(0.5)
        model.stage_map_mean.copy_(STAGE_MAP_MEAN)
    if thresholds is not None:  # a stage-2 model: the score is the deviation score
        set_statistics(model, torch.tensor([0.02, 0.03, 0.04]), torch.tensor([0.5, 0.7, 0.9]))
    extra = {"thresholds": thresholds} if thresholds is not None else None
    save_checkpoint(path, model, cfg, TrainingState(stage="done"), {}, extra=extra)
    return path


def _images(n: int, seed: int) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8 smooth random pictures."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(b).resize((SIZE, SIZE))) for b in base])


def _reference(ckpt: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inference = Detector.load(ckpt, "cpu").run(torch.from_numpy(images).permute(0, 3, 1, 2))
    return inference.maps, inference.scores


@pytest.fixture(scope="module")
def lite_cpam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 (TF-SAME padding) with CPAM, deviation score and an image threshold."""
    root = tmp_path_factory.mktemp("lite")
    ckpt = _checkpoint(root / "checkpoint.pt", "efficientnet_lite0", True, THRESHOLDS.to_dict())
    export_model(ckpt, root / "model.onnx", "onnx")
    return ckpt


def test_onnx_matches_pytorch_with_dynamic_batch(lite_cpam: Path) -> None:
    model = lite_cpam.parent / "model.onnx"
    meta = json.loads(metadata_path(model).read_text())
    assert meta["image_size"] == SIZE and meta["score"] == "deviation"
    assert meta["map_norm"] == "mean"
    assert meta["stage_map_mean"] == pytest.approx(STAGE_MAP_MEAN.tolist())
    assert meta["outputs"] == ["map", "score", "anomalous", "normalised_score", "mask"]
    images = _images(3, seed=1)  # exported with a batch of 2: the batch axis is dynamic
    maps, scores = _reference(lite_cpam, images)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    got_map, got_score, anomalous, normalised, mask = session.run(None, {"images": x})
    assert got_map.shape == (3, SIZE, SIZE) and got_score.shape == (3,)
    assert np.abs(got_map - maps).max() < TOL
    assert np.abs(got_score - scores).max() < TOL
    np.testing.assert_array_equal(anomalous, THRESHOLDS.decide(scores))
    np.testing.assert_allclose(normalised, THRESHOLDS.normalise(scores), atol=TOL)
    near = np.abs(maps - THRESHOLDS.pixel) < TOL  # pixels too close to the cut to compare
    np.testing.assert_array_equal(mask[~near], (maps > THRESHOLDS.pixel)[~near])


def test_onnx_standardises_each_image_as_pytorch_does(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "checkpoint.pt", "resnet18", False, None, input_norm="image")
    export_model(ckpt, tmp_path / "model.onnx", "onnx")
    images = _images(2, seed=5) // 3  # dark pictures; the same ones brighter below
    maps, scores = _reference(ckpt, images)
    brighter_maps, _ = _reference(ckpt, images * 2 + 40)
    assert np.abs(brighter_maps - maps).max() < 0.05 * np.abs(maps).max()  # exposure ignored
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    got_map, got_score = session.run(None, {"images": x})[:2]
    assert np.abs(got_map - maps).max() < TOL and np.abs(got_score - scores).max() < TOL


def _rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with csv_path.open() as fh:
        return {Path(r["image"]).name: r for r in csv.DictReader(fh)}


def test_predict_model_matches_predict_checkpoint_without_torch(
    lite_cpam: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, picture in enumerate(_images(3, seed=3)):
        Image.fromarray(picture).resize((80, 72)).save(folder / f"img{i}.png")  # resized on read
    args = ["predict", str(folder), "--out"]
    assert main([*args, str(tmp_path / "torch"), "--checkpoint", str(lite_cpam)]) == 0
    model_args = [*args, str(tmp_path / "onnx"), "--model", str(lite_cpam.parent / "model.onnx")]
    script = (
        "import sys; from siamese_ad.cli import main; "
        f"assert main({model_args!r}) == 0; "
        "assert 'torch' not in sys.modules, 'the ONNX path imported torch'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    ref, got = _rows(tmp_path / "torch" / "scores.csv"), _rows(tmp_path / "onnx" / "scores.csv")
    assert ref.keys() == got.keys() == {"img0.png", "img1.png", "img2.png"}
    for name, row in ref.items():
        assert list(got[name]) == list(row)  # the same columns, decision included
        assert abs(float(got[name]["score"]) - float(row["score"])) < TOL
        assert abs(float(got[name]["normalised_score"]) - float(row["normalised_score"])) < TOL
        assert got[name]["anomalous"] == row["anomalous"]
        assert Path(got[name]["mask"]).is_file()
    ref_maps = np.load(tmp_path / "torch" / "maps.npy").astype(np.float32)
    got_maps = np.load(tmp_path / "onnx" / "maps.npy").astype(np.float32)
    assert np.abs(ref_maps - got_maps).max() <= 1e-3 * max(np.abs(ref_maps).max(), 1.0)
    assert len(list((tmp_path / "onnx" / "heatmaps").glob("*.png"))) == 6  # panels and masks


def test_onnx_of_a_trained_run_divides_each_stage_by_its_map_mean(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    """train sets the map means; predict --model and predict --checkpoint give the same maps."""
    means = read_checkpoint(tiny_run.run)["model"]["stage_map_mean"]
    assert not torch.equal(means, torch.ones_like(means))
    model = export_model(tiny_run.run, tmp_path / "model.onnx")
    meta = json.loads(metadata_path(model).read_text())
    assert meta["map_norm"] == "mean" and meta["stage_map_mean"] == pytest.approx(means.tolist())
    ref, got = predict_both(tiny_run.run, model, tiny_run.data, tmp_path)
    assert len(ref) == 6 and ref.keys() == got.keys()
    for name, row in ref.items():
        score = float(row["score"])
        assert abs(float(got[name]["score"]) - score) < TOL * max(abs(score), 1.0), name
    ref_maps, got_maps = (np.load(tmp_path / k / "maps.npy").astype(np.float32) for k in "to")
    assert np.abs(ref_maps - got_maps).max() <= 1e-3 * max(np.abs(ref_maps).max(), 1.0)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet-18 without CPAM, before stage 2 (score = max of the map), no thresholds."""
    return _checkpoint(tmp_path_factory.mktemp("plain") / "checkpoint.pt", "resnet18", False, None)


def test_export_without_thresholds_gives_map_and_max_score(plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(plain), "--format", "onnx", "--out", str(out)]) == 0
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["outputs"] == ["map", "score"] and meta["score"] == "max"
    assert meta["thresholds"] is None
    images = _images(2, seed=4)
    maps, scores = _reference(plain, images)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    got_map, got_score = session.run(None, {"images": x})
    assert np.abs(got_map - maps).max() < TOL
    assert np.abs(got_score - scores).max() < TOL
    np.testing.assert_allclose(got_score, got_map.reshape(2, -1).max(axis=1), atol=1e-6)


def test_torchscript_matches_pytorch(plain: Path, tmp_path: Path) -> None:
    model = export_model(plain, tmp_path / "model.pt", "torchscript")
    images = _images(3, seed=2)
    maps, scores = _reference(plain, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.load(str(model))
    with torch.no_grad():
        got_map, got_score = traced(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0)
    assert got_map.shape == (3, SIZE, SIZE)
    assert np.abs(got_map.numpy() - maps).max() < TOL
    assert np.abs(got_score.numpy() - scores).max() < TOL


def test_decision_from_reads_thresholds_and_tolerates_absence() -> None:
    assert decision_from(None) is None and decision_from({}) is None
    decision = decision_from(THRESHOLDS.to_dict())
    assert decision is not None
    assert (decision.image, decision.pixel, decision.spread) == (0.05, 0.6, 0.1)
    with pytest.raises(ValueError, match="recalibrate"):
        decision_from({"image": 1.0})
