"""`train`: reads the data, builds the U-Net and runs stage 1 then stage 2, resumable per epoch."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; trainings are not guarded there
    fcntl = None  # type: ignore[assignment]

from siamese_ad.checkpoint import (
    CHECKPOINT,
    RGBD_MANIFEST,
    CheckpointError,
    TrainingState,
    load_model,
    load_trainable,
    read_checkpoint,
    save_checkpoint,
)
from siamese_ad.config import AUTO_SIZE, Config
from siamese_ad.data.dataset import ImageLoader, ImageSet, load_images, read_category
from siamese_ad.data.fit import pad_mask
from siamese_ad.data.images import fitted_image_size
from siamese_ad.data.modality import image_loader
from siamese_ad.data.sample import Sample
from siamese_ad.data.splits import MANIFEST, Split, make_split, record_sha256
from siamese_ad.data.synthesis import AnomalySynthesizer
from siamese_ad.device import select_device, to_device
from siamese_ad.io import atomic_write_text
from siamese_ad.models.teacher import input_multiple, resolve_stages
from siamese_ad.models.unet import TeacherStudentUNet, build_unet
from siamese_ad.scoring import IMAGE_SCORE_KEY, choose_image_score, trained_scoring
from siamese_ad.training import distributed
from siamese_ad.training.calibration import set_map_means, stage_map_means, stored_calibration
from siamese_ad.training.loop import STAGE_SALT, run_stage, schedule, seed_everything
from siamese_ad.training.multimodal import train_rgbd
from siamese_ad.training.pool import AnomalyPool
from siamese_ad.training.stage1 import Stage1Step
from siamese_ad.training.stage2 import (
    SNAPSHOT,
    Stage2Step,
    load_snapshot,
    normal_statistics,
    save_snapshot,
    set_statistics,
    stage2_pays,
)
from siamese_ad.training.teacher_cache import TeacherCache
from siamese_ad.training.validation import (
    DEFECTS_PREFIX,
    ValidationSet,
    make_validation_set,
    validation_metrics,
    yardstick_metrics,
)

FINAL_VALIDATION_KEY = "final_validation"  # the finished model's defects-yardstick metrics
STAGE1_VALIDATION_KEY = "stage1_validation"  # the same figures of the model before stage 2
STAGE2_KEPT_KEY = "stage2_kept"  # deviation.keep "auto": whether stage 2's weights were kept


def build_pool(normals: torch.Tensor, real: ImageSet | None, cfg: Config) -> AnomalyPool:
    """Makes `synthesis.pool_size` synthetic anomalies from the normal images, plus real ones.

    Anomaly k is blended into normal image k mod N; with the aligned stage-1 form the pool holds
    at least one anomaly of every normal image (N or more in all).
    """
    arrays = [img.permute(1, 2, 0).numpy() for img in normals]
    s = cfg.synthesis
    size = s.pool_size
    if cfg.contrastive.enabled and cfg.contrastive.form == "aligned":
        size = max(size, len(arrays))
    synth = AnomalySynthesizer.from_config(arrays, s, cfg.data.object_type)
    rng = np.random.default_rng(cfg.train.seed * 1_000_003 + STAGE_SALT["pool"])
    images, masks = [], []
    for k in tqdm(range(size), desc="synthesising anomalies", leave=False, unit="img"):
        image, mask = synth(k % len(arrays), rng)
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask))
    pool_images, pool_masks = torch.stack(images), torch.stack(masks)
    destinations = torch.arange(size) % len(arrays)
    if real is not None and len(real):
        pool_images = torch.cat([pool_images, real.images])
        real_masks = real.masks
        if cfg.data.fit == "pad" and real.originals is not None:  # masks on the padded input
            pairs = zip(real.masks.numpy(), real.originals.tolist(), strict=True)
            real_masks = torch.from_numpy(np.stack([pad_mask(m, (h, w)) for m, (h, w) in pairs]))
        pool_masks = torch.cat([pool_masks, real_masks])
        destinations = torch.cat([destinations, torch.full((len(real),), -1)])
    return AnomalyPool(pool_images, pool_masks, destinations)


def _adam(model: TeacherStudentUNet, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, betas=betas)


RESUMABLE_CHANGES = {"train.device"}
MIN_REFERENCE = 4


def _config_changes(saved: dict, wanted: dict) -> dict[str, tuple]:
    """Fields (section.key) whose saved and wanted values differ."""
    return {
        f"{section}.{key}": (saved.get(section, {}).get(key), value)
        for section, values in wanted.items()
        for key, value in values.items()
        if saved.get(section, {}).get(key) != value
    }


def _resume(path: Path, cfg: Config, manifest: dict, device: torch.device):
    payload = read_checkpoint(path)
    model, saved = load_model(payload, path, expect=cfg)
    changes = {  # `saved` holds the defaults of fields added after the checkpoint was written
        k: v
        for k, v in _config_changes(saved.to_dict(), cfg.to_dict()).items()
        if k not in RESUMABLE_CHANGES
    }
    if changes:
        raise CheckpointError(
            f"{path} was trained with other settings (checkpoint vs now: {changes}); resume "
            "with the same settings, or train into a new --out."
        )
    if payload["manifest"] != {k: manifest.get(k) for k in payload["manifest"]}:  # old: no sha256
        raise CheckpointError(
            f"{path} was trained on other images than this configuration selects; "
            "resume with the same data, --shots, --real-anomalies and --seed, or use a new --out."
        )
    raw = payload["state"]
    state = TrainingState(raw["stage"], raw["epoch"], list(raw["history"]))
    return model.to(device), state, payload["optimizer"]


@dataclass
class _Run:
    """One training run in progress: what its stages share."""

    cfg: Config
    ckpt: Path
    manifest: dict
    model: TeacherStudentUNet
    state: TrainingState
    normals: torch.Tensor
    validation: list[Sample]
    loader: ImageLoader
    pool: AnomalyPool | None
    device: torch.device
    validation_set: ValidationSet | None = None  # the blend yardstick: "val_*" in the history
    defects_set: ValidationSet | None = None  # the defects yardstick: "val_defects_*"
    cache: TeacherCache | None = None
    validation_images: ImageSet | None = None  # decoded once, by held_out() in _prepare
    extra: dict = field(default_factory=dict)  # the checkpoint's "extra": thresholds at the end

    def save(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        if distributed.is_main():
            save_checkpoint(
                self.ckpt, self.model, self.cfg, self.state, self.manifest, optimizer, self.extra
            )

    def held_out(self) -> ImageSet:
        """The validation images, decoded once for everything that reads them."""
        if self.validation_images is None:
            size = self.cfg.data.image_size
            self.validation_images = load_images(
                self.validation, size, self.loader, "validation images"
            )
        return self.validation_images

    def reference_normals(self) -> torch.Tensor:
        """(N, 3, H, W) uint8 normal images the deviation statistics come from: the validation
        images (held out of training) when there are at least MIN_REFERENCE, else the training
        images."""
        if len(self.validation) < MIN_REFERENCE:
            return self.normals
        return self.held_out().images

    def finish(self) -> None:
        """Marks training done and saves it with the per-stage map means (scoring.map_norm) of
        the reference normals, the image score "auto" resolves to, and the decision thresholds
        chosen on the held-out validation images (siamese_ad/thresholds.py; a run without them
        saves none), in that order: each scores with what the one before set."""
        self.state.stage = "done"
        cfg = self.cfg
        set_map_means(
            self.model, stage_map_means(self.model, self.reference_normals(), cfg, self.device)
        )
        final, restored = None, False
        if self.defects_set is not None and distributed.is_main():  # as each epoch's validation
            final = validation_metrics(
                self.model, self.defects_set, cfg, self.device, DEFECTS_PREFIX
            )
            final, restored = self.keep_or_restore(final)
            self.extra[FINAL_VALIDATION_KEY] = final
        if restored and cfg.scoring.image_score == "auto":
            choice = "max"  # stage 1's model: without stage 2 the image score is the max
            tqdm.write("image score: max (the stage-1 model is kept)")
        else:
            choice = self.auto_image_score(final)
        if choice is not None:
            self.extra[IMAGE_SCORE_KEY] = choice
            cfg = dataclasses.replace(cfg, scoring=trained_scoring(cfg.scoring, self.extra))
        if self.validation and distributed.is_main():
            self.extra.update(stored_calibration(self.model, self.held_out(), cfg, self.device))
        self.save()
        self.snapshot_path.unlink(missing_ok=True)

    @property
    def snapshot_path(self) -> Path:
        """Where deviation.keep "auto" keeps the stage-1 model while stage 2 trains."""
        return self.ckpt.parent / SNAPSHOT

    def snapshot_stage1(self, reference: torch.Tensor) -> None:
        """deviation.keep "auto", before stage 2's first epoch: scores the stage-1 model as it
        would score when finished (its map means set) on the defects yardstick and keeps it
        with those figures beside the checkpoint (a resumed stage 2 finds it there). The map
        means are put back afterwards, so stage 2's per-epoch figures stay the plain sum."""
        if self.cfg.deviation.keep != "auto" or self.defects_set is None:
            return
        if not distributed.is_main():
            return
        cfg, model = self.cfg, self.model
        before = model.stage_map_mean.clone()
        set_map_means(model, stage_map_means(model, reference, cfg, self.device))
        figures = validation_metrics(model, self.defects_set, cfg, self.device, DEFECTS_PREFIX)
        save_snapshot(self.snapshot_path, model, figures)
        set_map_means(model, before)

    def keep_or_restore(self, final: dict[str, float]) -> tuple[dict[str, float], bool]:
        """deviation.keep "auto", at the end: restores the stage-1 weights when the finished
        model's defects figures (`final`) fall below the stage-1 model's (stage2.stage2_pays);
        returns the figures of the model that is kept and whether stage 1 was restored."""
        path = self.snapshot_path
        if self.cfg.deviation.keep != "auto" or not path.exists():
            return final, False
        weights, before = load_snapshot(path)
        kept = stage2_pays(before, final, DEFECTS_PREFIX, self.cfg.scoring.image_score)
        self.extra[STAGE1_VALIDATION_KEY] = before
        self.extra[STAGE2_KEPT_KEY] = kept
        if kept:
            tqdm.write("stage 2 kept: it separates the defects yardstick at least as well")
            return final, False
        load_trainable(self.model, weights, path)
        tqdm.write("stage 2 undone: the stage-1 model separates the defects yardstick better")
        return before, True

    def auto_image_score(self, final: dict[str, float] | None = None) -> str | None:
        """For scoring.image_score "auto" after stage 2: "max" or "deviation", whichever the
        validation signal ranks first (scoring.choose_image_score) on the defects yardstick
        (defect families training never saw), else on the blend one; None when there is
        nothing to choose or no signal to choose by.

        `final`: the defects yardstick's metrics of the finished model, as it will score (map
        means set); without them the last epoch's history entry decides.
        """
        last = {**(self.state.history[-1] if self.state.history else {}), **(final or {})}
        if self.cfg.scoring.image_score != "auto":
            return None
        for prefix, name in ((DEFECTS_PREFIX, "defects"), ("val_", "blend")):
            keys = (f"{prefix}image_auroc_max", f"{prefix}image_auroc_deviation")
            if all(k in last for k in keys):
                choice = choose_image_score(*(last[k] for k in keys))
                tqdm.write(
                    f"image score: {choice} (validation image AUROC, {name} yardstick: max of "
                    f"the map {last[keys[0]]:.4f}, deviation {last[keys[1]]:.4f})"
                )
                return choice
        return None

    def run(self, stage: str, epochs: int, lr: float, step_type: type, optimizer_state) -> None:
        """Runs the unfinished epochs of `stage` with a fresh (or restored) Adam."""
        opt = _adam(self.model, lr, self.cfg.train.betas)
        if optimizer_state is not None:
            opt.load_state_dict(optimizer_state)
        step = step_type(
            self.model, opt, self.normals, self.pool, self.cfg, self.device, self.cache
        )
        bs, seed = self.cfg.train.batch_size, self.cfg.train.seed
        vset, dset = self.validation_set, self.defects_set
        validate = None
        if vset is not None:
            sets = {"val_": vset} | ({DEFECTS_PREFIX: dset} if dset is not None else {})

            def validate() -> dict[str, float]:
                return yardstick_metrics(self.model, sets, self.cfg, self.device)

        run_stage(
            stage,
            epochs,
            self.state,
            len(self.normals),
            bs,
            seed,
            step,
            lambda: self.save(opt),
            validate,
            schedule(opt, lr, self.cfg.train.lr_schedule),
        )


