"""Depth preprocessing: plane removal, hole filling, rendering and the PNG cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from fake_mvtec3d import fake_cloud, write_fake_mvtec3d

from siamese_ad.data.depth import (
    DepthCache,
    DepthParams,
    depth_map,
    depth_to_image,
    fill_holes,
    fit_background_plane,
    load_xyz,
    plane_height,
)
from siamese_ad.data.sample import DataError

SIZE = 48


@pytest.fixture
def bump_cloud():
    return fake_cloud(SIZE, np.random.default_rng(3), defect="bump", holes=3)


def test_load_xyz_round_trip_and_nan_as_missing(tmp_path, bump_cloud):
    xyz = bump_cloud.xyz.copy()
    xyz[5, 7] = np.nan
    path = tmp_path / "cloud.tiff"
    tifffile.imwrite(path, xyz, photometric="rgb")
    loaded = load_xyz(path)
    assert loaded.shape == (SIZE, SIZE, 3) and loaded.dtype == np.float32
    assert np.all(loaded[5, 7] == 0)
    np.testing.assert_array_equal(loaded[10:], bump_cloud.xyz[10:])


def test_load_xyz_rejects_bad_shape_and_empty_cloud(tmp_path):
    flat = tmp_path / "flat.tiff"
    tifffile.imwrite(flat, np.ones((8, 8), np.float32))
    with pytest.raises(DataError, match=r"flat\.tiff"):
        load_xyz(flat)
    empty = tmp_path / "empty.tiff"
    tifffile.imwrite(empty, np.zeros((8, 8, 3), np.float32), photometric="rgb")
    with pytest.raises(DataError, match=r"empty\.tiff.*no valid points"):
        load_xyz(empty)


def test_plane_removal_flattens_tilted_background_and_keeps_bumps(bump_cloud):
    plane = fit_background_plane(bump_cloud.xyz, np.random.default_rng(0), border=10)
    assert np.isclose(np.linalg.norm(plane[:3]), 1.0) and plane[2] < 0
    height = plane_height(bump_cloud.xyz, plane)
    assert np.all(np.isnan(height[bump_cloud.holes]))
    background = ~bump_cloud.object_mask & ~bump_cloud.holes
    raw_z = bump_cloud.xyz[..., 2][background]
    assert raw_z.max() - raw_z.min() > 0.02  # the tilt alone spans more than the object height
    assert np.abs(height[background]).max() < 1e-3
    peak = np.unravel_index(np.argmax(bump_cloud.height), (SIZE, SIZE))
    assert height[peak] == pytest.approx(bump_cloud.height[peak], rel=0.05)
    assert height[peak] - 0.02 == pytest.approx(0.006, rel=0.15)  # bump amplitude above the top


def test_fill_holes_matches_a_smooth_field():
    rows, cols = np.mgrid[:20, :20]
    field = (0.1 * rows + 0.05 * cols).astype(np.float32)
    missing = np.zeros_like(field, dtype=bool)
    missing[6:11, 8:12] = True
    filled = fill_holes(np.where(missing, np.nan, field), missing)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[~missing], field[~missing])
    assert np.abs(filled[missing] - field[missing]).max() < 0.2


def test_depth_map_background_zero_holes_filled_bump_brightest(bump_cloud):
    depth = depth_map(bump_cloud.xyz, np.random.default_rng(0), DepthParams(border=10))
    assert depth.shape == (SIZE, SIZE) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and depth.min() >= 0 and depth.max() <= 1
    assert np.all(depth[~bump_cloud.object_mask & ~bump_cloud.holes] == 0)
    inside_holes = bump_cloud.holes & bump_cloud.object_mask
    assert inside_holes.sum() >= 12 and np.all(depth[inside_holes] > 0.5)
    flat_top = bump_cloud.object_mask & ~bump_cloud.defect_mask & ~bump_cloud.holes
    assert np.abs(depth[inside_holes] - np.median(depth[flat_top])).max() < 0.02
    assert depth[bump_cloud.defect_mask].max() == 1.0
    assert depth[bump_cloud.defect_mask].max() > np.median(depth[flat_top]) + 0.15
    again = depth_map(bump_cloud.xyz, np.random.default_rng(0), DepthParams(border=10))
    np.testing.assert_array_equal(depth, again)


def test_dent_stays_visible_below_a_flat_top():
    cloud = fake_cloud(SIZE, np.random.default_rng(4), defect="dent")
    depth = depth_map(cloud.xyz, np.random.default_rng(0))
    flat_top = cloud.object_mask & ~cloud.defect_mask & ~cloud.holes
    assert depth[cloud.defect_mask].min() < np.median(depth[flat_top]) - 0.1
    assert depth[cloud.defect_mask].min() > 0


def test_depth_to_image_renders_three_equal_channels():
    depth = np.array([[0.0, 0.5], [1.0, 1.2]], dtype=np.float32)
    image = depth_to_image(depth)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    assert np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2])
    assert image[0, 0, 0] == 0 and image[1, 0, 0] == 255 and image[1, 1, 0] == 255
    assert image[0, 1, 0] in (127, 128)
    with pytest.raises(ValueError, match="shape"):
        depth_to_image(np.zeros((2, 2, 3)))


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def test_cache_computes_once_and_invalidates_on_change(tmp_path):
    category = write_fake_mvtec3d(tmp_path / "data", size=32, train=1, validation=0, test_good=0)
    xyz_path = category / "train" / "good" / "xyz" / "000.tiff"
    data_files = _files(category)
    cache = DepthCache(tmp_path / "cache")
    first = cache.get(xyz_path)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8 and cache.computed == 1
    assert len(list((tmp_path / "cache").glob("*.png"))) == 1
    second = cache.get(xyz_path)
    assert cache.computed == 1
    np.testing.assert_array_equal(first, second)
    assert DepthCache(tmp_path / "cache").get(xyz_path) is not None  # a new instance reuses it
    assert _files(category) == data_files  # nothing written next to the data

    tifffile.imwrite(xyz_path, fake_cloud(32, np.random.default_rng(9)).xyz, photometric="rgb")
    stat = xyz_path.stat()
    os.utime(xyz_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache.get(xyz_path)
    assert cache.computed == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_cache_key_depends_on_parameters(tmp_path):
    category = write_fake_mvtec3d(tmp_path / "data", size=32, train=1, validation=0, test_good=0)
    xyz_path = category / "train" / "good" / "xyz" / "000.tiff"
    base = DepthCache(tmp_path / "cache")
    assert base.key(xyz_path) != DepthCache(tmp_path / "cache", DepthParams(border=6)).key(xyz_path)
    assert base.key(xyz_path) != DepthCache(tmp_path / "cache", seed=1).key(xyz_path)
    assert base.key(xyz_path) == DepthCache(tmp_path / "other").key(xyz_path)


def test_cache_replaces_a_damaged_entry(tmp_path):
    category = write_fake_mvtec3d(tmp_path / "data", size=32, train=1, validation=0, test_good=0)
    xyz_path = category / "train" / "good" / "xyz" / "000.tiff"
    cache = DepthCache(tmp_path / "cache")
    good = cache.get(xyz_path)
    cache.path_for(xyz_path).write_bytes(b"not a png")
    np.testing.assert_array_equal(cache.get(xyz_path), good)
    assert cache.computed == 2
