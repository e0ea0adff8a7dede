"""Data-parallel training across processes started by torchrun (gloo on CPU, NCCL on GPU).

Every rank draws the same global batch from the same seeded generator (indices, rotation angles,
anomaly-pool draws), keeps its own contiguous slice (`shard`), and scales its loss by
n_local * world / n_global, so the averaged gradient is exactly the gradient of the
single-process, mean-reduced loss. BatchNorm in the trainable parts becomes `SyncBatchNorm2d`,
whose training statistics are taken over the global batch with differentiable all-reduces; the
forward and backward passes then match one process up to floating-point summation order. Only
rank 0 writes checkpoints, configs and logs. Outside torchrun (WORLD_SIZE unset or 1) every
helper is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (or without distribution): the process that writes files and logs."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Joins the torchrun process group named by the RANK/WORLD_SIZE/MASTER_* env variables.

    Args:
        device: the device asked for; under torchrun a CUDA device becomes cuda:LOCAL_RANK.

    Returns:
        The device this rank trains on.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shard(batch: Tensor) -> Tensor:
    """This rank's contiguous slice of a global batch along dim 0 (sizes differ by at most 1)."""
    if world_size() == 1:
        return batch
    return batch.tensor_split(world_size())[rank()]


def loss_weight(n_local: int, n_global: int) -> float:
    """n_local * world / n_global: scales a rank's mean loss so averaged gradients are exact."""
    return n_local * world_size() / n_global


def average_gradients(model: nn.Module) -> None:
    """All-reduces the gradients of the trainable parameters to their mean over ranks."""
    if world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def mean_over_ranks(value: Tensor) -> float:
    """The mean of a scalar over ranks (for logging a weighted loss: the global loss)."""
    value = value.detach().float()
    if world_size() == 1:
        return float(value)
    value = value.reshape(1).clone()
    dist.all_reduce(value)
    return float(value) / world_size()


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks (CPU and GPU).

    Mean and biased variance are two-pass, each a differentiable all-reduce of per-rank sums; the
    running variance uses the unbiased global variance, as BatchNorm2d does. In eval mode or
    without distribution it is BatchNorm2d (same parameters and buffers, same state-dict keys).
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if not (self.training and world_size() > 1):
            return super().forward(x)
        xf = x.float()
        count = torch.tensor([xf.numel() // xf.shape[1]], dtype=torch.float32, device=x.device)
        dist.all_reduce(count)
        n = float(count)
        mean = dist_fn.all_reduce(xf.sum(dim=(0, 2, 3))) / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = dist_fn.all_reduce(centred.square().sum(dim=(0, 2, 3))) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
                self.num_batches_tracked.add_(1)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turns every BatchNorm2d under `module` into SyncBatchNorm2d in place, state kept."""
    for child in module.modules():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = SyncBatchNorm2d
    return module


def prepare_model(model: nn.Module) -> nn.Module:
    """Under distribution: syncs BatchNorm of the trainable parts (bottleneck, student) and
    gives every rank rank 0's weights and buffers (a resumed or seeded build has them already)."""
    if world_size() == 1:
        return model
    for part in (model.bottleneck, model.student):
        sync_batchnorm(part)
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)
    return model