def _fit_image_size(cfg: Config, split: Split, resumed: Path | None) -> Config:
    """`cfg` with data.image_size "auto" replaced by the size fitted to the split's normal images
    (data/images.py), or by the size a resumed checkpoint was trained at (a run from before
    "auto" existed keeps its square input)."""
    if resumed is not None:
        size = read_checkpoint(resumed)["config"]["data"]["image_size"]
    else:
        normals = [s.image for s in (*split.train, *split.validation)]
        multiple = input_multiple(cfg.model.backbone, cfg.model.teacher_stages)
        size = fitted_image_size(normals, multiple)
        if distributed.is_main():
            shown = size if isinstance(size, int) else "x".join(map(str, size))
            tqdm.write(f"image size auto: {shown}, the aspect ratio of {len(normals)} images")
    return cfg.merged({"data": {"image_size": size}})


def _prepare(cfg: Config, out_dir: Path, resume: bool) -> tuple[_Run, dict | None]:
    """Reads the data, builds or restores the model, writes config and manifest, makes the pool."""
    ckpt = out_dir / CHECKPOINT
    if ckpt.exists() and not resume:
        raise CheckpointError(
            f"{ckpt} exists: pass --resume to continue it, or choose another --out"
        )
    seed_everything(cfg.train.seed)
    device = distributed.init_from_env(select_device(cfg.train.device))  # torchrun: rank's device
    data = read_category(cfg.data.root, cfg.data.format)
    split = make_split(
        data, cfg.data.shots, cfg.data.real_anomalies, cfg.train.seed, cfg.data.validation_fraction
    )
    record_sha256(split, data.root)  # evaluate leaves out renamed copies of these images
    if cfg.data.image_size == AUTO_SIZE:  # saved as fitted: evaluate and predict read it back
        cfg = _fit_image_size(cfg, split, ckpt if resume and ckpt.exists() else None)
    manifest = split.manifest.to_dict()
    loader = image_loader(cfg.data, out_dir)
    optimizer_state = None
    resumed = resume and ckpt.exists()
    if resumed:
        model, state, optimizer_state = _resume(ckpt, cfg, manifest, device)
    else:
        model, state = build_unet(cfg.model).to(device), TrainingState()
    if not (state.stage == "stage2" and state.epoch > 0):  # only a resumed stage 2 reads it
        (out_dir / SNAPSHOT).unlink(missing_ok=True)
    model.check_input_size(cfg.data.size_hw)  # before decoding a single image
    normals = load_images(split.train, cfg.data.image_size, loader, "training images").images
    if not resumed and cfg.model.feature_norm != "none":  # a resumed run has them stored
        chunks = normals.split(cfg.train.batch_size)
        model.fit_feature_norm(to_device(chunk, device, channels_last=False) for chunk in chunks)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = distributed.prepare_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        cfg.to_yaml(out_dir / "config.yaml")
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    pool = None
    if state.stage != "done" and (cfg.contrastive.enabled or cfg.deviation.enabled):
        real = None
        if split.anomalies:
            real = load_images(split.anomalies, cfg.data.image_size, loader, "real anomalies")
        pool = build_pool(normals, real, cfg)
    run = _Run(cfg, ckpt, manifest, model, state, normals, split.validation, loader, pool, device)
    if split.validation:  # decoded now: a bad file stops training before its first epoch
        run.held_out()
    if cfg.train.cache_teacher:
        run.cache = TeacherCache(
            model, device, cfg.train.bf16, cfg.train.channels_last, cfg.train.batch_size
        )
    if state.stage != "done" and len(split.validation) >= MIN_REFERENCE:
        # the defects set scores the finished model (the image-score rule) even when the
        # per-epoch signal (both yardsticks, run() reads validation_set) is off
        run.defects_set = make_validation_set(run.held_out().images, cfg, yardstick="defects")
        if cfg.train.track_validation:
            run.validation_set = make_validation_set(run.held_out().images, cfg)
    return run, optimizer_state


