"""The training configuration: one dataclass, saved as config.json in every run folder.

A run is reproduced by ``resnetlab train --config runs/NAME/config.json`` (or resumed
with ``--resume``). Recipes (recipes.py) fill these fields; every flag overrides them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnetlab.errors import ResnetlabError

SCHEDULES = ("step", "cosine", "linear", "onecycle")
WARMUPS = ("none", "paper", "linear")


@dataclass
class TrainConfig:
    # what
    model: str = "resnet20"
    data: str = "cifar10"
    data_dir: str | None = None
    recipe: str = "paper"
    # model overrides of the preset (resnetlab.create_model's)
    shortcut: str | None = None  # A | B | C | none
    zero_init_residual: bool = False
    stride_in: str | None = None  # 1x1 (the paper's bottleneck) | 3x3 (torchvision's)
    width: int | None = None  # first stage's channels
    zero_pad: str | None = None  # option A's zero channels: end | both (akamaster's)
    # fine-tuning: start from weights; freeze the stem and the first N stages (-1: none)
    init: str = ""
    freeze: int = -1
    backbone_lr_scale: float = 1.0  # lr of the pretrained part relative to the head's
    # optimisation (§4.2: SGD, momentum 0.9, wd 1e-4, lr 0.1, batch 128)
    iters: int = 64_000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    norm_weight_decay: float | None = None  # BN scales/shifts and biases (None: weight_decay)
    schedule: str = "step"  # step | cosine | linear | onecycle
    milestones: list[int] = field(default_factory=lambda: [32_000, 48_000])  # iterations
    lr_decay: float = 0.1
    warmup: str = "none"  # none | paper (lr x0.1 until train error < 80%, §4.2) | linear
    warmup_iters: int = 0  # linear warm-up length; for "paper", a cap (0: none)
    label_smoothing: float = 0.0
    logit_scale: float = 1.0  # the training loss sees logits x this (a softmax temperature)
    lookahead: int = 0  # every N iterations, weights pulled back to their average (0: off)
    stem_init: str = "he"  # he (§3.4) | pca (stem filters on the patches' principal axes)
    accum_steps: int = 1  # micro-batches per step (DDP-equivalent BN statistics)
    sync_bn: bool = False  # DDP on CUDA: BN statistics over the global batch (SyncBatchNorm)
    # data
    val_size: int = 5000  # held out of train for model selection (§4.2: 45k/5k)
    normalize: str = "pixel"  # pixel (the paper's mean image) | channel (mean/std)
    augment: bool = True
    pad: int = 4  # §4.2: 4 pixels padded on each side, then a random crop (small images)
    flip: str = "random"  # small images: random (§4.2) | alternate (each image every other epoch)
    train_crop: str = "scale"  # large images: scale (§3.4: shorter side 256-480, 224 crop,
    # flip, PCA colour) | rrc (random-resized crop + flip, the common modern choice)
    image_size: int = 0  # large images: crop side (0: 224, §3.4); in-memory sets keep theirs
    strict_data: bool = False  # fail on an unreadable image instead of skipping it
    # evaluation and output
    eval_every: int = 0  # iterations; 0: `eval_points` evaluations over the run
    eval_points: int = 40  # for curves like Fig. 6; fewer where evaluation time matters
    checkpoint_every: int = 0  # iterations; 0: same as eval_every
    log_every: int = 0  # plain log lines every N iterations (0: progress bar on a TTY)
    tta_flip: bool = False  # average logits with the flipped image at test
    tta_shift: int = 0  # also average over copies moved diagonally by this many pixels
    out: str = ""
    # machine
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads (0: all cores of this process)
    procs: int = 0  # CPU training processes, DDP with one thread each (0: auto, launch.py)
    compile: str = "auto"  # auto | on | off
    channels_last: str = "auto"  # auto | on | off
    malloc_tuning: str = "auto"  # auto (on for CPU) | on | off: keep freed memory (glibc)
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16
    seed: int = 0
    epochs: float = 0.0  # if > 0, the length in epochs (iters is derived from it)
    stop_at: int = 0  # stop (resumably) after this iteration; the schedule still spans `iters`

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ResnetlabError(f"unknown training config keys: {unknown}")
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            doc = json.loads(Path(path).read_text())
            train = dict(doc["train"])
            if "procs" not in train:  # written before --procs: its layout was recorded
                train["procs"] = int(doc.get("environment", {}).get("world_size", 1) or 1)
            return cls.from_dict(train)
        except FileNotFoundError:
            raise ResnetlabError(f"no config at {path}") from None
        except (KeyError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
            raise ResnetlabError(f"bad config file {path}: {e}") from None

    def with_length(self, iters: int, keep: frozenset[str] | set[str] = frozenset()) -> TrainConfig:
        """The same run at another length: step milestones and the linear warm-up scale
        with it (``--iters 6400`` of the paper recipe decays at 3200 and 4800), whether
        the length comes from a recipe, ``--config``, ``--epochs`` or a resume. Fields
        named in ``keep`` were given explicitly and stay as they are."""
        if iters <= 0:
            raise ResnetlabError(f"iters must be > 0 (got {iters})")
        new = dataclasses.replace(self, iters=iters, milestones=list(self.milestones))
        if iters != self.iters:
            scale = iters / self.iters
            if "milestones" not in keep:
                new.milestones = [max(1, round(m * scale)) for m in self.milestones]
            if self.warmup == "linear" and "warmup_iters" not in keep:
                new.warmup_iters = max(1, round(self.warmup_iters * scale))
        return new

    def validate(self) -> None:
        """One-line errors for values no run can use (checked before any data is read)."""
        from resnetlab.models import PRESETS

        checks: list[tuple[Any, str]] = [
            (
                lambda: self.model in PRESETS,
                f"unknown model {self.model!r}; see 'resnetlab models'",
            ),
            (lambda: self.iters > 0, "iters must be > 0"),
            (lambda: self.batch_size > 0, "batch size must be > 0"),
            (lambda: math.isfinite(self.lr) and self.lr > 0, "lr must be > 0"),
            (lambda: 0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (lambda: self.weight_decay >= 0, "weight decay must be >= 0"),
            (lambda: self.lr_decay > 0, "lr-decay must be > 0"),
            (lambda: self.accum_steps >= 1, "accum-steps must be >= 1"),
            (
                lambda: self.batch_size % self.accum_steps == 0,
                f"batch size {self.batch_size} must divide by accum-steps {self.accum_steps}",
            ),
            (lambda: all(m > 0 for m in self.milestones), "milestones must be > 0"),
            (lambda: self.warmup_iters >= 0, "warmup-iters must be >= 0"),
            (
                lambda: self.warmup != "linear" or self.warmup_iters > 0,
                "a linear warm-up needs warmup-iters > 0",
            ),
            (lambda: self.eval_every >= 0, "eval-every must be >= 0 (0: use eval-points)"),
            (lambda: self.eval_points >= 1, "eval-points must be >= 1"),
            (lambda: self.checkpoint_every >= 0, "checkpoint-every must be >= 0"),
            (lambda: self.log_every >= 0, "log-every must be >= 0"),
            (lambda: self.threads >= 0, "threads must be >= 0 (0: all cores)"),
            (lambda: 0 <= self.procs <= 1024, "procs must be 0 (auto) .. 1024"),
            (lambda: self.stop_at >= 0, "stop-at must be >= 0"),
            (lambda: 0 <= self.tta_shift <= 8, "tta-shift must be 0..8 pixels"),
            (lambda: 0 <= self.pad <= 16, "pad must be 0..16 pixels"),
            (lambda: self.flip in ("random", "alternate"), "flip must be random or alternate"),
            (lambda: self.freeze >= -1, "freeze must be >= 0 (stages after the stem)"),
            (lambda: self.backbone_lr_scale >= 0, "backbone-lr-scale must be >= 0"),
            (
                lambda: self.norm_weight_decay is None or self.norm_weight_decay >= 0,
                "norm-weight-decay must be >= 0",
            ),
            (lambda: self.stride_in in (None, "1x1", "3x3"), "stride-in must be 1x1 or 3x3"),
            (lambda: self.zero_pad in (None, "end", "both"), "zero-pad must be end or both"),
            (lambda: self.width is None or 1 <= self.width <= 8192, "width must be 1..8192"),
            (lambda: self.epochs >= 0, "epochs must be > 0"),
            (lambda: self.val_size >= 0, "val-size must be >= 0"),
            (lambda: self.train_crop in ("scale", "rrc"), "train-crop must be scale or rrc"),
            (lambda: 0 <= self.image_size <= 4096, "image-size must be 1..4096"),
            (lambda: self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (lambda: self.warmup in WARMUPS, f"warmup must be one of {WARMUPS}"),
            (lambda: self.normalize in ("pixel", "channel"), "normalize must be pixel or channel"),
            (lambda: 0.0 <= self.label_smoothing < 1.0, "label smoothing must be in [0, 1)"),
            (lambda: 0.0 < self.logit_scale <= 100.0, "logit-scale must be in (0, 100]"),
            (lambda: self.lookahead >= 0, "lookahead must be >= 0 (0: off)"),
            (lambda: self.stem_init in ("he", "pca"), "stem-init must be he or pca"),
            (
                lambda: not (self.init and self.stem_init == "pca"),
                "--stem-init pca starts a model from scratch; --init gives it all its weights",
            ),
            (
                lambda: self.shortcut in (None, "A", "B", "C", "none"),
                "shortcut must be A, B, C or none",
            ),
            (
                lambda: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device),
                f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N",
            ),
            (
                lambda: self.amp in ("auto", "off", "bf16", "fp16"),
                "amp must be auto, off, bf16 or fp16",
            ),
        ]
        checks += [
            (
                lambda k=key: getattr(self, k) in ("auto", "on", "off"),
                f"{key} must be auto, on or off",
            )
            for key in ("compile", "channels_last", "malloc_tuning")
        ]
        for ok, msg in checks:
            try:
                passed = bool(ok())
            except (TypeError, ValueError):  # wrong types from a hand-edited config.json
                passed = False
            if not passed:
                raise ResnetlabError(msg)


# What makes two runs one setting; the rest (output folder, device, threads, speed
# settings, logging) may differ between an interrupted run and its resumption. The
# process layout is part of it: each process normalises BN over its own batch/procs
# images (launch.py), so procs changes what BN sees.
SETTING_FIELDS = (
    "model", "data", "recipe", "shortcut", "zero_init_residual", "iters", "batch_size",
    "lr", "momentum", "nesterov", "weight_decay", "schedule", "milestones", "lr_decay",
    "warmup", "warmup_iters", "label_smoothing", "logit_scale", "accum_steps", "procs",
    "sync_bn", "val_size", "normalize", "augment", "eval_every", "eval_points", "tta_flip",
    "tta_shift", "pad", "flip", "norm_weight_decay", "lookahead", "stem_init", "seed",
)  # fmt: skip


def setting_differences(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    """'field saved -> wanted' for each setting field in which a trained run (``saved``)
    differs from the one asked for. A recipe's defaults can change between versions, so
    the same flags do not always mean the same setting. ``procs`` 0 (auto: chosen at
    launch) matches any saved layout."""
    diffs = []
    for key in SETTING_FIELDS:
        old, new = getattr(saved, key), getattr(wanted, key)
        if (
            old == new
            or (key == "procs" and new == 0)
            or (key == "data" and _same_folder(old, new))
        ):
            continue
        text = f"{key} {old!r} -> {new!r}"
        if key == "procs":
            per = [c.batch_size // (max(c.procs, 1) * c.accum_steps) for c in (saved, wanted)]
            text += f", BN over {per[0]} -> {per[1]} images per process"
        diffs.append(text)
    return diffs


def _same_folder(a: str, b: str) -> bool:
    """The same data folder, written another way."""
    pa, pb = Path(str(a)), Path(str(b))
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
