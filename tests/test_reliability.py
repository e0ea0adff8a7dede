"""Issue 12: export never overwrites its input, batch sizes are checked, same-stem images keep
their own heat maps and masks, masks are thresholded, user-path errors are one line, and the
synthetic data folder never loses the user's files."""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import os
import shutil
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamese_ad.cli as cli
from siamese_ad.app.evaluate import evaluate
from siamese_ad.app.export import check_out_path
from siamese_ad.cli import main
from siamese_ad.config import Config, ConfigError
from siamese_ad.data.dataset import ImageSet
from siamese_ad.data.images import MASK_THRESHOLD, load_mask
from siamese_ad.data.mvtec import read_mvtec
from siamese_ad.data.sample import DataError, Sample
from siamese_ad.data.synthetic import MARKER, make_synthetic_category
from siamese_ad.device import select_device
from siamese_ad.reporting.heatmaps import PNG_THREADS, panel_name, save_pngs, write_panels
from siamese_ad.training.trainer import train

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_defect": 1, "size": 32, "defects": ("spot",)}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line a refused command prints."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# 1. export: --out never replaces the checkpoint, its metadata never lands on either file


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    """A run folder whose checkpoint.pt is a few known bytes (the refusal comes before loading)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"precious checkpoint")
    return run


def _outs(run: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (export arguments, text the error must hold)."""
    ckpt = run / "checkpoint.pt"
    (run / "link.onnx").symlink_to(ckpt)
    os.link(ckpt, run / "hard.pt")
    return {
        "same path": (["--checkpoint", str(ckpt), "--out", str(ckpt)], "--out"),
        "run folder": (
            ["--checkpoint", str(run), "--format", "torchscript", "--out", str(ckpt)],
            "--checkpoint itself",
        ),
        "relative spelling": (
            [
                "--checkpoint",
                str(ckpt),
                "--format",
                "torchscript",
                "--out",
                f"{run}/../run/x/../checkpoint.pt",
            ],
            "--checkpoint itself",
        ),
        "symlink": (["--checkpoint", str(ckpt), "--out", str(run / "link.onnx")], "itself"),
        "hard link": (
            ["--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(run / "hard.pt")],
            "itself",
        ),
        "json out": (["--checkpoint", str(ckpt), "--out", str(run / "m.json")], ".onnx"),
        "wrong suffix": (["--checkpoint", str(ckpt), "--out", str(run / "model.pt")], ".onnx"),
        "folder": (["--checkpoint", str(ckpt), "--out", str(run)], "is a folder"),
    }


@pytest.mark.parametrize(
    "case",
    ["same path", "run folder", "relative spelling", "symlink", "hard link", "json out",
     "wrong suffix", "folder"],
)  # fmt: skip
def test_export_refuses_an_out_that_would_overwrite_or_mislead(
    fake_run: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = _outs(fake_run)[case]
    before = sorted(p.name for p in fake_run.iterdir())
    assert main(["export", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("siamese-ad export: error: --out") and expected in line
    assert "choose another file" in line
    assert (fake_run / "checkpoint.pt").read_bytes() == b"precious checkpoint"
    assert sorted(p.name for p in fake_run.iterdir()) == before  # no .json, no temporary file


def test_export_refuses_metadata_over_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.json"  # an odd name, but the metadata of model.onnx would be it
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"metadata .* --checkpoint"):
        check_out_path(ckpt, tmp_path / "model.onnx", "onnx")


def test_export_accepts_a_new_file_with_the_format_suffix(fake_run: Path) -> None:
    check_out_path(fake_run, fake_run / "model.onnx", "onnx")
    check_out_path(fake_run / "checkpoint.pt", fake_run / "model.pt", "torchscript")
    check_out_path(fake_run, fake_run / "model.ts", "torchscript")


# 2. batch sizes


@pytest.mark.parametrize("size", [0, 1])
def test_train_batch_size_below_2_is_a_config_error(size: int) -> None:
    cfg = Config()
    cfg.data.root, cfg.train.batch_size = "unused", size
    with pytest.raises(ConfigError, match=r"train\.batch_size.*BatchNorm needs two images"):
        cfg.validate()
    cfg.train.batch_size = 2
    cfg.validate()


def test_train_batch_size_1_exits_2_before_training(
    tiny_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        ["train", "--data", str(tiny_category), "--out", str(out), "--batch-size", "1",
         "--weights", "none", "--backbone", "resnet18", "--device", "cpu"]
    )  # fmt: skip
    assert code == 2
    assert "train.batch_size=1" in _error_line(capsys)
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_inference_batch_size_must_be_a_positive_whole_number(
    command: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "--checkpoint", str(tmp_path), "--batch-size", value]
    if command == "predict":
        args += [str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size" in err and "Traceback" not in err


# 3. same-stem images: their own heat maps, their own masks


def _names() -> list[tuple[str, str]]:
    """Every (defect, file name) pair over a small alphabet rich in separators and escapes."""
    parts = ["".join(p) for n in (1, 2, 3) for p in itertools.product("a_+~.", repeat=n)]
    return [(d, f) for d in parts[:40] for f in parts]


def test_panel_names_are_unique_per_defect_and_file_name() -> None:
    pairs = _names()
    names = {panel_name(d, Path(f)) for d, f in pairs}
    assert len(names) == len(pairs)
    assert panel_name("a_b", Path("c.png")) != panel_name("a", Path("b_c.png"))
    assert panel_name("good", Path("000.png")) != panel_name("good", Path("000.jpg"))
    assert all("/" not in n and n.endswith(".png") for n in names)


def test_concurrent_writes_of_one_path_do_not_collide(tmp_path: Path) -> None:
    pictures = [np.full((16, 16), i, np.uint8) for i in range(24)]
    barrier = threading.Barrier(min(2, PNG_THREADS), timeout=2)

    def render(picture: np.ndarray) -> np.ndarray:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()  # two threads write the same path at the same moment
        return picture

    target = tmp_path / "same.png"
    save_pngs((target, lambda p=p: render(p)) for p in pictures)
    value = np.asarray(Image.open(target))
    assert any(np.array_equal(value, p) for p in pictures)
    assert [p.name for p in tmp_path.iterdir()] == ["same.png"]  # no temporary file left


def test_write_panels_gives_same_stem_images_their_own_files(tmp_path: Path) -> None:
    samples = [
        Sample(Path("d/good/000.png"), 0),
        Sample(Path("d/good/000.jpg"), 0),
        Sample(Path("d/a_b/c.png"), 1, "a_b"),
        Sample(Path("d/a/b_c.png"), 1, "a"),
    ]
    n, size = len(samples), 8
    images = ImageSet(
        samples,
        torch.zeros(n, 3, size, size, dtype=torch.uint8),
        torch.zeros(n, size, size, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
    )
    maps = np.stack([np.full((size, size), float(i)) for i in range(n)])
    maps[0, 0, 0] = 10.0  # a colour range wide enough to tell the maps apart
    paths = write_panels(tmp_path, images, maps)
    assert len(set(paths)) == n and all(p.is_file() for p in paths)
    heat = [np.asarray(Image.open(p))[:, 2 * size : 3 * size] for p in paths]
    assert not any(np.array_equal(heat[i], heat[j]) for i, j in itertools.combinations(range(n), 2))


def _copy(category: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(category, tmp_path / category.name))


def _as_jpg(png: Path) -> Path:
    jpg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpg, quality=95)
    return jpg


def test_mask_shared_by_two_same_stem_defect_images_is_ambiguous(
    tiny_category: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_category, tmp_path)
    png = root / "test" / "spot" / "000.png"
    jpg = _as_jpg(png)
    with pytest.raises(DataError, match="ambiguous mask") as err:
        read_mvtec(root)
    assert str(png) in str(err.value) and str(jpg) in str(err.value)


def test_same_stem_good_images_are_both_read_without_masks(
    tiny_category: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_category, tmp_path)
    jpg = _as_jpg(root / "test" / "good" / "000.png")
    test = read_mvtec(root).test
    goods = [s for s in test if s.defect == "good"]
    assert jpg in [s.image for s in goods] and all(s.mask is None for s in goods)
    defects = [s for s in test if s.label == 1]
    assert all(s.mask is not None and s.mask.stem == f"{s.image.stem}_mask" for s in defects)


@pytest.fixture(scope="module")
def same_stem_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_category: Path,
    make_config: Callable[[Path], Config],
) -> tuple[Path, Path]:
    """(category with test/good/000.png and 000.jpg, a tiny checkpoint trained on it)."""
    tmp = tmp_path_factory.mktemp("same_stem")
    root = _copy(tiny_category, tmp)
    _as_jpg(root / "test" / "good" / "000.png")
    return root, train(make_config(root), tmp / "model")


@pytest.mark.parametrize("heatmaps", [True, False])
def test_evaluate_scores_same_stem_images_separately(
    same_stem_run: tuple[Path, Path], tmp_path: Path, heatmaps: bool
) -> None:
    root, ckpt = same_stem_run
    evaluate(ckpt, tmp_path, device="cpu", heatmaps=heatmaps)
    with (tmp_path / "scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    images = [Path(r["image"]) for r in rows]
    good = root / "test" / "good"
    assert good / "000.png" in images and good / "000.jpg" in images
    assert len(set(images)) == len(images) == len(read_mvtec(root).test)
    panels = sorted((tmp_path / "heatmaps").glob("*.png")) if heatmaps else []
    assert len(panels) == (len(images) if heatmaps else 0)


# 4. masks are thresholded


def _mask_file(tmp_path: Path, values: np.ndarray, mode: str | None = None) -> Path:
    path = tmp_path / "m.png"
    Image.fromarray(values, mode).save(path) if mode else Image.fromarray(values).save(path)
    return path


def _load(path: Path, size: int) -> np.ndarray:
    return load_mask(path, size, (size, size), path.with_name("img.png")).numpy()


def test_mask_background_not_exactly_0_is_not_defect_and_warns(tmp_path: Path) -> None:
    values = np.full((16, 16), 3, np.uint8)  # a JPEG-ish background
    values[4:8, 4:8] = 250
    values[8, 8] = MASK_THRESHOLD  # exactly at the threshold: normal
    path = _mask_file(tmp_path, values)
    with pytest.warns(UserWarning, match=str(path)):
        out = _load(path, 16)
    np.testing.assert_array_equal(out, values > MASK_THRESHOLD)
    assert int(out.sum()) == 16


@pytest.mark.parametrize("high", [1, 255])
def test_binary_masks_read_exactly_and_quietly(tmp_path: Path, high: int) -> None:
    values = np.zeros((16, 16), np.uint8)
    values[2:5, 3:9] = high
    path = _mask_file(tmp_path, values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _load(path, 16)
    np.testing.assert_array_equal(out, values > 0)


def test_colour_mask_counts_its_brightest_channel(tmp_path: Path) -> None:
    values = np.zeros((16, 16, 3), np.uint8)
    values[4:8, 4:8, 0] = 255  # pure red: grey 76, under the threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _load(_mask_file(tmp_path, values), 16)
    np.testing.assert_array_equal(out, values[..., 0] > 0)


# 5. the CLI's error boundary


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "Permission denied", "/data/locked"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/file/sub"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "/data/folder"),
        FileExistsError(errno.EEXIST, "File exists", "/data/there"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone"),
        OSError(errno.ENOSPC, "No space left on device", "/data/full"),
    ],
)
def test_user_path_errors_are_one_line_exit_2(
    error: OSError, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "run", fail)
    assert main(["synth-preview", "--data", "x", "--out", "y.png"]) == 2
    line = _error_line(capsys)
    assert line == f"siamese-ad synth-preview: error: {error.strerror}: {error.filename}"


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), TypeError("bug")])
def test_other_errors_keep_their_traceback(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "run", fail)
    with pytest.raises(type(error)):
        main(["synth-preview", "--data", "x", "--out", "y.png"])


def test_demo_out_under_a_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["demo", "--out", str(blocker / "demo"), "--device", "cpu"]) == 2
    line = _error_line(capsys)
    assert line.startswith("siamese-ad demo: error: ") and str(blocker) in line