def as_trained(cfg: Config) -> Config:
    """`cfg` as `train` runs and saves it: the teacher's stages named (the backbone's default
    resolved, so a later change of that default does not change the run) and the data root
    absolute (so the run finds its data from any working folder)."""
    stages = resolve_stages(cfg.model.backbone, cfg.validate().model.teacher_stages)
    explicit: dict = {"model": {"teacher_stages": list(stages)}}
    if cfg.data.root:
        explicit["data"] = {"root": str(Path(cfg.data.root).resolve())}
    return cfg.merged(explicit)


def train(cfg: Config, out_dir: str | Path, resume: bool = False) -> Path:
    """Trains one category as `cfg` says; returns the checkpoint path.

    A checkpoint is written after every epoch; `resume=True` continues from it. The last one
    also holds the decision thresholds, chosen on the held-out validation images. With
    data.modality "rgbd" an RGB and a depth model are trained in out_dir/rgb and out_dir/depth
    (training/multimodal.py) and the returned path is the run's rgbd.json.
    """
    cfg = as_trained(cfg)
    with run_lock(Path(out_dir)):
        if cfg.data.modality == "rgbd":
            train_rgbd(cfg, out_dir, resume, train)
            return Path(out_dir) / RGBD_MANIFEST
        return _train_one(cfg, Path(out_dir), resume)


