"""CPAM: the channel-positional attention module inserted before every student decoder stage.

METHOD.md section 2, eq. 3-5. Two attention branches over an input X (B, C, H, W), N = H * W:

- channel attention (eq. 3): X as (B, C, N), M_c = softmax(X X^T) (C x C),
  F'_c = gamma_c * (M_c X) + X;
- positional attention (eq. 4, DANet's position attention module): Q, K = 1x1 convs
  C -> max(C // reduction, 1), V = 1x1 conv C -> C, M_p = softmax(Q^T K) (N x N),
  F'_p = gamma_p * (V M_p^T) + X.

Both softmaxes are over dot products without a temperature, as eq. 3-4 and DANet write them. They
are numerically safe at any magnitude because every softmax here subtracts the row maximum before
exponentiating (large inputs make the attention sharp, never NaN). DANet's channel module feeds
`rowmax - energy` to the softmax, which flips the sign of the similarities; we do not.

The positional attention runs in one of two forms with the same mathematics. In eager inference
on a CPU at 256 or more positions (no autograd; not traced, scripted, compiled or exported) it is
`cpu_attention`: float32 logits, softmax and value product in blocks of rows that stay in a core's
cache, two to three times faster than torch's `scaled_dot_product_attention` at 32 x 32 positions
on this project's CPU, with the same error (docs/performance.md, "CPAM's attention on CPU").
Everywhere else, training included, it is torch's `scaled_dot_product_attention`.

gamma_c and gamma_p are learnable scalars initialised to 0, so both branches start as X.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese_ad.device import capturing_graph

FUSIONS = ("gated", "literal")


def channel_attention(x: Tensor) -> Tensor:
    """M_c X of eq. 3, before the residual.

    Args:
        x: (B, C, H, W) input.

    Returns:
        (B, C, H, W), each channel a softmax(X X^T)-weighted mix of all channels.
    """
    b, c, h, w = x.shape
    # A channels_last x reshapes to a strided view, which torch's attention on a CPU takes a slow
    # path for (2x slower at 8 x 8, same result bit for bit; docs/performance.md): copy it first.
    flat = x.reshape(b, c, h * w).contiguous()
    mixed = F.scaled_dot_product_attention(flat, flat, flat, scale=1.0)
    return mixed.reshape(b, c, h, w)


def position_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """V M_p^T of eq. 4, before the residual, with M_p = softmax(Q^T K) over positions.

    Args:
        query: (B, C', H, W) query projection Q.
        key: (B, C', H, W) key projection K.
        value: (B, C, H, W) value projection V.

    Returns:
        (B, C, H, W), each position a softmax-weighted mix of the values at all positions.
    """
    b, c, h, w = value.shape
    q = query.flatten(2).transpose(1, 2)  # (B, N, C')
    k = key.flatten(2).transpose(1, 2)  # (B, N, C')
    v = value.flatten(2).transpose(1, 2)  # (B, N, C)
    if _blocked_pays(value):
        mixed = cpu_attention(q, k, v)
    else:
        mixed = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, N, C)
    return mixed.transpose(1, 2).reshape(b, c, h, w)


# Below this many positions torch's attention is as fast (benchmarks/cpam_attention.py).
_MIN_POSITIONS = 256


def _blocked_pays(value: Tensor) -> bool:
    """Whether `cpu_attention` runs for a (B, C, H, W) `value`: eager CPU inference at
    _MIN_POSITIONS or more positions (H * W). Not under autograd (training keeps torch's kernel
    and its backward), and not in a captured graph (`capturing_graph`)."""
    return (
        value.device.type == "cpu"
        and value.shape[-2] * value.shape[-1] >= _MIN_POSITIONS
        and not (torch.is_grad_enabled() and value.requires_grad)
        and not capturing_graph()
    )


# Bytes of float32 logits per block of rows: a block's logits, softmax and value product stay in a
# core's L2 cache (1 MiB on Zen 4), where the whole (N, N) matrix at N = 1024 (4 MiB) would not.
_BLOCK_BYTES = 1 << 19


def cpu_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """softmax(Q K^T) V with float32 logits, probabilities and products; output in V's dtype.

    For inference (no autograd): the rows are taken in blocks whose logits fit a core's L2 cache.

    Args:
        query: (B, N, C') queries.
        key: (B, N, C') keys.
        value: (B, N, C) values.

    Returns:
        (B, N, C) attended values.
    """
    with torch.no_grad(), torch.autocast(device_type="cpu", enabled=False):
        q, k_t, v = query.float(), key.float().transpose(1, 2), value.float()
        out = torch.empty(v.shape, dtype=torch.float32, device=v.device)
        n = q.shape[1]
        rows = max(_BLOCK_BYTES // (4 * n), 1)
        for i in range(q.shape[0]):
            for start in range(0, n, rows):
                block = torch.softmax(torch.mm(q[i, start : start + rows], k_t[i]), dim=-1)
                torch.mm(block, v[i], out=out[i, start : start + rows])
        return out.to(value.dtype)


class CPAM(nn.Module):
    """Channel-positional attention module (eq. 3-5); keeps the input shape (B, C, H, W).

    Fusion of the two branches:

    - "literal": out = V ⊙ F'_c ⊙ F'_p, eq. 5 as written, V = the positional value projection
      of X. Not the identity at init, and the triple product can grow like |X|^3.
    - "gated" (default): out = F'_c ⊙ (1 + tanh(F'_p - X)) = F'_c ⊙ (1 + tanh(gamma_p V M_p^T)).
      The positional branch becomes a multiplicative gate in (0, 2) centred on 1, so it rescales
      the channel-refined feature (the product of eq. 5) but can at most double it; V enters
      through the gate rather than as a third unbounded factor. To first order in the gammas it
      is X + gamma_c M_c X + gamma_p X ⊙ (V M_p^T). With gamma_c = gamma_p = 0 it returns
      exactly X, so inserting CPAM does not change a decoder at init. |out| is bounded by
      2 (|X| + |gamma_c| max_c |X|), since M_c is row-stochastic.

    As in DANet, the Q, K and V convolutions receive gradients once gamma_p is non-zero (after
    the first optimiser step); the gammas receive them from the start.

    Args:
        channels: C, channels of the input.
        fusion: "gated" or "literal".
        reduction: Q and K have max(C // reduction, 1) channels.
    """

    def __init__(self, channels: int, fusion: str = "gated", reduction: int = 8) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"CPAM: unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        if channels < 1 or reduction < 1:
            raise ValueError(f"CPAM: channels={channels} and reduction={reduction} must be >= 1")
        hidden = max(channels // reduction, 1)
        self.fusion = fusion
        self.query = nn.Conv2d(channels, hidden, kernel_size=1)
        self.key = nn.Conv2d(channels, hidden, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma_c = nn.Parameter(torch.zeros(1))
        self.gamma_p = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        refined_c = x + self.gamma_c * channel_attention(x)
        value = self.value(x)
        attended_p = position_attention(self.query(x), self.key(x), value)
        if self.fusion == "literal":
            return value * refined_c * (x + self.gamma_p * attended_p)
        return refined_c * (1.0 + torch.tanh(self.gamma_p * attended_p))

    def extra_repr(self) -> str:
        return f"fusion={self.fusion!r}"
