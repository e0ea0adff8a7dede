"""MVTec 3D-AD input errors surface through `train` with a message naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from fake_mvtec3d import write_fake_mvtec3d

from siamese_ad.checkpoint import find_rgbd_manifest
from siamese_ad.config import Config, ConfigError
from siamese_ad.data.modality import image_loader
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.training.multimodal import branch_config
from siamese_ad.training.trainer import train


def _config(root, modality: str, fmt: str = "mvtec3d") -> Config:
    cfg = Config()
    cfg.data.root, cfg.data.format, cfg.data.modality = str(root), fmt, modality
    cfg.data.image_size = 32
    cfg.model.backbone, cfg.model.weights, cfg.model.decoder_blocks = "resnet18", "none", 1
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device = 1, 2, "cpu"
    cfg.synthesis.pool_size = 2
    return cfg.validate()


@pytest.fixture
def category(tmp_path):
    return write_fake_mvtec3d(tmp_path / "data", size=48, train=2, validation=1, test_good=1)


@pytest.mark.parametrize("modality", ["rgb", "depth", "rgbd"])
def test_missing_xyz_names_the_file(category, tmp_path, modality):
    (category / "train" / "good" / "xyz" / "001.tiff").unlink()
    with pytest.raises(DataError, match=r"train/good/xyz/001\.tiff is missing"):
        train(_config(category, modality), tmp_path / "out")


def test_size_mismatch_names_the_file(category, tmp_path):
    path = category / "test" / "bump" / "xyz" / "000.tiff"
    tifffile.imwrite(path, np.ones((40, 48, 3), np.float32), photometric="rgb")
    with pytest.raises(DataError, match=r"bump/xyz/000\.tiff is 40x48 .* is 48x48"):
        train(_config(category, "depth"), tmp_path / "out")


@pytest.mark.parametrize("modality", ["depth", "rgbd"])
def test_all_zero_cloud_names_the_file_before_training(category, tmp_path, modality):
    path = category / "train" / "good" / "xyz" / "000.tiff"
    tifffile.imwrite(path, np.zeros((48, 48, 3), np.float32), photometric="rgb")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"good/xyz/000\.tiff has no valid points"):
        train(_config(category, modality), out)
    assert not list(out.rglob("checkpoint.pt"))  # rgbd trains the depth branch first


def test_rgbd_needs_the_mvtec3d_format(tmp_path):
    with pytest.raises(ConfigError, match=r"rgbd needs data\.format=mvtec3d"):
        train(_config(tmp_path, "rgbd", fmt="mvtec"), tmp_path / "out")


def test_depth_loader_rejects_a_sample_without_cloud(tmp_path):
    cfg = _config(tmp_path, "depth")
    with pytest.raises(DataError, match=r"a\.png has no point cloud"):
        image_loader(cfg.data, tmp_path)(Sample(tmp_path / "a.png", 0), 32)


def test_branch_config_and_manifest_lookup(tmp_path):
    cfg = _config(tmp_path, "rgbd")
    assert branch_config(cfg, "depth").data.modality == "depth"
    assert cfg.data.modality == "rgbd"
    assert find_rgbd_manifest(tmp_path) is None
    (tmp_path / "rgbd.json").write_text("{}")
    assert find_rgbd_manifest(tmp_path) == tmp_path / "rgbd.json"
    assert find_rgbd_manifest(tmp_path / "rgbd.json") == tmp_path / "rgbd.json"
