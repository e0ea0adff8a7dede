"""CPAM's positional attention alone: torch's attention against `cpu_attention`, on a CPU.

At each CPAM of a backbone's student (256 px input, batch 16: N = H * W positions, C' = C / 8
query and key channels, C value channels), with random inputs (unit-variance Q, K and V), this
times softmax(Q K^T) V per image in inference (no autograd) and in a training step (forward and
backward; "ours" there is a one-product float32 form, as `cpu_attention` runs without
autograd), and gives each form's mean absolute error against a float64 reference. "fused" is
torch's `scaled_dot_product_attention` (on this CPU its math path). Best of `--repeats` timed
runs after one warm-up; run it on an otherwise idle machine.

    python benchmarks/cpam_attention.py --backbone resnet18 --precision bf16 --threads 2

With --model it times instead the whole model with CPAM as `benchmarks/speed.py` builds and
scores it (Detector.run, bf16, batch 16, random weights), alternating the two forms in one
process (`_blocked_pays` forced off for torch's kernel), `--repeats` rounds of two batches each.
With --modules it times each of the student's CPAMs as the model runs them (eager inference,
channels_last input, gammas 0.1) and its parts: the channel attention, the positional attention
(`cpu_attention` where it runs) and the Q, K and V convolutions.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from siamese_ad.models import cpam
from siamese_ad.models.cpam import cpu_attention

# (channels, side) of the student's CPAMs at 256 px, deepest first (models/unet.py)
SHAPES = {
    "resnet18": ((512, 8), (256, 16), (128, 32)),
    "wide_resnet50_2": ((2048, 8), (1024, 16), (512, 32)),
}


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)


def one_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T) V as one float32 product, with autograd: the training form that was tried
    beside `cpu_attention` (which is inference only) and not kept."""
    with torch.autocast("cpu", enabled=False):
        logits = torch.bmm(q.float(), k.float().transpose(1, 2))
        return torch.bmm(torch.softmax(logits, dim=-1), v.float()).to(v.dtype)


def best_ms(fn: Callable[[], object], repeats: int, images: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / images


def measure(
    channels: int, side: int, batch: int, dtype: torch.dtype, repeats: int
) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    n, hidden = side * side, max(channels // 8, 1)
    q, k, v = (torch.randn(batch, n, c, generator=g) for c in (hidden, hidden, channels))
    reference = torch.softmax(q.double() @ k.double().transpose(1, 2), dim=-1) @ v.double()
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    row: dict[str, float] = {"channels": channels, "positions": n}
    for name, attend, train_form in (
        ("fused", fused, fused),
        ("cpu_attention", cpu_attention, one_product),
    ):
        with torch.inference_mode(), autocast:
            out = attend(q, k, v)
            row[f"{name}_infer_ms"] = best_ms(lambda a=attend: a(q, k, v), repeats, batch)
        row[f"{name}_error"] = float((out.double() - reference).abs().mean())
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]

        def step(a: Callable = train_form, leaves: list[torch.Tensor] = leaves) -> None:
            with autocast:
                out = a(*leaves)
            out.float().sum().backward()

        row[f"{name}_train_ms"] = best_ms(step, repeats, batch)
    return row


def model_ab(backbone: str, batch: int, repeats: int) -> dict[str, list[float]]:
    """ms per image of the whole CPAM model through Detector.run, each form in turn."""
    import speed  # benchmarks/speed.py, beside this file

    args = argparse.Namespace(image_size=256, decoder_blocks=2)
    variant = next(v for v in speed.variants("bf16", anomalib=False) if v.cpam)
    runner = speed.build(variant, args, backbone, torch.device("cpu"))
    images = speed.batch(batch, 256)
    forms = {"fused": lambda *_: False, "cpu_attention": cpam._blocked_pays}
    times: dict[str, list[float]] = {name: [] for name in forms}
    runner.infer(images)
    try:
        for _ in range(repeats):
            for name, rule in forms.items():
                cpam._blocked_pays = rule
                runner.infer(images)
                start = time.perf_counter()
                runner.infer(images)
                runner.infer(images)
                times[name].append(1000 * (time.perf_counter() - start) / (2 * batch))
    finally:
        cpam._blocked_pays = forms["cpu_attention"]
    return times


def modules(backbone: str, batch: int, dtype: torch.dtype, repeats: int) -> list[dict]:
    """ms per image of each CPAM of the student and of its parts, in eager inference."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    rows = []
    for channels, side in SHAPES[backbone]:
        module = cpam.CPAM(channels).eval()
        with torch.no_grad():
            module.gamma_c.fill_(0.1)
            module.gamma_p.fill_(0.1)
        x = torch.randn(batch, channels, side, side, generator=torch.Generator().manual_seed(0))
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast:
            q, k, v = module.query(x), module.key(x), module.value(x)
            parts = {
                "cpam": lambda m=module, x=x: m(x),
                "channel": lambda x=x: cpam.channel_attention(x),
                "position": lambda q=q, k=k, v=v: cpam.position_attention(q, k, v),
                "qkv_convs": lambda m=module, x=x: (m.query(x), m.key(x), m.value(x)),
            }
            row = {"channels": channels, "positions": side * side}
            row |= {name: best_ms(fn, repeats, batch) for name, fn in parts.items()}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(SHAPES), default="resnet18")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", action="store_true", help="the whole model, both forms")
    parser.add_argument("--modules", action="store_true", help="each CPAM and its parts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if args.modules:
        rows = modules(args.backbone, args.batch, dtype, args.repeats)
        print(f"{args.backbone}, {args.precision}, batch {args.batch}; ms/img")
        print("| C x N | CPAM | channel attention | positional attention | Q, K, V convs |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['channels']} x {r['positions']} | {r['cpam']:.2f} | {r['channel']:.2f} | "
                f"{r['position']:.2f} | {r['qkv_convs']:.2f} |"
            )
        print(f"all CPAMs: {sum(r['cpam'] for r in rows):.2f} ms/img")
        if args.json:
            meta = {**vars(args), "json": str(args.json)}
            args.json.write_text(json.dumps({"args": meta, "modules": rows}, indent=2))
        return
    if args.model:
        times = model_ab(args.backbone, args.batch, args.repeats)
        for name, ms in times.items():
            shown = ", ".join(f"{t:.1f}" for t in ms)
            print(f"{args.backbone} + CPAM, {name}: {shown} ms/img")
        if args.json:
            meta = {**vars(args), "json": str(args.json)}
            args.json.write_text(json.dumps({"args": meta, "model": times}, indent=2))
        return
    rows = [measure(c, s, args.batch, dtype, args.repeats) for c, s in SHAPES[args.backbone]]
    print(
        f"{args.backbone}, {args.precision}, batch {args.batch}, {args.threads} thread(s); ms/img"
    )
    print(
        "| C x N | fused infer | ours infer | speed-up | fused train | ours train | speed-up "
        "| error fused / ours |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['channels']} x {r['positions']} | {r['fused_infer_ms']:.3f} | "
            f"{r['cpu_attention_infer_ms']:.3f} | "
            f"{r['fused_infer_ms'] / r['cpu_attention_infer_ms']:.2f}x | "
            f"{r['fused_train_ms']:.3f} | {r['cpu_attention_train_ms']:.3f} | "
            f"{r['fused_train_ms'] / r['cpu_attention_train_ms']:.2f}x | "
            f"{r['fused_error']:.1e} / {r['cpu_attention_error']:.1e} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