@pytest.mark.parametrize("name", ["gpu0", "mps", "cuda:99", "meta", "CPU"])
def test_unavailable_or_unknown_device_is_a_clear_value_error(name: str) -> None:
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if name == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    with pytest.raises(ValueError, match=f"{name!r}.*--device|--device.*{name!r}"):
        select_device(name)


def test_evaluate_on_an_unknown_device_exits_2(
    same_stem_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ckpt = same_stem_run
    args = ["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--device", "gpu0"]
    assert main(args) == 2
    assert "'gpu0'" in _error_line(capsys)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export", "demo"])
def test_ctrl_c_speaks_of_resume_only_for_train(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    args = {
        "train": ["train", "--out", "o"],
        "evaluate": ["evaluate", "--checkpoint", "c"],
        "predict": ["predict", "x.png", "--checkpoint", "c", "--out", "o"],
        "export": ["export", "--checkpoint", "c", "--out", "m.onnx"],
        "demo": ["demo"],
    }[command]
    assert main(args) == 130
    line = _error_line(capsys)
    assert line.startswith("interrupted")
    assert ("--resume" in line) == (command == "train")


# 6. the synthetic data folder keeps the user's files


def test_rewrite_refuses_a_folder_with_a_user_file_and_deletes_nothing(tmp_path: Path) -> None:
    root = make_synthetic_category(tmp_path / "data", **SMALL)
    mine = [root / "test" / "good" / "mine.png", root / "notes.txt", root / "extra" / "a.txt"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("keep me")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="did not write") as err:
        make_synthetic_category(root, **{**SMALL, "n_train": 4})
    assert "notes.txt" in str(err.value)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_rewrite_refuses_a_link_and_leaves_its_target(tmp_path: Path) -> None:
    root = make_synthetic_category(tmp_path / "data", **SMALL)
    target = tmp_path / "precious.png"
    target.write_bytes(b"user picture")
    link = root / "train" / "good" / "000.png"  # a name the generator writes
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(DataError, match=r"000\.png"):
        make_synthetic_category(root, **SMALL)
    assert link.is_symlink() and target.read_bytes() == b"user picture"


def test_rewrite_of_a_cut_short_category_succeeds(tmp_path: Path) -> None:
    root = make_synthetic_category(tmp_path / "data", **SMALL)
    bigger = {**SMALL, "n_train": 6, "defects": ("scratch",)}
    (root / "train" / "good" / "001.png").unlink()  # as if the writer had stopped early
    make_synthetic_category(root, **bigger)
    assert len(list((root / "train" / "good").glob("*.png"))) == 6
    assert sorted(p.name for p in (root / "test").iterdir()) == ["good", "scratch"]
    assert (root / MARKER).is_file()


def test_demo_refuses_a_data_folder_with_user_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_synthetic_category(tmp_path / "demo" / "data", **SMALL)
    mine = data / "test" / "spot" / "my_photo.jpg"
    mine.write_bytes(b"mine")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 2
    assert "my_photo.jpg" in _error_line(capsys)
    assert mine.read_bytes() == b"mine" and not (tmp_path / "demo" / "model").exists()


def test_demo_trains_again_over_the_model_of_another_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from siamese_ad.app.demo import run_demo
    from siamese_ad.checkpoint import read_checkpoint
    from siamese_ad.io import atomic_torch_save

    out = tmp_path / "demo"
    run_demo(out, epochs=1, device="cpu")
    ckpt = out / "model" / "checkpoint.pt"
    current = read_checkpoint(ckpt)
    stamp = ckpt.stat().st_mtime_ns
    run_demo(out, epochs=1, device="cpu")  # the same model: reused, not trained again
    assert ckpt.stat().st_mtime_ns == stamp
    old = {**current, "signature": {**current["signature"], "teacher_stages": [2, 4, 5]}}
    atomic_torch_save(old, ckpt)  # as an earlier version's preset saved it
    run_demo(out, epochs=1, device="cpu")
    assert "training it again" in capsys.readouterr().out
    assert read_checkpoint(ckpt)["signature"] == current["signature"]
