"""Speed and memory of siamese-ad against anomalib's Reverse Distillation torch model.

Both run in one process on the same random-weight backbone, inputs and batch sizes, and their
timed repeats alternate (A, B, A, B, ...) so that load from other jobs hits both alike; medians
are reported, and the best (minimum) times too (`best_*`), which load inflates least. Peak memory
is measured in a fresh subprocess per (variant, mode): on CPU the peak resident set (VmHWM, reset
after the model is built), on CUDA `torch.cuda.max_memory_allocated`; `*_peak_mib` is the whole
process (weights included), `*_delta_mib` the growth while running.

Measured per variant:
- train: images/s of forward + loss + backward + optimizer step;
- infer: images/s at the inference batch size, anomaly map and image score included, results
  copied to host memory as a user receives them;
- latency: ms per call at batch 1, the same path.

Variants: siamese-ad basic block (no CPAM, no contrastive part: the RD block), channels_last,
the same with CPAM (and through torch.compile with --compile), each in the precisions --precision
names, the label ending with it: "bf16" runs training under bf16 autocast (train.bf16) and
scoring too (scoring.bf16), "fp32" neither. A user of the cpu preset trains in bf16 and, by
default, scores in float32. Then anomalib's ReverseDistillationModel (fp32, its own anomaly map
and score; pre_trained=False), unless --no-anomalib.

    python benchmarks/speed.py --out runs/speed.json            # needs: pip install -e .[bench]
    python benchmarks/speed.py --quick                          # smoke test, under a minute
    python benchmarks/speed.py --quick --no-anomalib            # without anomalib installed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from siamese_ad.config import Config, paper_preset
from siamese_ad.evaluation.inference import Detector
from siamese_ad.models.unet import build_unet
from siamese_ad.training.stage1 import Stage1Step

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # anomalib input
LAYERS = ("layer1", "layer2", "layer3")
METRICS = ("train_ips", "infer_ips", "latency_ms", "train_peak_mib", "infer_peak_mib")


class CompileFellBack(RuntimeError):
    """torch.compile failed (the warning says why) and Detector ran eagerly: no compiled row."""


@dataclass(frozen=True)
class Variant:
    """One implementation under test; `name` is its row label."""

    name: str
    impl: str  # ours | anomalib
    bf16: bool  # bf16 autocast in training (train.bf16) and in scoring (scoring.bf16)
    cpam: bool = False
    compile: bool = False  # inference through torch.compile (Detector(compile=True)); no training


@dataclass
class Runner:
    """Closures over one built model: each takes a uint8 batch (B, 3, S, S) and runs it once."""

    train: Callable[[torch.Tensor], None] | None
    infer: Callable[[torch.Tensor], None]


PRECISIONS = {"bf16": True, "fp32": False}  # row label suffix -> bf16 autocast
REFERENCE = "anomalib-rd"


def variants(precision: str, compile: bool = False, anomalib: bool = True) -> list[Variant]:
    """The rows: siamese-ad's in each precision ("bf16", "fp32" or "both"), then anomalib's."""
    rows = []
    for label in PRECISIONS if precision == "both" else (precision,):
        bf16 = PRECISIONS[label]
        rows.append(Variant(f"siamese-ad {label}", "ours", bf16))
        if compile:
            rows.append(Variant(f"siamese-ad compiled {label}", "ours", bf16, compile=True))
        rows.append(Variant(f"siamese-ad+cpam {label}", "ours", bf16, cpam=True))
    if anomalib:
        rows.append(Variant(REFERENCE, "anomalib", False))
    return rows


def bench_config(backbone: str, size: int, decoder_blocks: int, bf16: bool, cpam: bool) -> Config:
    """The paper preset as benchmarked: random weights, channels_last, the RD block (contrastive
    part off) with or without CPAM, max-of-map score; bf16 autocast in training and scoring."""
    cfg = paper_preset()
    cfg.model.backbone, cfg.model.weights, cfg.model.cpam = backbone, "none", cpam
    cfg.model.decoder_blocks = decoder_blocks
    cfg.data.image_size = size
    cfg.train.bf16, cfg.scoring.bf16, cfg.train.channels_last = bf16, bf16, True
    cfg.contrastive.enabled = False
    cfg.scoring.image_score = "max"
    return cfg.validate()


def build_ours(v: Variant, args: argparse.Namespace, backbone: str, dev: torch.device) -> Runner:
    """siamese-ad as the library wires it: Stage1Step (contrastive off) and Detector.run."""
    cfg = bench_config(backbone, args.image_size, args.decoder_blocks, v.bf16, v.cpam)
    model = build_unet(cfg.model).to(dev).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, betas=cfg.train.betas)
    detector: list[Detector] = []  # made at the first inference: it folds BatchNorm in place
    generator = torch.Generator().manual_seed(0)

    def train(images: torch.Tensor) -> None:
        Stage1Step(model, optimizer, images, None, cfg, dev)(torch.arange(len(images)), generator)

    def infer(images: torch.Tensor) -> None:
        if not detector:  # bench_backbone times training first, so training is never folded
            detector.append(Detector.from_model(model, cfg, dev, {}, compile=v.compile))
        detector[0].run(images, batch_size=len(images))
        if v.compile and not detector[0].compile:
            raise CompileFellBack(v.name)

    return Runner(None if v.compile else train, infer)


def build_anomalib(args: argparse.Namespace, backbone: str, dev: torch.device) -> Runner:
    """anomalib's ReverseDistillationModel, its loss and optimizer settings, fp32."""
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
    from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel

    size = (args.image_size, args.image_size)
    model = ReverseDistillationModel(
        backbone, size, list(LAYERS), AnomalyMapGenerationMode.ADD, pre_trained=False
    ).to(dev)
    params = [*model.decoder.parameters(), *model.bottleneck.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.005, betas=(0.5, 0.99))
    loss_fn = ReverseDistillationLoss()

    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return (images.to(dev).float().div_(255.0) - mean) / std

    def train(images: torch.Tensor) -> None:
        model.train()
        encoder, decoder = model(prepare(images))
        loss = loss_fn(encoder, decoder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())

    @torch.inference_mode()
    def infer(images: torch.Tensor) -> None:
        model.eval()
        out = model(prepare(images))
        out.anomaly_map.float().cpu().numpy()
        out.pred_score.float().cpu().numpy()

    return Runner(train, infer)


