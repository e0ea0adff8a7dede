"""A tiny benchmark: results files, resume without retraining, predict with thresholds."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_config
from PIL import Image

import siamese_ad.app.benchmark as benchmark
from siamese_ad.app.predict import predict
from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.config import Config, ConfigError
from siamese_ad.reporting.html import fmt

SETUPS = ["full", "4shot"]


def tiny_config() -> Config:
    """The shared tiny config (32 px, random resnet18, one epoch per stage), one batch per epoch."""
    cfg = make_tiny_config("")
    cfg.train.batch_size = 8
    return cfg


@pytest.fixture(scope="module")
def bench(tiny_category: Path, tmp_path_factory: pytest.TempPathFactory):
    """(data root, benchmark folder, rows) of one run over the tiny category, full and 4-shot."""
    out = tmp_path_factory.mktemp("bench") / "out"
    rows = benchmark.run_benchmark(
        tiny_category.parent, "mvtec", "all", SETUPS, ["rgb"], out, tiny_config()
    )
    return tiny_category.parent, out, rows


def test_results_files_hold_one_row_per_cell_and_a_mean(bench) -> None:
    _, out, rows = bench
    assert [(r["category"], r["setup"]) for r in rows] == [
        ("metal", "full"),
        ("metal", "4shot"),
        ("mean", "full"),
        ("mean", "4shot"),
    ]
    assert json.loads((out / "results.json").read_text()) == rows
    for row in rows[:2]:
        assert 0.0 <= row["image_auroc"] <= 1.0 and row["training_seconds"] > 0
        assert (out / row["cell"] / "metrics.json").is_file()
        assert (out / row["cell"] / "report.html").is_file()
    assert rows[2]["aupro"] == pytest.approx(rows[0]["aupro"])  # mean of one category
    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["pixel_auroc"]) for r in table] == pytest.approx(
        [r["pixel_auroc"] for r in rows]
    )
    md = (out / "results.md").read_text().splitlines()
    assert len(md) == 2 + len(rows) and fmt(rows[1]["image_f1_max"]) in md[3]


def test_few_shot_cell_trained_on_four_images_and_kept_validation_apart(bench) -> None:
    _, out, _ = bench
    manifest = json.loads((out / "metal" / "4shot" / "manifest.json").read_text())
    assert len(manifest["train"]) == 4 and len(manifest["validation"]) == 1
    assert not set(manifest["validation"]) & set(manifest["train"])
    extra = read_checkpoint(out / "metal" / "4shot" / "checkpoint.pt")["extra"]
    assert extra["thresholds"]["n_normal"] == 1  # chosen on validation at the end of train


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.srcs: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "td":
            self._key = attrs.get("data-key")
        if tag == "img":
            self.srcs.append(attrs["src"])

    def handle_data(self, data: str) -> None:
        if self._key is not None and data.strip():
            self.cells.append((self._key, data.strip()))
            self._key = None


def test_report_table_matches_results_json_and_images_exist(bench) -> None:
    _, out, rows = bench
    parser = _Cells()
    parser.feed((out / "report.html").read_text())
    keys = [key for key, _ in benchmark.RESULT_COLUMNS]
    assert parser.cells == [(k, fmt(r.get(k))) for r in rows for k in keys]
    assert parser.srcs and all((out / src).is_file() for src in parser.srcs)
    assert "http" not in "".join(parser.srcs)


def test_second_run_skips_finished_cells_and_resumes_an_interrupted_one(bench, monkeypatch):
    data, out, rows = bench
    checkpoint = out / "metal" / "full" / "checkpoint.pt"
    mtime = checkpoint.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(benchmark, "train", no_training)
    again = benchmark.run_benchmark(data, "mvtec", "all", SETUPS, ["rgb"], out, tiny_config())
    assert again == rows and checkpoint.stat().st_mtime_ns == mtime

    calls = []
    from siamese_ad.training.trainer import train as real_train

    def spy(cfg, out_dir, resume=False):
        calls.append((Path(out_dir).name, resume))
        return real_train(cfg, out_dir, resume=resume)

    monkeypatch.setattr(benchmark, "train", spy)
    (out / "metal" / "full" / "metrics.json").unlink()
    resumed = benchmark.run_benchmark(data, "mvtec", "all", SETUPS, ["rgb"], out, tiny_config())
    assert calls == [("full", True)]
    assert resumed[0]["image_auroc"] == pytest.approx(rows[0]["image_auroc"])


def test_predict_writes_decisions_normalised_scores_and_binary_masks(bench, tmp_path) -> None:
    data, out, _ = bench
    checkpoint = out / "metal" / "full" / "checkpoint.pt"
    thresholds = read_checkpoint(checkpoint)["extra"]["thresholds"]
    rows = predict(
        checkpoint,
        [data / "metal" / "test" / "good", data / "metal" / "test" / "spot"],
        tmp_path,
        device="cpu",
    )
    maps = np.load(tmp_path / "maps.npy").astype(np.float32)
    for row, amap in zip(rows, maps, strict=True):
        assert row["anomalous"] == (row["score"] > thresholds["image"])
        assert (row["normalised_score"] > 0.5) == row["anomalous"]
        mask = np.asarray(Image.open(row["mask"]))
        assert set(np.unique(mask)) <= {0, 255} and mask.shape == amap.shape
    assert "normalised_score" in (tmp_path / "scores.csv").read_text().splitlines()[0]


def test_setups_and_modalities_are_checked() -> None:
    setup = benchmark.parse_setup
    assert setup("full") == benchmark.Setup(0) and setup("16shot") == benchmark.Setup(16)
    assert setup("full-real2") == benchmark.Setup(0, 2)
    assert setup("16shot-real1-basic") == benchmark.Setup(16, 1, True)
    for bad in ("0shot", "shot", "few", "full-basic-real2", "full-real"):
        with pytest.raises(ConfigError, match="setup"):
            benchmark.parse_setup(bad)
    with pytest.raises(ConfigError, match="rgbd"):
        benchmark.run_benchmark(".", "mvtec", "all", ["full"], ["rgbd"], ".", tiny_config())
    with pytest.raises(ConfigError, match="modality"):
        benchmark.run_benchmark(".", "mvtec3d", "all", ["full"], ["infrared"], ".", tiny_config())
    with pytest.raises(ConfigError, match="depth"):
        benchmark.run_benchmark(".", "mvtec", "all", ["full"], ["depth"], ".", tiny_config())


def test_shards_split_the_cells_and_the_last_run_writes_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shards run disjoint cells; the tables appear only once every cell is finished."""
    for name in ("a", "b", "c"):
        (tmp_path / "data" / name / "train").mkdir(parents=True)
    ran: list[str] = []

    def fake_cell(cfg: Config, cell_dir: Path, heatmaps: bool = True) -> dict:
        ran.append(f"{Path(cfg.data.root).name}/{cell_dir.name}")
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "metrics.json").write_text(json.dumps({"image_auroc": 0.5}))
        return {"image_auroc": 0.5}

    monkeypatch.setattr(benchmark, "run_cell", fake_cell)
    monkeypatch.setattr(benchmark, "write_results", lambda out, rows: (out / "results.md").touch())
    monkeypatch.setattr(benchmark, "write_benchmark_report", lambda *a: None)
    args = (tmp_path / "data", "mvtec", "all", ["full"], ["rgb"], tmp_path / "out", tiny_config())
    benchmark.run_benchmark(*args, shard=benchmark.parse_shard("1/2"))
    assert ran == ["b/full"] and not (tmp_path / "out" / "results.md").exists()
    rows = benchmark.run_benchmark(*args, shard=(0, 2))
    assert ran[1:] == ["a/full", "b/full", "c/full"]  # b finished: read back, not retrained
    assert (tmp_path / "out" / "results.md").exists() and rows[-1]["category"] == "mean"
    with pytest.raises(ConfigError, match="shard"):
        benchmark.parse_shard("2/2")


