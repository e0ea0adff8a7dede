"""Training speed and peak memory of each siamese-ad training stage vs anomalib RD (issue 13).

Every stage is timed through the real CLI (`siamese-ad train`, one fresh subprocess per run), on
a synthetic category written once by `siamese_ad.data.synthetic` (or `--data`), teacher weights
`none` (random: no download, same arithmetic as trained weights):

- basic: `--no-cpam --no-contrastive --no-deviation`, stage 1 is plain distillation (the RD block);
- stage1: the full method's contrastive stage (CPAM, triplet loss);
- stage2: the full method's deviation fine-tuning (same run as stage1).

images/s = normal training images per epoch / median epoch seconds of the stage, read from the
checkpoint's history (the first epoch of a stage is left out when it has two or more: it fills
caches). Stage 1 also processes the rotated copy and an anomaly per normal image, and stage 2 an
anomalous image per normal image; the figure counts normal training images only. Per-epoch
validation is off for the current code (`--train.track_validation false`; the baseline has none).
Peak MiB is the process's peak resident set (VmHWM) while that stage ran, reset when it starts
(/proc/self/clear_refs), so the data, model and caches resident at the time count (the JSON also
has `start_mib`, the resident set as the stage began); `ru_maxrss` is not used (Linux carries it
across fork and exec). With `--device cuda` our runs train on the GPU and the JSON adds each
stage's `cuda_peak_mib` (torch.cuda.max_memory_allocated); the RD rows stay on the CPU. They run
anomalib 2.7's ReverseDistillationModel (random weights, fp32, its loss and Adam settings) for
`--rd-steps` timed steps at batch 16 after a warm-up, in a subprocess of `--rd-python`; anomalib
2.7 builds an RD decoder for ResNets only, so the cpu preset's EfficientNet-Lite0 gets
"unsupported" unless `--rd-cpu-backbone` names a stand-in (e.g. resnet18, then labelled as such).

Table columns: current img/s, baseline img/s (`--baseline-src`: the same CLI of another checkout's
src/), speed-up = current / baseline, RD img/s, ours/RD = current / RD, peak MiB current / baseline
/ RD. Results (per run: stages, epoch seconds, peaks, command line, config) go to `--out` as JSON,
with machine info, git commits and load averages.

Full run (an idle machine; from the repository root; baseline = commit 63e66a9):

    git worktree add /tmp/base63 63e66a9
    .venv/bin/python benchmarks/train_speed.py --presets cpu,paper --baseline-src /tmp/base63/src \
        --rd-python .venv-bench/bin/python --out runs/train_speed.json
    git worktree remove /tmp/base63 --force

Smoke test (8 images at 64 px, 2 + 2 epochs, cpu preset only):

    .venv/bin/python benchmarks/train_speed.py --quick --out /tmp/ts.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("cpu", "paper")
VARIANTS = {
    "basic": ["--no-cpam", "--no-contrastive", "--no-deviation"],
    "full": [
        "--model.cpam",
        "true",
        "--contrastive.enabled",
        "true",
        "--deviation.enabled",
        "true",
    ],
}
STAGE_ROWS = (
    ("basic", "stage1", "basic"),
    ("full", "stage1", "stage1"),
    ("full", "stage2", "stage2"),
)
RD_BACKBONE = {"cpu": "tf_efficientnet_lite0", "paper": "wide_resnet50_2"}
RD_BATCH = 16
RD_LR, RD_BETAS = 0.005, (0.5, 0.99)  # anomalib 2.7.0 ReverseDistillation.configure_optimizers
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Runs `siamese_ad.cli.main(argv)` in this fresh interpreter and writes the peak resident set
# (VmHWM, KiB) of the run and of each stage (VmHWM reset as run_stage starts) to argv[1] as JSON.
TRAIN_CHILD = r"""
import atexit, json, sys
out, argv = sys.argv[1], sys.argv[2:]
rec = {"run_kib": 0, "stage_kib": {}, "start_kib": {}}
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
def finish():
    rec["run_kib"] = max(rec["run_kib"], hwm())
    with open(out, "w") as f:
        json.dump(rec, f)
atexit.register(finish)
import torch, siamese_ad
rec["siamese_ad"], rec["threads"] = siamese_ad.__file__, torch.get_num_threads()
try:
    import siamese_ad.training.trainer as trainer
    original = trainer.run_stage
    def run_stage(stage, *args, **kwargs):
        rec["run_kib"] = max(rec["run_kib"], hwm())
        reset()
        rec["start_kib"][stage] = hwm()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            return original(stage, *args, **kwargs)
        finally:
            rec["stage_kib"][stage] = max(rec["stage_kib"].get(stage, 0), hwm())
            if torch.cuda.is_available():
                cuda = torch.cuda.max_memory_allocated() / 2**20
                rec.setdefault("stage_cuda_mib", {})[stage] = cuda
    trainer.run_stage = run_stage