def build(v: Variant, args: argparse.Namespace, backbone: str, dev: torch.device) -> Runner:
    torch.manual_seed(0)
    if v.impl == "anomalib":
        return build_anomalib(args, backbone, dev)
    return build_ours(v, args, backbone, dev)


def batch(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) uint8 random images, the same for every variant."""
    gen = torch.Generator().manual_seed(n)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)


def timed(fn: Callable[[], None], dev: torch.device) -> float:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start


def interleaved(
    runners: dict[str, Runner], mode: str, images: torch.Tensor, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Warm-up, then `repeats` rounds, each running every variant once in turn: seconds."""
    dev = torch.device(args.device)
    fns = {name: getattr(r, mode) for name, r in runners.items()}
    calls = {name: (lambda fn=fn: fn(images)) for name, fn in fns.items() if fn is not None}
    for name, call in list(calls.items()):
        try:
            for _ in range(args.warmup):
                timed(call, dev)
        except CompileFellBack:
            print(f"  {name}: torch.compile failed, row dropped", flush=True)
            del calls[name], runners[name]
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            seconds[name].append(timed(call, dev))
    return seconds


def _proc_status_bytes(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_cpu_peak() -> int:
    """Resets the peak RSS (VmHWM) of this process; returns the current RSS in bytes.

    `ru_maxrss` cannot be used: Linux carries it across fork and exec, so a child starts with its
    parent's peak. Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _proc_status_bytes("VmRSS")


def memory_child(args: argparse.Namespace) -> None:
    """Subprocess body: builds one variant, runs one mode, prints its peak memory as JSON."""
    v = Variant(**json.loads(args.child))
    dev = torch.device(args.device)
    runner = build(v, args, args.backbones[0], dev)
    images = batch(args.child_batch, args.image_size)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        base = _reset_cpu_peak()
    run = getattr(runner, args.child_mode)
    if run is None:
        print(json.dumps({"peak_mib": float("nan"), "delta_mib": float("nan")}))
        return
    for _ in range(2):
        run(images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        peak = _proc_status_bytes("VmHWM")
    print(json.dumps({"peak_mib": peak / 2**20, "delta_mib": (peak - base) / 2**20}))


def peak_memory(v: Variant, mode: str, n: int, backbone: str, args: argparse.Namespace) -> dict:
    """Runs `memory_child` in a fresh interpreter; returns {"peak_mib", "delta_mib"}."""
    cmd = [sys.executable, __file__, "--device", args.device, "--backbones", backbone]
    cmd += ["--image-size", str(args.image_size), "--decoder-blocks", str(args.decoder_blocks)]
    cmd += ["--threads", str(args.threads)]
    cmd += ["--child", json.dumps(v.__dict__), "--child-mode", mode, "--child-batch", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_backbone(backbone: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    dev = torch.device(args.device)
    train_bs = args.train_batch or (16 if backbone == "resnet18" else 8)
    rows = variants(args.precision, args.compile, args.anomalib)
    runners = {v.name: build(v, args, backbone, dev) for v in rows}
    train = interleaved(runners, "train", batch(train_bs, args.image_size), args)
    infer = interleaved(runners, "infer", batch(args.batch_size, args.image_size), args)
    latency = interleaved(runners, "infer", batch(1, args.image_size), args)
    del runners
    out = {}
    for v in rows:
        if v.name not in infer:
            continue
        out[v.name] = {
            "infer_ips": args.batch_size / statistics.median(infer[v.name]),
            "latency_ms": 1000 * statistics.median(latency[v.name]),
            "best_infer_ips": args.batch_size / min(infer[v.name]),
            "best_latency_ms": 1000 * min(latency[v.name]),
        }
        if v.name in train:
            out[v.name]["train_ips"] = train_bs / statistics.median(train[v.name])
            out[v.name]["best_train_ips"] = train_bs / min(train[v.name])
        if not args.no_memory:
            modes = (("train", train_bs), ("infer", args.batch_size))
            for mode, n in modes if v.name in train else modes[1:]:
                mem = peak_memory(v, mode, n, backbone, args)
                out[v.name][f"{mode}_peak_mib"] = mem["peak_mib"]
                out[v.name][f"{mode}_delta_mib"] = mem["delta_mib"]
        out[v.name]["train_batch"] = train_bs
        print(f"  {backbone} {v.name}: {out[v.name]}", flush=True)
    return out


def ratios(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Every siamese-ad row over anomalib's, per metric (latency and memory: lower is better);
    none without an anomalib row."""
    ref = rows.get(REFERENCE)
    return {
        name: {m: row[m] / ref[m] for m in row if m in ref and not m.endswith("batch")}
        for name, row in rows.items()
        if ref is not None and name != REFERENCE
    }


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    head = f"{'backbone':<16}{'variant':<28}" + "".join(f"{m:>16}" for m in METRICS)
    print(head)
    for backbone, rows in results.items():
        for name, row in rows.items():
            cells = "".join(f"{row.get(m, float('nan')):>16.1f}" for m in METRICS)
            print(f"{backbone:<16}{name:<28}{cells}")
        for name, rat in ratios(rows).items():
            cells = "".join(f"{rat.get(m, float('nan')):>15.2f}x" for m in METRICS)
            print(f"{backbone:<16}{name + ' / rd':<28}{cells}")
    if any(ratios(rows) for rows in results.values()):
        print("ratios = siamese-ad / anomalib-rd: *_ips higher, ms and MiB lower is better")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} x{len(names)}" if names else platform.machine()


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    info["cpu"] = cpu_model()
    info["threads"] = torch.get_num_threads()
    info["load_before"] = os.getloadavg()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbones", nargs="+", default=["resnet18", "wide_resnet50_2"])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="inference batch")
    p.add_argument("--train-batch", type=int, default=0, help="0: 16 (resnet18) / 8 (others)")
    p.add_argument("--decoder-blocks", type=int, default=2, help="siamese-ad decoder blocks")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--precision",
        choices=[*PRECISIONS, "both"],
        default="both",
        help="siamese-ad rows under bf16 autocast (training and scoring), in fp32, or both",
    )
    p.add_argument(
        "--anomalib",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the anomalib RD row and the ratios to it (--no-anomalib: siamese-ad rows only)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument(
        "--compile", action="store_true", help="add a row: inference through torch.compile"
    )
    p.add_argument("--quick", action="store_true", help="tiny settings to smoke-test")
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--child-mode", default="", help=argparse.SUPPRESS)
    p.add_argument("--child-batch", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compile:
        args.warmup = max(args.warmup, 1)  # the first call compiles (or finds it cannot)
    if args.quick:
        args.backbones, args.image_size, args.batch_size = ["resnet18"], 64, 4
        args.train_batch, args.repeats, args.warmup = 4, 2, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return
    info = machine()
    print(f"machine: {info}", flush=True)
    results = {b: bench_backbone(b, args) for b in args.backbones}
    info["load_after"] = os.getloadavg()
    print(f"load average before {info['load_before']}, after {info['load_after']}")
    print_table(results)
    if args.out:
        payload = {"machine": info, "args": vars(args), "results": results}
        payload["ratios"] = {b: ratios(rows) for b, rows in results.items()}
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
