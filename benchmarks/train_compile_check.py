"""Does torch.compile of the training step pay back within one run? (issue 13)

Times single training steps (forward, loss, backward, Adam) of the cpu preset's model
(EfficientNet-Lite0 with random weights, CPAM on, teacher cache on as in training) on random
images, eager and through torch.compile, for the basic block (distillation only) and the
aligned stage 1. Compiled variants:

- model: `step.model = torch.compile(model)`, the forward (bottleneck, student; the teacher's
  features come from the cache) compiled with its backward, the loss and the update eager;
- step: the whole `Stage1Step.__call__` compiled (basic block only: the aligned step's
  `draw_aligned` turns indices into Python ints, a recompile per batch).

Each variant has its own model built from the same seed and its own cache, filled before timing.
Compile seconds = the warm-up steps' time less warm-up x the variant's median step (wall, and
CPU time of the process and its C++ compiler runs, which load from other jobs inflates less). Timed
repeats alternate between variants (eager, model, step, eager, ...) so machine load hits all
alike. payback_steps = compile seconds / (eager median - compiled median). Inductor runs with one
compile thread and an empty cache directory, so compile seconds are those of a first run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_compile_check.py \
        --out runs/train_compile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from siamese_ad.config import Config, cpu_preset
from siamese_ad.models.unet import build_unet
from siamese_ad.training.loop import seed_everything
from siamese_ad.training.pool import AnomalyPool
from siamese_ad.training.stage1 import Stage1Step
from siamese_ad.training.teacher_cache import TeacherCache

OPTIONS = {"max_autotune": False}


def make_config(block: str, size: int, batch: int, bf16: bool) -> Config:
    """The cpu preset, random teacher weights, CPAM on; the basic block has no contrastive part."""
    cfg = cpu_preset()
    cfg.model.weights, cfg.model.cpam = "none", True
    cfg.data.image_size, cfg.train.batch_size, cfg.train.bf16 = size, batch, bf16
    cfg.contrastive.enabled = block == "stage1"
    return cfg.validate()


def make_step(cfg: Config, n: int, device: torch.device) -> Stage1Step:
    """A Stage1Step on n random normal images and one random-rectangle anomaly of each."""
    seed_everything(0)
    model = build_unet(cfg.model).to(device, memory_format=torch.channels_last)
    size = cfg.data.image_size
    gen = torch.Generator().manual_seed(1)
    normals = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, size // 4 : size // 2, size // 3 : 2 * size // 3] = True
    pool = AnomalyPool(images, masks, torch.arange(n))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, betas=cfg.train.betas)
    tc = cfg.train
    cache = TeacherCache(model, device, tc.bf16, tc.channels_last, tc.batch_size)
    cache.features("normal", torch.arange(1), normals)  # fills the cache outside the timing
    cache.features("pool", torch.arange(1), images)
    return Stage1Step(model, optimizer, normals, pool, cfg, device, cache)


def compiled(step: Stage1Step, variant: str) -> Callable[[torch.Tensor, torch.Generator], float]:
    """The step as `variant` runs it: eager, compiled forward, or compiled whole step."""
    if variant == "model":
        step.model = torch.compile(step.model, dynamic=False, options=OPTIONS)
    elif variant == "step":
        return torch.compile(step.__call__, dynamic=False, options=OPTIONS)
    return step


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the C++ compiler runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[torch.Tensor, torch.Generator], float], idx, gen) -> list[float]:
    """[wall seconds, CPU seconds, loss] of one step."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    loss = float(fn(idx, gen))
    return [time.perf_counter() - wall, cpu_seconds() - cpu, loss]


def run_block(block: str, variants: list[str], args: argparse.Namespace) -> dict:
    """Warm-up, then interleaved timed repeats of every variant; per-variant figures."""
    cfg = make_config(block, args.size, args.batch, args.bf16)
    device = torch.device("cpu")
    n = 2 * args.batch
    batches = [torch.arange(n)[k : k + args.batch] for k in range(0, n, args.batch)]
    steps, gens, out = {}, {}, {}
    for v in variants:
        gens[v] = torch.Generator().manual_seed(2)
        fn = compiled(make_step(cfg, n, device), v)
        warm = []
        try:
            for k in range(args.warmup):
                warm.append(timed(fn, batches[k % len(batches)], gens[v]))
        except Exception as err:  # a compiler failure is a result, recorded
            out[v] = {"error": f"{type(err).__name__}: {err}"[:2000]}
            traceback.print_exc()
            continue
        steps[v] = fn
        out[v] = {"warmup": warm, "steps": []}
        print(f"{block} {v}: warm-up [wall s, CPU s, loss] {warm}", flush=True)
    for _ in range(args.repeats):
        for v, fn in steps.items():
            for k in range(args.steps):
                out[v]["steps"].append(timed(fn, batches[k % len(batches)], gens[v]))
    eager = statistics.median(s[0] for s in out["eager"]["steps"]) if "eager" in steps else None
    for v in steps:
        rec = out[v]
        for i, unit in enumerate(("s", "cpu_s")):
            rec[f"median_{unit}"] = statistics.median(s[i] for s in rec["steps"])
            warm = sum(s[i] for s in rec["warmup"])
            rec[f"compile_{unit}"] = warm - args.warmup * rec[f"median_{unit}"]
        if eager is not None and v != "eager":
            saved = eager - rec["median_s"]
            rec["speedup"] = eager / rec["median_s"]
            rec["payback_steps"] = rec["compile_s"] / saved if saved > 0 else None
        summary = {k: x for k, x in rec.items() if k not in ("warmup", "steps")}
        print(f"{block} {v}: {json.dumps(summary)}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--blocks", default="basic,stage1")
    p.add_argument("--variants", default="eager,model,step")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    inductor_config.compile_threads = 1
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "load_before": os.getloadavg(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "blocks": {},
    }
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read at each compile: a cold cache
        for block in args.blocks.split(","):
            variants = args.variants.split(",")
            if block == "stage1":
                variants = [v for v in variants if v != "step"]
            result["blocks"][block] = run_block(block, variants, args)
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