except Exception as err:
    rec["patch_error"] = repr(err)
from siamese_ad.cli import main
sys.exit(main(argv))
"""


def _atomic_json(obj: Any, path: Path) -> None:
    """Writes `obj` as JSON through siamese-ad's atomic writer (temporary file, rename)."""
    from siamese_ad.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _git(cwd: Path, *args: str) -> str | None:
    """Output of `git args` in `cwd`, or None when git fails."""
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return res.stdout.strip()


def machine_info() -> dict[str, Any]:
    """Platform, CPU model, core count, torch version and threads, load averages."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": os.getloadavg(),
    }


def make_data(root: Path, n_train: int, size: int) -> Path:
    """A synthetic MVTec-layout category: n_train normal training images, a small test set."""
    from siamese_ad.data.synthetic import make_synthetic_category

    return make_synthetic_category(
        root, n_train=n_train, n_test_good=4, n_test_defect=2, size=size, defects=("scratch",)
    )


def train_argv(
    data: Path, out: Path, preset: str, variant: str, args: argparse.Namespace, current: bool
) -> list[str]:
    """The `siamese-ad train` arguments of one run; the current code gets the extra flags."""
    argv = ["train", "--data", str(data), "--out", str(out), "--preset", preset]
    argv += ["--weights", "none", "--image-size", str(args.image_size), "--device", args.device]
    argv += ["--epochs", str(args.epochs), "--deviation-epochs", str(args.deviation_epochs)]
    argv += VARIANTS[variant]
    if current:
        argv += ["--train.track_validation", "false", *shlex.split(args.extra_args)]
    return argv


def steady_seconds(seconds: list[float]) -> float:
    """Median epoch seconds, the first epoch left out when there are two or more."""
    return statistics.median(seconds[1:] if len(seconds) >= 2 else seconds)


def stage_figures(ckpt: Path, peaks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-stage images/s, epoch seconds and peak MiB from a finished run; also its config."""
    from siamese_ad.checkpoint import read_checkpoint

    payload = read_checkpoint(ckpt)
    cfg = payload["config"]
    n = len(payload["manifest"]["train"])
    batch = int(cfg["train"]["batch_size"])
    per_epoch = n - 1 if n > 1 and n % batch == 1 else n  # a trailing batch of one is dropped
    stages: dict[str, Any] = {}
    for stage in ("stage1", "stage2"):
        secs = [float(h["seconds"]) for h in payload["state"]["history"] if h["stage"] == stage]
        if not secs:
            continue
        steady = steady_seconds(secs)
        kib = peaks.get("stage_kib", {}).get(stage)
        start_kib = peaks.get("start_kib", {}).get(stage)
        stages[stage] = {
            "images_per_s": per_epoch / steady if steady > 0 else float("nan"),
            "steady_epoch_s": steady,
            "epoch_s": secs,
            "images_per_epoch": per_epoch,
            "peak_mib": kib / 1024 if kib else None,
            "start_mib": start_kib / 1024 if start_kib else None,  # resident as the stage began
            # on CUDA: torch.cuda.max_memory_allocated while the stage ran
            "cuda_peak_mib": peaks.get("stage_cuda_mib", {}).get(stage),
        }
    return stages, cfg