LOCK_FILE = ".training.lock"


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Holds an exclusive lock on out_dir/.training.lock while a training writes the folder, so
    a second training into the same --out stops at once with a clear error. Under torchrun only
    rank 0 (the writer) locks."""
    if os.environ.get("RANK", "0") != "0" or fcntl is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise CheckpointError(
                f"{out_dir} is being written by another training (it holds {path}); wait for "
                "it to finish, or choose another --out"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_one(cfg: Config, out_dir: Path, resume: bool) -> Path:
    """One modality's training into out_dir (train() holds the folder's lock)."""
    run, optimizer_state = _prepare(cfg, out_dir, resume)
    cfg = run.cfg  # with data.image_size as fitted
    state = run.state
    if state.stage == "stage1":
        run.run("stage1", cfg.train.epochs, cfg.train.lr, Stage1Step, optimizer_state)
        state.stage, state.epoch, optimizer_state = "stage2", 0, None
        if cfg.deviation.enabled and cfg.deviation.epochs:
            run.save()
        else:
            run.finish()
    if state.stage == "stage2":
        if state.epoch == 0:
            reference = run.reference_normals()
            set_statistics(run.model, *normal_statistics(run.model, reference, cfg, run.device))
            run.snapshot_stage1(reference)
        run.run("stage2", cfg.deviation.epochs, cfg.deviation.lr, Stage2Step, optimizer_state)
        run.finish()
    return run.ckpt
