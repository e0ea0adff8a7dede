"""Atomic writes (siamese_ad/io.py): umask, symlinks, failures leave the previous file whole."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import torch

from siamese_ad.checkpoint import read_checkpoint
from siamese_ad.cli import main
from siamese_ad.config import Config
from siamese_ad.io import SameFileError, atomic_torch_save, atomic_write, atomic_write_text

FULL_DISK = Path("/dev/full")  # Linux: every write to it fails with ENOSPC
needs_full_disk = pytest.mark.skipif(not FULL_DISK.exists(), reason="needs /dev/full")


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Sets the process umask for the test; the old one is restored after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_written_file_gets_0o666_less_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int
) -> None:
    umask(mask)
    old = tmp_path / "old.json"
    old.write_text("{}")
    old.chmod(0o600)
    for path in (tmp_path / "new.json", old):
        atomic_write_text(path, "{}")
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_symlink_stays_a_link_and_its_target_gets_the_content(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "checkpoint.pt"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "latest.pt"
    link.symlink_to(target)
    assert atomic_write(link, lambda fh: fh.write(b"new")) == target
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint.pt"]


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("previous")

    def half_then_fail(fh: IO[bytes]) -> None:
        fh.write(b"half of the new content")
        raise KeyError("a bug in the writer")

    with pytest.raises(KeyError):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [path]


@needs_full_disk
def test_a_full_disk_during_torch_save_is_an_oserror_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1}, path)

    def save_to_a_full_disk(fh: IO[bytes]) -> None:
        with FULL_DISK.open("wb") as full:  # torch's own error for a full disk: a RuntimeError
            torch.save({"epoch": 2, "weights": torch.zeros(100_000)}, full)

    with pytest.raises(OSError) as caught:
        atomic_write(path, save_to_a_full_disk)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_writing_onto_an_input_is_refused_and_leaves_it(tmp_path: Path) -> None:
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(b"model")
    (tmp_path / "hard.pt").hardlink_to(source)
    (tmp_path / "soft.pt").symlink_to(source)
    for out in (source, tmp_path / "hard.pt", tmp_path / "soft.pt"):
        with pytest.raises(SameFileError, match="which this command reads"):
            atomic_write_text(out, "graph", inputs=[source])
    assert source.read_bytes() == b"model"
    atomic_write_text(tmp_path / "model.onnx", "graph", inputs=[source])  # another file is fine


@needs_full_disk
def test_train_on_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path,
    tiny_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "tiny.yaml"
    tiny_config.to_yaml(config)
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_full_from_the_second_save(obj: object, fh: IO[bytes]) -> None:
        saves.append(obj)
        if len(saves) < 2:
            return real_save(obj, fh)
        with FULL_DISK.open("wb") as full:
            real_save(obj, full)

    monkeypatch.setattr(torch, "save", disk_full_from_the_second_save)
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        f"siamese-ad train: error: No space left on device: {out / 'checkpoint.pt'}"
    )
    assert not any("Traceback" in line for line in lines)
    state = read_checkpoint(out)["state"]  # the stage-1 epoch saved before the disk filled
    assert (state["stage"], state["epoch"]) == ("stage1", 1)
    assert not list(out.glob(".*.tmp"))
