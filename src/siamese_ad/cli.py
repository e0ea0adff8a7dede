"""The `siamese-ad` command: parses arguments into a config and calls the workflows in app/."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
from pathlib import Path

import yaml

from siamese_ad.config import AUTO_SIZE, PRESETS, Config, ConfigError, ImageSize, layered

EPILOG = "Docs and examples: README.md. Every command prints where it wrote its results."


_FIELD_DEST = "field:"


def _yaml_value(text: str) -> object:
    """A flag's value read as YAML: 0.5, true, [2, 4] and plain words all work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid value: {err}") from err


def _image_size(text: str) -> ImageSize:
    """An argparse type: 256 (square), HEIGHTxWIDTH (448x192 or 448,192), or auto."""
    if text.strip().lower() == AUTO_SIZE:
        return AUTO_SIZE  # type: ignore[return-value]
    parts = text.lower().replace(",", "x").split("x")
    try:
        sides = [int(part) for part in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an image size; give one side (256), HEIGHTxWIDTH (448x192) or auto"
        )
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _add_field_flags(p: argparse.ArgumentParser) -> None:
    """One --section.key flag for every config field, generated from the dataclasses."""
    group = p.add_argument_group(
        "every config field",
        "any field of the config as --section.key VALUE (YAML syntax: 0.5, true, [2, 4]); "
        "laid over --preset, then --config, then the flags above",
    )
    defaults = Config()
    for section, key in Config.field_names():
        holder = getattr(defaults, section)
        metadata = {f.name: f.metadata for f in dataclasses.fields(holder)}[key]
        group.add_argument(
            f"--{section}.{key}",
            dest=f"{_FIELD_DEST}{section}.{key}",
            type=_yaml_value,
            metavar=metadata.get("metavar", type(getattr(holder, key)).__name__.upper()),
            help=argparse.SUPPRESS if key == "root" and section == "data" else None,
        )
    p.add_argument(
        "--print-config", action="store_true", help="print the merged config as YAML and exit"
    )


def _field_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for dest, value in vars(args).items():
        if dest.startswith(_FIELD_DEST) and value is not None:
            section, key = dest[len(_FIELD_DEST) :].split(".", 1)
            out.setdefault(section, {})[key] = value
    return out


def _config_from_args(args: argparse.Namespace) -> Config:
    """preset -> --config YAML -> the named flags -> --section.key flags, each over the last."""
    cfg = layered(args.preset, args.config, {})
    overrides = {
        ("data", "root"): args.data,
        ("data", "format"): args.format,
        ("data", "image_size"): args.image_size,
        ("data", "modality"): args.modality,
        ("data", "shots"): args.shots,
        ("data", "real_anomalies"): args.real_anomalies,
        ("data", "object_type"): args.object_type,
        ("model", "backbone"): args.backbone,
        ("model", "weights"): args.weights,
        ("model", "cpam_fusion"): args.cpam_fusion,
        ("model", "decoder_blocks"): args.decoder_blocks,
        ("train", "epochs"): args.epochs,
        ("train", "batch_size"): args.batch_size,
        ("train", "lr"): args.lr,
        ("train", "seed"): args.seed,
        ("train", "device"): args.device,
        ("train", "bf16"): args.bf16,
        ("deviation", "epochs"): args.deviation_epochs,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if args.no_cpam:
        cfg.model.cpam = False
    if args.no_contrastive:
        cfg.contrastive.enabled = False
    if args.no_deviation:
        cfg.deviation.enabled = False
    cfg = cfg.merged(_field_overrides(args))
    if args.print_config:
        return cfg.validate()
    if not cfg.data.root:
        raise ConfigError("no data folder: pass --data ROOT (or set data.root in --config)")
    return cfg.validate()


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on one category", epilog=EPILOG)
    p.add_argument("--data", help="category folder (MVTec AD layout, or see --format)")
    p.add_argument("--format", choices=["mvtec", "folder", "mvtec3d"], help="data layout")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, config.yaml, manifest")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="defaults to start from"
    )
    p.add_argument("--config", help="a YAML config, laid over --preset")
    p.add_argument(
        "--image-size",
        type=_image_size,
        metavar="SIZE",
        help="input size in pixels: 256 (square), HEIGHTxWIDTH like 448x192 (multiples of 32; "
        "64 for teachers of stride 32 such as efficientnet_lite0), or auto: the training images' "
        "aspect ratio at about 256 x 256 pixels (the cpu preset's default)",
    )
    p.add_argument("--modality", choices=["rgb", "depth", "rgbd"], help="MVTec 3D-AD input")
    p.add_argument("--shots", type=int, help="train on a seeded choice of this many normal images")
    p.add_argument("--real-anomalies", type=int, help="real anomalies per defect type to train on")
    p.add_argument(
        "--object-type", choices=["auto", "texture", "object"], help="synthesis placement"
    )
    p.add_argument(
        "--backbone",
        help="teacher: wide_resnet50_2, resnet18, efficientnet_lite0/1/2 or a timm CNN name",
    )
    p.add_argument("--weights", help="teacher weights: imagenet, none, or a state-dict file")
    p.add_argument("--epochs", type=int, help="stage-1 epochs")
    p.add_argument("--deviation-epochs", type=int, help="stage-2 epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast while training",
    )
    p.add_argument(
        "--cpam-fusion",
        choices=["gated", "literal"],
        help="CPAM fusion (literal: eq. 5 as written)",
    )
    p.add_argument(
        "--decoder-blocks", type=int, help="residual blocks per student stage (cpu 1, paper 2)"
    )
    p.add_argument("--no-cpam", action="store_true", help="basic decoder without CPAM")
    p.add_argument("--no-contrastive", action="store_true", help="stage 1 without the triplet loss")
    p.add_argument("--no-deviation", action="store_true", help="skip stage 2 (score = max of map)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    _add_field_flags(p)


def _add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the scorer through torch.compile: faster after a first batch that compiles "
        "(needs a C++ compiler on CPU; falls back with a warning)",
    )


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (inference batch sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score the test split; metrics.json, scores.csv, PNGs", epilog=EPILOG
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="train's --out run folder (any modality, rgbd included) or its checkpoint.pt",
    )
    p.add_argument("--data", help="category folder (default: the one trained on)")
    p.add_argument("--out", help="results folder (default: <run folder>/eval)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=_positive_int, help="images per forward pass")
    p.add_argument("--no-heatmaps", action="store_true", help="skip the per-image PNG panels")
    _add_compile(p)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="score new images: scores.csv and heat-map PNGs", epilog=EPILOG
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint.pt written by train, or its run folder")
    source.add_argument(
        "--model", help="model.onnx written by export (runs with onnxruntime, without torch)"
    )
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--device", default="auto", help="with --checkpoint: auto, cpu, cuda")
    p.add_argument("--batch-size", type=_positive_int, help="images per forward pass")
    _add_compile(p)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a checkpoint as one ONNX or TorchScript graph", epilog=EPILOG
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint.pt written by train, or its run folder"
    )
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", required=True, help="model file to write (metadata: same name .json)")
    p.add_argument("--weights", help="teacher weights override: imagenet, none or a file")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="offline end-to-end run on a built-in synthetic category", epilog=EPILOG
    )
    p.add_argument(
        "--out", default="runs/demo", help="folder for the data, the model and the results"
    )
    p.add_argument("--epochs", type=int, help="stage-1 epochs (default: the demo's own)")
    p.add_argument("--device", default="auto")


