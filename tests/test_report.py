"""HTML reports built from hand-made results: links resolve, tables match, errors come first.

The heat-map PNGs are written whole, with their exact pixels.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siamese_ad.data.dataset import ImageSet
from siamese_ad.data.sample import Sample
from siamese_ad.evaluation.inference import Inference
from siamese_ad.reporting.heatmaps import save_pngs
from siamese_ad.reporting.html import fmt, gallery_order
from siamese_ad.reporting.report import METRIC_COLUMNS, write_benchmark_report, write_eval_report
from siamese_ad.thresholds import Thresholds

SIZE = 16


class _Page(HTMLParser):
    """Collects <img src>, <a href> and the (data-key, text) of every table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.cells: list[tuple[str, str]] = []
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs["src"])
        elif tag == "a":
            self.hrefs.append(attrs["href"])
        elif tag == "td":
            self._key = attrs["data-key"]

    def handle_data(self, data: str) -> None:
        if self._key is not None and data.strip():
            self.cells.append((self._key, data.strip()))
            self._key = None


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_gallery_puts_the_worst_errors_first() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.25, 0.75, 0.125, 0.875, 0.625, 0.4375])
    items = gallery_order(labels, scores, threshold=0.5)
    assert [(i.index, i.kind) for i in items] == [
        (2, "fn"),  # 0.375 below the threshold
        (1, "fp"),  # 0.25 above
        (4, "fp"),
        (5, "fn"),
        (0, "ok"),  # then the correct ones, closest to the threshold first
        (3, "ok"),
    ]
    assert [i.margin for i in items[:4]] == pytest.approx([0.375, 0.25, 0.125, 0.0625])
    assert len(gallery_order(labels, scores, 0.5, limit=3)) == 3


def _fake_evaluation(out: Path) -> tuple[ImageSet, Inference, list[Path]]:
    """Four images (2 normal, 2 anomalous with a square defect), maps and heat-map panels."""
    rng = np.random.default_rng(0)
    labels = [0, 0, 1, 1]
    samples = [
        Sample(
            Path(f"/d/test/{'good' if y == 0 else 'cut'}/{i:03d}.png"),
            y,
            "good" if y == 0 else "cut",
        )
        for i, y in enumerate(labels)
    ]
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    masks[2:, 4:8, 4:8] = True
    maps = rng.random((4, SIZE, SIZE)).astype(np.float32) + 2.0 * masks.numpy()
    images = ImageSet(
        samples,
        torch.zeros(4, 3, SIZE, SIZE, dtype=torch.uint8),
        masks,
        torch.ones(4, dtype=torch.bool),
    )
    scores = np.array([0.1, 0.75, 0.375, 0.9])
    inference = Inference(maps, scores, maps.reshape(4, -1).max(1), None, seconds=0.01)
    panels = []
    for i in range(4):
        panels.append(out / "heatmaps" / f"{i}.png")
        panels[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((SIZE, 4 * SIZE, 3), np.uint8)).save(panels[-1])
    return images, inference, panels


def test_eval_report_links_resolve_and_the_table_matches(tmp_path: Path) -> None:
    images, inference, panels = _fake_evaluation(tmp_path)
    result = {"image_auroc": 0.75, "pixel_auroc": 0.91234567, "aupro": 0.5, "ms_per_image": 2.5}
    thresholds = Thresholds(0.5, 1.5, 0.2, 0.3, "quantile", "quantile", 0.99, 5, 0)
    path = write_eval_report(tmp_path, result, images, inference, thresholds, panels)
    page = _parse(path)
    assert page.srcs and all((tmp_path / src).is_file() for src in page.srcs)
    assert not any(src.startswith(("/", "http")) for src in page.srcs)
    metric_cells = [cell for cell in page.cells if cell[0] in dict(METRIC_COLUMNS)]
    assert metric_cells == [(key, fmt(result.get(key))) for key, _ in METRIC_COLUMNS]
    gallery = [src for src in page.srcs if src.startswith("heatmaps/")]
    assert gallery[:2] == ["heatmaps/1.png", "heatmaps/2.png"]  # fp 0.25 over, fn 0.125 under
    assert {"report_files/roc.png", "report_files/pro.png", "report_files/scores.png"} <= set(
        page.srcs
    )
    assert "<script" not in path.read_text() and "stylesheet" not in path.read_text()


def _fake_cell(out: Path, name: str, scores: list[float], threshold: float) -> None:
    cell = out / name
    cell.mkdir(parents=True)
    rows = "".join(f"/x/{i}.png,d,{i % 2},{s},{s},\n" for i, s in enumerate(scores))
    (cell / "scores.csv").write_text("image,defect,label,score,score_max,score_deviation\n" + rows)
    (cell / "metrics.json").write_text(json.dumps({"thresholds": {"image": threshold}}))
    (cell / "report.html").write_text("<html></html>")


def test_benchmark_report_table_and_links(tmp_path: Path) -> None:
    _fake_cell(tmp_path, "a/full", [0.1, 0.9, 0.2, 0.8], 0.5)
    _fake_cell(tmp_path, "b/full", [0.3, 0.4, 0.5, 0.6], 0.45)
    columns = (("category", "category"), ("setup", "setup"), ("image_auroc", "image AUROC"))
    rows = [
        {"category": "a", "setup": "full", "image_auroc": 1.0, "cell": "a/full"},
        {"category": "b", "setup": "full", "image_auroc": 0.75, "cell": "b/full"},
        {"category": "mean", "setup": "full", "image_auroc": 0.875},
    ]
    cells = [("full", r["cell"], tmp_path / r["cell"]) for r in rows[:2]]
    path = write_benchmark_report(tmp_path, rows, columns, cells)
    page = _parse(path)
    assert page.cells == [(k, fmt(r[k])) for r in rows for k, _ in columns]
    assert page.hrefs == ["a/full/report.html", "b/full/report.html"]
    assert all((tmp_path / href).is_file() for href in page.hrefs)
    assert len(page.srcs) == 3 and all((tmp_path / src).is_file() for src in page.srcs)


def test_pngs_are_written_whole_with_their_exact_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(5)]
    pictures.append(rng.integers(0, 2, (8, 12), dtype=np.uint8) * 255)  # a grey mask
    paths = [tmp_path / f"{i}.png" for i in range(len(pictures))]
    save_pngs((p, lambda a=a: a) for p, a in zip(paths, pictures, strict=True))
    for path, picture in zip(paths, pictures, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), picture)
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary file left


def test_a_failing_picture_stops_the_writing_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    def broken() -> np.ndarray:
        raise ValueError("cannot render")

    good = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="cannot render"):
        save_pngs([(tmp_path / "a.png", lambda: good), (tmp_path / "b.png", broken)])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert not (tmp_path / "b.png").exists()
