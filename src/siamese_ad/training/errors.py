"""Training-side errors, importable without torch (the CLI catches them on every path)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit; the message names the file and the fix."""