def _add_synth_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth-preview", help="a grid PNG of synthetic anomalies and their masks")
    p.add_argument("--data", required=True, help="category folder")
    p.add_argument("--format", choices=["mvtec", "folder", "mvtec3d"], default="mvtec")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--count", type=int, default=8)
    p.add_argument(
        "--image-size", type=_image_size, default=256, metavar="SIZE", help="256, 448x192 or auto"
    )
    p.add_argument("--object-type", choices=["auto", "texture", "object"], default="auto")
    p.add_argument("--seed", type=int, default=0)


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="train and evaluate every category x setup x modality; results tables and report",
        epilog=EPILOG,
    )
    p.add_argument("--data", required=True, help="data set folder (for folder: one category)")
    p.add_argument("--dataset", choices=["mvtec", "mvtec3d", "folder"], required=True)
    p.add_argument("--categories", default="all", help="all, or comma-separated category names")
    p.add_argument(
        "--setups",
        default="full,16shot",
        help="comma-separated: full or <k>shot, each optionally followed by -real<K> (K real "
        "anomalies per defect type) and -basic (the basic block only), e.g. full,full-basic",
    )
    p.add_argument(
        "--seeds", help="comma-separated training seeds, e.g. 0,1,2: every cell runs once per seed"
    )
    p.add_argument(
        "--modality",
        default="rgb",
        help="comma-separated: rgb, depth, rgbd (depth and rgbd: mvtec3d)",
    )
    p.add_argument("--out", required=True, help="benchmark folder; finished cells are skipped")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu", help="defaults to start from"
    )
    p.add_argument("--config", help="a YAML config, laid over --preset")
    p.add_argument("--epochs", type=int, help="stage-1 epochs")
    p.add_argument("--deviation-epochs", type=int, help="stage-2 epochs")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-heatmaps", action="store_true", help="skip the per-image PNG panels")
    p.add_argument(
        "--shard",
        default="0/1",
        help="K/N: run every N-th cell from K, to share the cells among N processes "
        "(one per GPU, say); a last run without --shard writes the tables",
    )
    _add_field_flags(p)


def _benchmark_config(args: argparse.Namespace) -> Config:
    """A benchmark's base config: preset -> YAML -> --epochs, --deviation-epochs, --device ->
    --section.key flags."""
    cfg = layered(args.preset, args.config, {})
    for section, key, value in (
        ("train", "epochs", args.epochs),
        ("deviation", "epochs", args.deviation_epochs),
        ("train", "device", args.device),
    ):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    return cfg.merged(_field_overrides(args))


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(item) for item in _split_list(text)]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise ConfigError(f"--seeds {text!r}: give seeds >= 0 separated by commas, e.g. 0,1,2")
    return seeds


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamese-ad",
        description="Anomaly detection and segmentation with a two-stage contrastive Siamese "
        "teacher-student U-Net.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_export,
        _add_demo,
        _add_synth_preview,
        _add_benchmark,
    ):
        add(sub)
    return parser


