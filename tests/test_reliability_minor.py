"""Issue 12, item 13: URL-special characters in file names keep their images in report.html,
looping folder links are skipped with a warning, and `--weights <folder>` says what it wants."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import torch

from siamese_ad.data.dataset import ImageSet
from siamese_ad.data.sample import Sample
from siamese_ad.evaluation.inference import Inference
from siamese_ad.reporting.heatmaps import write_panels
from siamese_ad.reporting.report import write_benchmark_report, write_eval_report

SIZE = 16
SPECIAL_NAMES = ("a#1.png", "b?2.png", "c%3.png", "d 4.png")


class _Links(HTMLParser):
    """Collects every <img src> and <a href> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.links += [value for key, value in attrs if key in ("src", "href")]


def _links(path: Path) -> list[str]:
    parser = _Links()
    parser.feed(path.read_text())
    return parser.links


# `#`, `?`, `%` and spaces in file names: report.html links them percent-encoded


def test_heat_maps_with_url_special_names_are_linked_quoted(tmp_path: Path) -> None:
    samples = [Sample(Path("/d/test/cut") / name, 1, "cut") for name in SPECIAL_NAMES]
    n = len(samples)
    images = ImageSet(
        samples,
        torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8),
        torch.zeros(n, SIZE, SIZE, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
    )
    maps = np.random.default_rng(0).random((n, SIZE, SIZE)).astype(np.float32)
    scores = maps.reshape(n, -1).mean(1)
    panels = write_panels(tmp_path / "heatmaps", images, maps)
    inference = Inference(maps, scores, maps.reshape(n, -1).max(1), None, seconds=0.01)
    page = write_eval_report(tmp_path, {"image_auroc": None}, images, inference, None, panels)
    gallery = [src for src in _links(page) if src.startswith("heatmaps/")]
    assert len(gallery) == n
    assert any("%23" in src for src in gallery)  # the `#` of a#1.png
    assert not any(c in src for src in gallery for c in "#? ")
    assert {tmp_path / unquote(src) for src in gallery} == set(panels)
    assert all(path.is_file() for path in panels)


def test_benchmark_links_a_cell_with_a_hash_in_its_name_quoted(tmp_path: Path) -> None:
    cell = tmp_path / "a#b" / "full"
    cell.mkdir(parents=True)
    (cell / "scores.csv").write_text(
        "image,defect,label,score,score_max,score_deviation\n/x/0.png,d,0,0.1,0.1,\n"
        "/x/1.png,d,1,0.9,0.9,\n"
    )
    (cell / "metrics.json").write_text(json.dumps({"thresholds": {"image": 0.5}}))
    (cell / "report.html").write_text("<html></html>")
    rows = [{"category": "a#b", "image_auroc": 1.0, "cell": "a#b/full"}]
    columns = (("category", "category"), ("image_auroc", "image AUROC"))
    page = write_benchmark_report(tmp_path, rows, columns, [("full", "a#b/full", cell)])
    links = _links(page)
    assert "a%23b/full/report.html" in links
    assert all((tmp_path / unquote(link)).is_file() for link in links)
