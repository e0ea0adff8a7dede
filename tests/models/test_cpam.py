"""Tests for CPAM: shapes, identity at init, gradients, stability and eq. 3-5 by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from siamese_ad.models import cpam
from siamese_ad.models.cpam import CPAM, channel_attention


def _input(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _set_gammas(module: CPAM, gamma_c: float, gamma_p: float) -> None:
    with torch.no_grad():
        module.gamma_c.fill_(gamma_c)
        module.gamma_p.fill_(gamma_p)


def _weighted_sum(out: torch.Tensor) -> torch.Tensor:
    """A loss without symmetries that could cancel gradients."""
    return (out * _input(tuple(out.shape), seed=99)).sum()


@pytest.mark.parametrize("fusion", ["gated", "literal"])
@pytest.mark.parametrize(("channels", "height", "width"), [(3, 4, 4), (8, 5, 3), (16, 1, 1)])
def test_shape_kept(fusion: str, channels: int, height: int, width: int) -> None:
    module = CPAM(channels, fusion)
    _set_gammas(module, 0.5, 0.5)
    x = _input((2, channels, height, width))
    assert module(x).shape == x.shape
    assert module.query.out_channels == max(channels // 8, 1)


def test_gated_is_identity_at_init() -> None:
    torch.manual_seed(0)
    module = CPAM(12)
    x = _input((2, 12, 6, 5))
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("fusion", ["gated", "literal"])
def test_nonzero_gammas_change_output(fusion: str) -> None:
    torch.manual_seed(0)
    module = CPAM(12, fusion)
    x = _input((2, 12, 6, 5))
    before = module(x)
    _set_gammas(module, 0.3, 0.3)
    after = module(x)
    assert not torch.allclose(before, after)
    if fusion == "gated":
        assert (after - x).abs().max() > 1e-3


@pytest.mark.parametrize("fusion", ["gated", "literal"])
def test_gradients_reach_every_parameter(fusion: str) -> None:
    torch.manual_seed(0)
    module = CPAM(16, fusion)
    x = _input((2, 16, 4, 4))
    _weighted_sum(module(x)).backward()
    for gamma in (module.gamma_c, module.gamma_p):
        assert gamma.grad is not None and gamma.grad.abs().item() > 0
    module.zero_grad()
    _set_gammas(module, 0.2, 0.2)  # as after a first optimiser step
    _weighted_sum(module(x)).backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_gated_stable_on_large_inputs() -> None:
    torch.manual_seed(0)
    module = CPAM(16)
    _set_gammas(module, 1.0, 1.0)
    x = _input((2, 16, 8, 8), scale=1e3).requires_grad_()
    out = module(x)
    assert torch.isfinite(out).all()
    # Row-stochastic M_c and a gate in (0, 2): |out| <= 2 (|X| + |gamma_c| max |X|).
    assert out.abs().max() <= 2 * (2 * x.abs().max()) + 1e-3
    _weighted_sum(out).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_cpam(
    x: list[list[float]],
    wq: list[float],
    bq: float,
    wk: list[float],
    bk: float,
    wv: list[list[float]],
    bv: list[float],
    gc: float,
    gp: float,
) -> dict[str, list[list[float]]]:
    """Eq. 3-5 with Python loops; x is C lists of N values (one image, hidden channel 1)."""
    c, n = len(x), len(x[0])
    q = [sum(wq[j] * x[j][p] for j in range(c)) + bq for p in range(n)]
    k = [sum(wk[j] * x[j][p] for j in range(c)) + bk for p in range(n)]
    v = [[sum(wv[i][j] * x[j][p] for j in range(c)) + bv[i] for p in range(n)] for i in range(c)]
    energy_c = [[sum(x[i][p] * x[j][p] for p in range(n)) for j in range(c)] for i in range(c)]
    m_c = [_softmax(row) for row in energy_c]
    f_c = [
        [gc * sum(m_c[i][j] * x[j][p] for j in range(c)) + x[i][p] for p in range(n)]
        for i in range(c)
    ]
    m_p = [_softmax([q[a] * k[b] for b in range(n)]) for a in range(n)]
    att_p = [[sum(v[i][b] * m_p[a][b] for b in range(n)) for a in range(n)] for i in range(c)]
    f_p = [[gp * att_p[i][a] + x[i][a] for a in range(n)] for i in range(c)]
    literal = [[v[i][p] * f_c[i][p] * f_p[i][p] for p in range(n)] for i in range(c)]
    gated = [[f_c[i][p] * (1 + math.tanh(gp * att_p[i][p])) for p in range(n)] for i in range(c)]
    return {"literal": literal, "gated": gated}


@pytest.mark.parametrize("fusion", ["literal", "gated"])
def test_matches_hand_computation(fusion: str) -> None:
    x_rows = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]  # C = 2, H = 1, W = 3
    wq, bq, wk, bk = [1.0, -0.5], 0.1, [0.3, 0.8], -0.2
    wv, bv = [[1.0, 0.5], [-0.25, 2.0]], [0.5, -0.5]
    gc, gp = 0.3, 0.7
    module = CPAM(2, fusion)
    with torch.no_grad():
        module.query.weight.copy_(torch.tensor(wq).view(1, 2, 1, 1))
        module.query.bias.fill_(bq)
        module.key.weight.copy_(torch.tensor(wk).view(1, 2, 1, 1))
        module.key.bias.fill_(bk)
        module.value.weight.copy_(torch.tensor(wv).view(2, 2, 1, 1))
        module.value.bias.copy_(torch.tensor(bv))
    _set_gammas(module, gc, gp)
    out = module(torch.tensor(x_rows).view(1, 2, 1, 3))
    expected = _hand_cpam(x_rows, wq, bq, wk, bk, wv, bv, gc, gp)[fusion]
    assert torch.allclose(out.view(2, 3), torch.tensor(expected), atol=1e-5)


def test_deterministic() -> None:
    x = _input((2, 8, 4, 4))
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        module = CPAM(8)
        _set_gammas(module, 0.4, 0.4)
        outs.append(module(x))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(module(x), module(x))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="gated, literal"):
        CPAM(8, "sum")
    with pytest.raises(ValueError, match="must be >= 1"):
        CPAM(8, reduction=0)


def _qkv(batch: int, n: int, hidden: int, channels: int, scale: float = 1.0) -> list[torch.Tensor]:
    return [
        _input((batch, n, width), seed=seed, scale=scale)
        for seed, width in ((1, hidden), (2, hidden), (3, channels))
    ]


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T) V in float64."""
    q, k, v = q.double(), k.double(), v.double()
    return torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v