def _print_metrics(result: dict, out: Path) -> None:
    keys = ("image_auroc", "image_auroc_max", "image_auroc_deviation", "pixel_auroc", "aupro")
    for key in keys:
        value = result.get(key)
        print(f"{key:>22}: {'n/a' if value is None else f'{value:.4f}'}")
    print(f"results: {out} (metrics.json, scores.csv, heatmaps/)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "print_config", False):
        make = _config_from_args if args.command == "train" else _benchmark_config
        print(yaml.safe_dump(make(args).to_dict(), sort_keys=False), end="")
        return 0
    if args.command == "train":
        from siamese_ad.training.trainer import train

        ckpt = train(_config_from_args(args), args.out, resume=args.resume)
        print(f"checkpoint: {ckpt}")
    elif args.command == "evaluate":
        from siamese_ad.app.evaluate import default_out, evaluate

        out = Path(args.out) if args.out else default_out(args.checkpoint)
        result = evaluate(
            args.checkpoint,
            out,
            args.data,
            args.device,
            args.batch_size,
            not args.no_heatmaps,
            args.compile,
        )
        _print_metrics(result, out)
    elif args.command == "predict" and args.model:
        from siamese_ad.app.onnx_predict import predict_onnx

        rows = predict_onnx(args.model, args.inputs, args.out, args.batch_size)
        print(f"scored {len(rows)} images: {Path(args.out) / 'scores.csv'}")
    elif args.command == "predict":
        from siamese_ad.app.predict import predict

        rows = predict(
            args.checkpoint, args.inputs, args.out, args.device, args.batch_size, args.compile
        )
        print(f"scored {len(rows)} images: {Path(args.out) / 'scores.csv'}")
    elif args.command == "export":
        from siamese_ad.app.export import export_model, metadata_path

        path = export_model(args.checkpoint, args.out, args.format, args.weights)
        print(f"model: {path} (metadata: {metadata_path(path)})")
    elif args.command == "demo":
        from siamese_ad.app.demo import run_demo

        result, out = run_demo(args.out, epochs=args.epochs, device=args.device)
        _print_metrics(result, out)
    elif args.command == "benchmark":
        from siamese_ad.app.benchmark import parse_shard, run_benchmark

        categories = "all" if args.categories == "all" else _split_list(args.categories)
        rows = run_benchmark(
            args.data,
            args.dataset,
            categories,
            _split_list(args.setups),
            _split_list(args.modality),
            args.out,
            _benchmark_config(args),
            heatmaps=not args.no_heatmaps,
            shard=parse_shard(args.shard),
            seeds=_parse_seeds(args.seeds),
        )
        if any(row["category"] == "mean" for row in rows):
            out = Path(args.out) / "results.md"
            print(f"results: {out} ({len(rows)} rows), report.html beside it")
        else:
            print(f"{len(rows)} cells done; other shards are still running (see --shard)")
    elif args.command == "synth-preview":
        from siamese_ad.app.synth_preview import synth_preview

        path = synth_preview(
            args.data,
            args.format,
            args.out,
            args.count,
            args.image_size,
            args.object_type,
            args.seed,
        )
        print(f"preview: {path}")
    return 0


# OSErrors that come from the user's paths and environment, not from bugs in siamese-ad.
_USER_OS_ERRORS = (
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    FileNotFoundError,
)
_USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # disk full, over quota, read-only


def _is_user_os_error(err: OSError) -> bool:
    return isinstance(err, _USER_OS_ERRORS) or err.errno in _USER_ERRNOS


def _os_error_message(err: OSError) -> str:
    """One line naming the path(s) and what went wrong, e.g. "Permission denied: runs/x"."""
    if not err.strerror:
        return str(err)
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return f"{err.strerror}: {' -> '.join(paths)}" if paths else err.strerror


def _interrupted_message(command: str) -> str:
    """What Ctrl-C leaves behind: only train (and demo, benchmark, which train) can go on."""
    if command == "train":
        return "interrupted; the last finished epoch is in the checkpoint (--resume)"
    if command == "demo":
        return "interrupted; run the same demo command again to go on from the last finished epoch"
    if command == "benchmark":
        return "interrupted; finished cells are kept: run the same command again to do the rest"
    return "interrupted; run the command again to redo it"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, RuntimeError) as err:  # config, data, checkpoint and weights errors
        if isinstance(err, RuntimeError) and type(err).__name__ != "WeightsUnavailableError":
            raise
        print(f"siamese-ad {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unreadable, unwritable or missing user paths; a full disk
        if not _is_user_os_error(err):
            raise
        print(f"siamese-ad {args.command}: error: {_os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_message(args.command), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
