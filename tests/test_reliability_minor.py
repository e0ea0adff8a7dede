"""Issue 12, item 13: URL-special characters in file names keep their images in report.html,
looping folder links are skipped with a warning, and `--weights <folder>` says what it wants."""

from __future__ import annotations

import json
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from siamese_ad.cli import main
from siamese_ad.data.dataset import ImageSet
from siamese_ad.data.folder import read_folder
from siamese_ad.data.mvtec import read_mvtec
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


# looping folder links: skipped, with one warning naming each


def _loop_warnings(read: object, root: Path) -> tuple[object, list[str]]:
    """What `read(root)` returns and the messages of its warnings that speak of a loop."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read(root)  # type: ignore[operator]
    return data, [str(w.message) for w in caught if "would loop" in str(w.message)]


def test_mvtec_category_with_looping_links_reads_once_and_warns_of_each(
    tiny_category: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(tiny_category, tmp_path / tiny_category.name))
    (root / "test" / "self").symlink_to(root / "test", target_is_directory=True)
    (root / "test" / "up").symlink_to("..", target_is_directory=True)
    data, messages = _loop_warnings(read_mvtec, root)
    expected = read_mvtec(tiny_category)
    assert sorted(s.key for s in data.test) == sorted(s.key for s in expected.test)
    assert len(messages) == 2
    assert any(str(root / "test" / "self") in m for m in messages)
    assert any(str(root / "test" / "up") in m for m in messages)


def test_folder_data_set_with_a_link_to_itself_warns_once_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    for name in ("good/0.png", "good/1.png", "good/2.png", "cut/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / name)
    (root / "loop").symlink_to(root, target_is_directory=True)
    data, messages = _loop_warnings(read_folder, root)
    assert [s.key for s in data.test if s.label == 1] == ["cut/0.png"]
    assert len(messages) == 1 and str(root / "loop") in messages[0]


# --weights <a folder>: one line saying it is a folder and that a state-dict file is wanted


def test_weights_folder_is_one_line_asking_for_a_state_dict_file(
    tiny_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(tiny_category), "--out", str(out), "--weights", str(tmp_path),
         "--backbone", "resnet18", "--device", "cpu", "--image-size", "32"]
    )  # fmt: skip
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{tmp_path} is a folder" in lines[0] and "state-dict FILE" in lines[0]
    assert "does not exist" not in lines[0]
    assert not (out / "checkpoint.pt").exists()
