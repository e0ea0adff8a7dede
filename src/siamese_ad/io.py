"""Writing output files atomically and durably; every file siamese-ad writes goes through here.

A file is written to a temporary file in its own folder, created with mode 0o666 so that the
umask applies as to any new file; flushed and fsynced; renamed over the target; then the folder
is fsynced so that the rename survives a crash. A target that is a symlink is written through:
the link stays and its target gets the new content. On any failure the temporary file is
removed and the previous file is left as it was; an OSError (a full disk, say) names the path.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

Writer = Callable[[IO[bytes]], object]


class SameFileError(ValueError):
    """An output path is one of the files the command reads."""


def atomic_write(path: str | Path, writer: Writer, inputs: Iterable[str | Path] = ()) -> Path:
    """Calls writer(binary file) on a temporary file beside `path`, then renames it over `path`.

    Args:
        path: the file to write; for a symlink, the file it points to is written.
        writer: writes the content to the open file it is given.
        inputs: files being read, which `path` must not be.

    Returns:
        The file written (the link's target when `path` is a symlink).

    Raises:
        SameFileError: `path` is one of `inputs`.
        OSError: writing failed (disk full, permission, ...); the error names `path`.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    _refuse_inputs(path, target, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with open(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        named = _os_error_naming(err, path, tmp)
        if named is None:
            raise
        raise named from err
    _fsync_folder(target.parent)
    return target


def atomic_write_bytes(path: str | Path, data: bytes, inputs: Iterable[str | Path] = ()) -> Path:
    """Writes `data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), inputs)


def atomic_write_text(path: str | Path, text: str, inputs: Iterable[str | Path] = ()) -> Path:
    """Writes `text` as UTF-8 to `path` atomically (see `atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), inputs)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save(obj) to `path` atomically (see `atomic_write`); torch is imported on call, so
    this module stays importable without it."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _refuse_inputs(path: Path, target: Path, inputs: Iterable[str | Path]) -> None:
    if not target.exists():
        return
    for source in inputs:
        if Path(source).exists() and os.path.samefile(source, target):
            raise SameFileError(
                f"{path} is {source}, which this command reads; write to another file"
            )


def _os_error_naming(err: BaseException, path: Path, tmp: Path) -> OSError | None:
    """The OSError behind `err` (itself, or its cause or context: torch wraps a full disk in a
    RuntimeError), naming `path` where it named no file or the temporary one; None when `err`
    is that OSError already naming another file, or when no OSError is behind it."""
    cause: BaseException | None = err
    seen = set()
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, OSError) or cause.errno is None:
        return None
    if cause.filename not in (None, str(tmp), tmp):
        return None if cause is err else cause
    return OSError(cause.errno, cause.strerror, str(path))


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot sync a folder; the file itself is synced
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
