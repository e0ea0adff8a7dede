"""Where tensors run: choosing the device, bf16 autocast, moving uint8 images onto it, and
whether the code runs eagerly or is being captured into a graph.

Shared by training and inference; imports nothing of siamese_ad.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def select_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; otherwise the named device: cpu, cuda[:N] or mps.

    Raises:
        ValueError: an unknown device name, or a device this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "use --device auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; {hint}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1}); {hint}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available; use --device cpu")
    return device


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the device when asked for, else a no-op."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float in [0, 1] on `device`, channels_last when asked for."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def capturing_graph() -> bool:
    """True while torch traces, scripts, compiles or exports the running code.

    Eager-only CPU shortcuts (Python loops over a batch or over blocks of rows) check it: in a
    captured graph such a loop would be frozen at the batch size it was captured with.
    """
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
    )