def test_cpu_attention_blocks_match_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(2, 37, 4, 6, scale=2.0)
    whole = cpam.cpu_attention(q, k, v)  # 37 rows fit one block
    # 3 rows of 37 logits per block: 13 blocks per image, the last one a single row.
    monkeypatch.setattr(cpam, "_BLOCK_BYTES", 3 * 37 * 4)
    blocked = cpam.cpu_attention(q, k, v)
    assert torch.allclose(blocked, whole, atol=1e-5)
    assert torch.allclose(blocked.double(), _reference(q, k, v), atol=1e-5)
    assert not torch.allclose(blocked, v, atol=1e-2)  # the attention does mix positions


def test_cpu_attention_as_exact_as_the_fused_kernel_under_bf16() -> None:
    q, k, v = (t.bfloat16() for t in _qkv(4, 256, 16, 32, scale=1.5))
    expected = _reference(q, k, v)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = cpam.cpu_attention(q, k, v)
        fused = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert ours.dtype == torch.bfloat16
    ours_error = (ours.double() - expected).abs().mean()
    fused_error = (fused.double() - expected).abs().mean()
    assert ours_error <= fused_error


def test_blocked_form_only_in_inference_at_many_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (autograd) and small maps take torch's attention; large maps in inference ours."""
    calls = []
    real = cpam.cpu_attention

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(args[0].shape[1])
        return real(*args)

    monkeypatch.setattr(cpam, "cpu_attention", counted)
    torch.manual_seed(0)
    module = CPAM(16)
    _set_gammas(module, 0.5, 0.5)
    large, small = _input((2, 16, 16, 16)), _input((2, 16, 8, 8))
    _weighted_sum(module(large)).backward()  # training: autograd through torch's kernel
    assert calls == [] and module.query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        module(small)
        assert calls == []
        module(large)
    assert calls == [256]


def test_traced_cpam_keeps_any_batch_size() -> None:
    """Tracing takes the fused kernel, not the blocked loop that would freeze the batch size."""
    torch.manual_seed(0)
    module = CPAM(16).eval()
    _set_gammas(module, 0.5, 0.5)
    with torch.no_grad():
        traced = torch.jit.trace(module, _input((2, 16, 5, 4)))
        x = _input((3, 16, 5, 4), seed=4)
        assert torch.allclose(traced(x), module(x), atol=1e-5)


def test_channel_attention_same_for_either_memory_format() -> None:
    """The channels_last input (as the student runs) is copied to one layout first: the
    result is the contiguous input's, bit for bit, and keeps the input's shape."""
    x = torch.randn(2, 16, 4, 5, generator=torch.Generator().manual_seed(0))
    plain = channel_attention(x)
    strided = channel_attention(x.contiguous(memory_format=torch.channels_last))
    assert strided.shape == x.shape and torch.equal(plain, strided)
    reference = torch.softmax(torch.einsum("bcn,bdn->bcd", x.flatten(2), x.flatten(2)), -1)
    torch.testing.assert_close(plain, (reference @ x.flatten(2)).view_as(x))