def run_ours(
    preset: str, variant: str, code: str, data: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One `siamese-ad train` run in a fresh interpreter; its per-stage figures."""
    current = code == "current"
    out = work / f"{preset}-{variant}-{code}"
    shutil.rmtree(out, ignore_errors=True)
    peak_file = work / f"{out.name}.peak.json"
    argv = train_argv(data, out, preset, variant, args, current)
    cmd = [sys.executable, "-c", TRAIN_CHILD, str(peak_file), *argv]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if not current:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(args.baseline_src), env.get("PYTHONPATH", "")) if p
        )
    shown = "siamese-ad " + shlex.join(argv)
    if not current:
        shown = f"PYTHONPATH={shlex.quote(str(args.baseline_src))} python -m siamese_ad.cli " + (
            shlex.join(argv)
        )
    print(f"[{preset} {variant} {code}] {shown}", flush=True)
    log = work / f"{out.name}.log"
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"command": shown, "wall_s": wall, "returncode": rc}
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        print(f"  failed (exit {rc}); log {log}:\n    " + "\n    ".join(tail), flush=True)
        return {**record, "status": "failed", "log": str(log)}
    peaks = json.loads(peak_file.read_text()) if peak_file.exists() else {}
    stages, cfg = stage_figures(out / "checkpoint.pt", peaks)
    record.update(
        status="ok",
        stages=stages,
        run_peak_mib=peaks.get("run_kib", 0) / 1024 or None,
        threads=peaks.get("threads"),
        siamese_ad_file=peaks.get("siamese_ad"),
        config=cfg,
    )
    if "patch_error" in peaks:
        record["peak_note"] = f"per-stage peaks unavailable: {peaks['patch_error']}"
    done = ", ".join(f"{s} {v['images_per_s']:.2f} img/s" for s, v in stages.items())
    print(f"  {done}; {wall:.0f} s in all; code from {peaks.get('siamese_ad')}", flush=True)
    return record


def rd_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Subprocess body: anomalib RD training steps; returns images/s and peak memory."""
    import warnings

    warnings.filterwarnings("ignore")
    import anomalib
    import torch
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
    from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel

    torch.manual_seed(0)
    backbone, size = spec["backbone"], spec["image_size"]
    layers = ["blocks.1", "blocks.2", "blocks.4"] if "efficientnet" in backbone else []
    layers = layers or ["layer1", "layer2", "layer3"]
    base = {"anomalib": anomalib.__version__, "backbone": backbone, "layers": layers}
    try:
        model = ReverseDistillationModel(
            backbone, (size, size), layers, AnomalyMapGenerationMode.ADD, pre_trained=False
        )
    except ValueError as err:  # anomalib 2.7 builds RD decoders for ResNets only
        return {**base, "status": f"unsupported: {err}"}
    params = [*model.decoder.parameters(), *model.bottleneck.parameters()]
    optimizer = torch.optim.Adam(params, lr=RD_LR, betas=RD_BETAS)
    loss_fn = ReverseDistillationLoss()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (RD_BATCH, 3, size, size), dtype=torch.uint8, generator=gen)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def step() -> float:
        start = time.perf_counter()
        model.train()
        encoder, decoder = model((images.float() / 255.0 - mean) / std)
        loss = loss_fn(encoder, decoder)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())
        return time.perf_counter() - start

    with open("/proc/self/clear_refs", "w") as f:  # peak while training, model resident
        f.write("5")
    for _ in range(spec["warmup"]):
        step()
    seconds = [step() for _ in range(spec["steps"])]
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    median = statistics.median(seconds)
    return {
        **base,
        "status": "ok",
        "batch": RD_BATCH,
        "step_s": seconds,
        "images_per_s": RD_BATCH / median,
        "peak_mib": kib / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_rd(preset: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """anomalib RD on the preset's backbone in a subprocess of --rd-python."""
    backbone = RD_BACKBONE[preset]
    if preset == "cpu" and args.rd_cpu_backbone:
        backbone = args.rd_cpu_backbone
    spec = {
        "backbone": backbone,
        "image_size": args.image_size,
        "steps": args.rd_steps,
        "warmup": 1 if args.quick else 2,
    }
    python = args.rd_python or sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--rd-child", json.dumps(spec)]
    print(f"[{preset} anomalib-rd] {backbone}, {args.rd_steps} steps, python {python}", flush=True)
    probe = subprocess.run([python, "-c", "import anomalib"], capture_output=True, text=True)
    if probe.returncode != 0:
        msg = (probe.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  skipped: anomalib not importable by {python} ({msg})", flush=True)
        return {"status": f"skipped: anomalib not importable by {python}: {msg}"}
    log = work / f"{preset}-rd.log"
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log.write_text(res.stdout + res.stderr)
    wall = time.perf_counter() - start
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stdout + res.stderr).splitlines()[-15:]
        print(f"  failed (exit {res.returncode}):\n    " + "\n    ".join(tail), flush=True)
        return {"status": "failed", "log": str(log), "command": shlex.join(cmd)}
    record = {**json.loads(lines[-1]), "command": shlex.join(cmd), "wall_s": wall}
    if record["status"] == "ok":
        print(f"  {record['images_per_s']:.2f} img/s, peak {record['peak_mib']:.0f} MiB")
    else:
        print(f"  {record['status']}", flush=True)
    return record


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """Markdown table: one row per preset and stage."""
    head = (
        "| preset | stage | current img/s | baseline img/s | speed-up | anomalib RD img/s "
        "| ours/RD | peak MiB cur / base / RD |"
    )
    lines = [head, "|" + "---|" * 8]
    for preset, res in results.items():
        rd = res.get("rd", {})
        rd_ips = rd.get("images_per_s") if rd.get("status") == "ok" else None
        rd_note = "" if rd_ips is not None or not rd else f" ({rd['status'].split(':')[0]})"
        if rd_ips is not None and rd.get("backbone") != RD_BACKBONE[preset]:
            rd_note = f" ({rd['backbone']})"
        for variant, stage, label in STAGE_ROWS:
            figs = {}
            for code in ("current", "baseline"):
                run = res.get(variant, {}).get(code, {})
                figs[code] = run.get("stages", {}).get(stage, {})
            cur, base = figs["current"].get("images_per_s"), figs["baseline"].get("images_per_s")
            speedup = cur / base if cur and base else None
            ours_rd = cur / rd_ips if cur and rd_ips else None
            peaks = " / ".join(
                _fmt(p, 0)
                for p in (
                    figs["current"].get("peak_mib"),
                    figs["baseline"].get("peak_mib"),
                    rd.get("peak_mib"),
                )
            )
            row = [preset, label, _fmt(cur), _fmt(base), _fmt(speedup), _fmt(rd_ips) + rd_note]
            lines.append("| " + " | ".join([*row, _fmt(ours_rd), peaks]) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--presets", default="cpu,paper", help="comma-separated: cpu, paper")
    p.add_argument("--epochs", type=int, default=3, help="stage-1 epochs")
    p.add_argument("--deviation-epochs", type=int, default=2, help="stage-2 epochs")
    p.add_argument("--n-train", type=int, default=64, help="synthetic normal training images")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="our runs' train.device: cpu, cuda, cuda:N")
    p.add_argument("--data", type=Path, help="a category folder (MVTec layout) instead")
    p.add_argument("--baseline-src", type=Path, help="src/ of another checkout to compare")
    p.add_argument("--extra-args", default="", help="flags appended to the current code's runs")
    p.add_argument("--rd-python", help="python with anomalib 2.7 (e.g. .venv-bench/bin/python)")
    p.add_argument("--rd-cpu-backbone", help="RD stand-in for Lite0 (e.g. resnet18)")
    p.add_argument("--rd-steps", type=int, default=10, help="timed anomalib RD steps")
    p.add_argument("--out", type=Path, default=Path("runs/train_speed.json"))
    p.add_argument("--workdir", type=Path, help="run folders and logs (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--quick", action="store_true", help="smoke test: 8 images, 64 px, cpu only")
    p.add_argument("--rd-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.image_size, args.epochs, args.deviation_epochs = 8, 64, 2, 2
        args.rd_steps, args.presets = 2, "cpu"
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    bad = [s for s in args.presets if s not in PRESETS]
    if bad or not args.presets:
        p.error(f"--presets: unknown {bad}; choose from {', '.join(PRESETS)}")
    if args.baseline_src is not None:
        args.baseline_src = args.baseline_src.resolve()
        if not (args.baseline_src / "siamese_ad" / "cli.py").is_file():
            p.error(f"--baseline-src {args.baseline_src} holds no siamese_ad/cli.py")
    if args.epochs < 1 or args.deviation_epochs < 1 or args.rd_steps < 1:
        p.error("--epochs, --deviation-epochs and --rd-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rd_child:
        print(json.dumps(rd_child(json.loads(args.rd_child))), flush=True)
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="train_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "git_commit": _git(REPO, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(REPO, "status", "--porcelain", "--untracked-files=no")),
        "baseline_src": str(args.baseline_src) if args.baseline_src else None,
        "baseline_commit": _git(args.baseline_src, "rev-parse", "HEAD")
        if args.baseline_src
        else None,
        "machine": machine_info(),
        "settings": {
            k: getattr(args, k)
            for k in ("epochs", "deviation_epochs", "n_train", "image_size", "extra_args")
        },
        "notes": "images_per_s counts normal training images (stage 1 also processes a rotated "
        "copy and an anomaly per image, stage 2 an anomaly per image); first epoch of a stage "
        "left out when it has >= 2; peak_mib = VmHWM while the stage ran",
        "results": {},
    }
    print(f"work folder {work}", flush=True)
    if args.data is not None:
        data = args.data.resolve()
    else:
        data = make_data(work / "data", args.n_train, args.image_size)
    report["data"] = str(data)
    codes = ["current"] + (["baseline"] if args.baseline_src else [])
    failed = False
    for preset in args.presets:
        res: dict[str, Any] = report["results"].setdefault(preset, {})
        for variant in VARIANTS:
            for code in codes:
                rec = run_ours(preset, variant, code, data, work, args)
                failed |= rec["status"] != "ok"
                res.setdefault(variant, {})[code] = rec
                _atomic_json(report, args.out)
        res["rd"] = run_rd(preset, args, work)
        failed |= res["rd"]["status"] == "failed"
        _atomic_json(report, args.out)
    report["machine"]["loadavg_end"] = os.getloadavg()
    _atomic_json(report, args.out)
    print()
    print(table(report["results"]))
    print(f"\nresults: {args.out}")
    if failed or args.keep or args.workdir:
        print(f"run folders and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