def test_seeds_run_every_cell_per_seed_with_means_and_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data" / "a" / "train").mkdir(parents=True)
    seen: list[tuple[int, bool, bool, int]] = []

    def fake_cell(cfg: Config, cell_dir: Path, heatmaps: bool = True) -> dict:
        seen.append((cfg.train.seed, cfg.model.cpam, cfg.deviation.enabled, cfg.train.epochs))
        result = {"image_auroc": 0.5 + 0.1 * cfg.train.seed, "aupro": 0.4}
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "metrics.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(benchmark, "run_cell", fake_cell)
    monkeypatch.setattr(benchmark, "write_results", lambda out, rows: None)
    monkeypatch.setattr(benchmark, "write_benchmark_report", lambda *a: None)
    cfg = tiny_config()
    cfg.train.epochs, cfg.deviation.epochs = 3, 2
    rows = benchmark.run_benchmark(
        tmp_path / "data", "mvtec", "all", ["full", "full-basic"], ["rgb"], tmp_path / "out",
        cfg, seeds=[0, 2],
    )  # fmt: skip
    assert seen == [
        (0, True, True, 3),
        (2, True, True, 3),
        (0, False, False, 5),
        (2, False, False, 5),
    ]
    assert [r["cell"] for r in rows[:2]] == ["a/full/seed0", "a/full/seed2"]
    means = [r for r in rows if r.get("seed") == "mean"]
    assert [m["setup"] for m in means] == ["full", "full-basic"]
    assert means[0]["image_auroc"] == pytest.approx(0.6)
    assert means[0]["image_auroc_range"] == pytest.approx(0.2)
    overall = [r for r in rows if r["category"] == "mean"]
    assert overall[0]["image_auroc"] == pytest.approx(0.6)  # from the seed mean, counted once


def test_mean_rows_count_the_images_behind_their_means() -> None:
    """Seeds share their test images; categories add theirs, only where the metric exists."""

    def row(category: str, seed: int, pixel: float | None, n: int, n_pixel: int) -> dict:
        return {
            "category": category, "setup": "full", "modality": "rgb", "seed": seed,
            "image_auroc": 0.8, "pixel_auroc": pixel, "n_images": n, "n_pixel_images": n_pixel,
        }  # fmt: skip

    rows = [row("a", 0, 0.9, 10, 10), row("a", 1, 0.7, 10, 10), row("b", 0, None, 6, 2)]
    seeds = benchmark.seed_rows(rows)
    assert [(r["n_images"], r["n_pixel_images"]) for r in seeds] == [(10, 10)]
    (mean,) = benchmark.mean_rows(rows + seeds)
    assert (mean["n_images"], mean["n_pixel_images"]) == (16, 10)  # b has no pixel metric
    assert mean["pixel_auroc"] == pytest.approx(0.8)
    old = [{**r, "n_pixel_images": None} for r in rows[:2]]  # cells from before the counts
    assert benchmark.seed_rows(old)[0]["n_pixel_images"] is None
