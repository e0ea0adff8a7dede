"""The Python API: `from siamese_ad import Config, train, Detector`, and Detector.predict."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyRun
from PIL import Image

from siamese_ad.config import Config
from siamese_ad.data.dataset import load_images
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.evaluation.inference import Detector, Prediction

README = Path(__file__).parents[1] / "README.md"


def readme_example() -> str:
    """The code block of the README's "Python API" section, unindented."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n\n((?: {4}.*\n|\n)+)", section)
    assert block is not None, "the Python API section has no code block"
    return "\n".join(line[4:] for line in block.group(1).splitlines()).strip() + "\n"


def test_import_is_light_and_names_the_api() -> None:
    script = (
        "import sys, siamese_ad\n"
        "assert 'torch' not in sys.modules, 'import siamese_ad imported torch'\n"
        "from siamese_ad import Config, Detector, train\n"
        "from siamese_ad.config import Config as C\n"
        "from siamese_ad.evaluation.inference import Detector as D\n"
        "from siamese_ad.training.trainer import train as t\n"
        "assert (Config, Detector, train) == (C, D, t)\n"
        "assert sorted(siamese_ad.__all__) == ['Config', 'Detector', 'train']\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_readme_example_runs_on_the_tiny_category(
    tiny_category: Path, make_config, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    make_config(tiny_category).to_yaml("bottle.yaml")
    Path("new").mkdir()
    shutil.copy(tiny_category / "test" / "good" / "000.png", "new/001.png")
    shutil.copy(tiny_category / "test" / "spot" / "000.png", "new/002.png")
    exec(compile(readme_example(), str(README), "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    printed = [line.split() for line in lines[-2:]]  # after training's epoch lines
    expected = Detector.load("runs/bottle", "cpu").predict(["new/001.png", "new/002.png"])
    assert len(expected) == 2 and Path("runs/bottle/checkpoint.pt").is_file()
    for (score, normalised, anomalous), prediction in zip(printed, expected, strict=True):
        assert float(score) == pytest.approx(prediction.score, rel=1e-5)
        assert 0.0 < float(normalised) < 1.0 and anomalous in ("True", "False")
        assert (anomalous == "True") == (float(normalised) > 0.5)


@pytest.fixture(scope="module")
def detector(tiny_run: TinyRun) -> Detector:
    return Detector.load(tiny_run.run, device="cpu")


def _test_images(run: TinyRun) -> list[Path]:
    return sorted((run.data / "test").rglob("*.png"))


def test_predictions_match_the_scorer_and_follow_the_thresholds(
    detector: Detector, tiny_run: TinyRun
) -> None:
    paths = _test_images(tiny_run)
    predictions = detector.predict(paths, batch_size=3)
    size = detector.cfg.data.image_size
    reference = detector.run(load_images([Sample(p, 0) for p in paths], size).images)
    thresholds = detector.thresholds
    assert thresholds is not None and len(predictions) == len(paths)
    for i, p in enumerate(predictions):
        assert isinstance(p, Prediction) and isinstance(p.score, float)
        assert p.score == pytest.approx(float(reference.scores[i]), rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(p.anomaly_map, reference.maps[i], rtol=1e-5, atol=1e-6)
        assert p.anomaly_map.dtype == np.float32 and p.mask.dtype == bool
        assert p.anomalous == (p.score > thresholds.image)
        assert (p.normalised_score > 0.5) == p.anomalous and 0 < p.normalised_score < 1
        assert np.array_equal(p.mask, p.anomaly_map > thresholds.pixel)


def test_paths_pil_images_and_arrays_give_one_score_and_maps_at_their_own_size(
    detector: Detector, tiny_run: TinyRun, tmp_path: Path
) -> None:
    picture = np.asarray(Image.open(_test_images(tiny_run)[0]).convert("RGB").resize((56, 40)))
    path = tmp_path / "wide.png"
    Image.fromarray(picture).save(path)
    grey = picture[:, :, 1]
    inputs = [
        str(path),
        path,
        Image.open(path),
        picture,
        picture.astype(np.float64) / 255.0,
        grey,
        np.repeat(grey[:, :, None], 3, axis=2),
    ]
    predictions = detector.predict(inputs, batch_size=4)
    assert all(p.anomaly_map.shape == p.mask.shape == (40, 56) for p in predictions)
    colour, grey_scores = [p.score for p in predictions[:5]], [p.score for p in predictions[5:]]
    assert colour == pytest.approx([colour[0]] * 5, rel=1e-5)
    assert grey_scores[0] == pytest.approx(grey_scores[1], rel=1e-5)
    (single,) = detector.predict(path)  # one image, not its characters
    assert single.score == pytest.approx(colour[0], rel=1e-5)


def test_predict_iter_reads_a_generator_one_batch_at_a_time(
    detector: Detector, tiny_run: TinyRun
) -> None:
    paths = _test_images(tiny_run)
    pulled: list[Path] = []

    def stream() -> Iterator[Path]:
        for p in paths:
            pulled.append(p)
            yield p

    predictions = detector.predict_iter(stream(), batch_size=2)
    first = next(predictions)
    assert len(pulled) == 2  # the first batch only
    rest = list(predictions)
    assert len(pulled) == len(paths) == 1 + len(rest)
    together = detector.predict(paths, batch_size=len(paths))
    got = [first.score] + [p.score for p in rest]
    assert got == pytest.approx([p.score for p in together], rel=1e-5)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((8, 8, 3), 1.5), r"\[0, 1\]"),
        (np.full((8, 8), np.nan), r"\[0, 1\]"),
        (np.zeros((8, 8, 4), np.uint8), r"\(H, W\) or \(H, W, 3\)"),
        (np.zeros((8, 8), np.int32), "uint8 or float"),
        (torch.zeros(3, 8, 8), "path, a PIL image or a NumPy array"),
    ],
)
def test_unreadable_inputs_are_refused_naming_what_is_accepted(
    detector: Detector, image: object, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        detector.predict([image])


def test_a_batch_size_below_1_is_refused(detector: Detector, tiny_run: TinyRun) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        detector.predict(_test_images(tiny_run), batch_size=0)


def test_config_train_and_detector_are_the_package_api() -> None:
    import siamese_ad

    assert siamese_ad.Config is Config and siamese_ad.Detector is Detector
    with pytest.raises(AttributeError, match="no attribute 'evaluate'"):
        _ = siamese_ad.evaluate
