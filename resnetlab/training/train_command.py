"""``resnetlab train``: one command from a dataset name to a run folder that explains itself."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from resnetlab.data.datasets import NAMED
from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import elastic_restart_count
from resnetlab.training.recipes import RECIPES, build_config
from resnetlab.training.run_folder import RunFolder

# flags that map 1:1 onto TrainConfig fields (dest == field name)
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# what --resume applies (the rest of a run's settings cannot change mid-run)
_RESUME_APPLIED = {
    "iters",
    "epochs",
    "stop_at",
    "log_every",
    "checkpoint_every",
    "device",
    "threads",
    "data_dir",
    "strict_data",
    "malloc_tuning",
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(text).name or text).strip("-").lower()


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields set on the command line, with lengths checked up front."""
    given = {k: v for k, v in vars(args).items() if k in _FIELDS and v is not None}
    for key in ("iters", "epochs"):
        if key in given and not given[key] > 0:
            raise ResnetlabError(f"--{key} must be > 0 (got {given[key]})")
    if "data" in given and given["data"] not in NAMED:
        if not Path(given["data"]).exists():
            raise ResnetlabError(
                f"no dataset at {given['data']} (a name: {', '.join(NAMED)}, or a folder)"
            )
        # a folder path works from any directory (resuming from elsewhere included)
        given["data"] = str(Path(given["data"]).resolve())
    if "init" in given:
        if not Path(given["init"]).is_file():
            raise ResnetlabError(f"--init weights not found: {given['init']}")
        given["init"] = str(Path(given["init"]).resolve())
    return given


def _resumed_config(out: Path, given: dict[str, Any]) -> TrainConfig:
    """The run's own config with what --resume may change applied; anything else that
    differs is refused in one line rather than silently dropped."""
    folder = RunFolder(out)
    if not folder.config.is_file():
        raise ResnetlabError(f"nothing to resume in {out}: no {folder.config.name} there")
    saved = TrainConfig.load(folder.config)
    refused = [
        f"--{k.replace('_', '-')} ({getattr(saved, k)!r} -> {v!r})"
        for k, v in given.items()
        if k not in _RESUME_APPLIED | {"out"} and not _same(k, getattr(saved, k), v)
    ]
    if refused:
        raise ResnetlabError(
            f"--resume continues {out} as configured and cannot change {', '.join(refused)}; "
            f"to train with other settings: resnetlab train --config {folder.config} --out NEW"
        )
    cfg = dataclasses.replace(saved, out=str(out), stop_at=given.get("stop_at", 0))
    for k in _RESUME_APPLIED - {"iters", "epochs", "stop_at"}:
        if k in given:
            setattr(cfg, k, given[k])
    if "iters" in given:
        cfg = dataclasses.replace(cfg.with_length(given["iters"]), epochs=0.0)
    return cfg


def _same(key: str, saved: Any, given: Any) -> bool:
    if key == "data" and saved != given:  # the same folder, written another way
        return bool(Path(saved).exists() and Path(saved).resolve() == Path(given).resolve())
    return bool(saved == given)


def _new_config(args: argparse.Namespace, given: dict[str, Any]) -> TrainConfig:
    if args.config:
        if "recipe" in given:
            raise ResnetlabError("--recipe cannot be combined with --config (it has its own)")
        base = dataclasses.replace(TrainConfig.load(Path(args.config)), out="", stop_at=0)
        length = given.pop("iters", base.iters)
        cfg = dataclasses.replace(base.with_length(length, keep=set(given)), **given)
    else:
        recipe = given.pop("recipe", None) or "paper"
        model = given.pop("model", None) or "resnet20"
        cfg = build_config(recipe, model, given)
    if not cfg.out:
        cfg.out = str(Path("runs") / f"{cfg.model}-{_slug(cfg.data)}-{cfg.recipe}")
    return cfg


def _apply_epochs(cfg: TrainConfig, given: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """--epochs becomes iterations once the training split's size is known; the dataset
    opened for that is handed on to the trainer."""
    if "epochs" not in given:
        return cfg, None
    from resnetlab.data import open_dataset

    bundle = open_dataset(
        cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
        strict=cfg.strict_data, image_size=cfg.image_size or None,
    )  # fmt: skip
    steps = len(bundle.train.labels) // cfg.batch_size
    if steps == 0:
        raise ResnetlabError(
            f"the training split has fewer images than one batch ({cfg.batch_size}); "
            "lower --batch-size"
        )
    iters = max(1, round(given["epochs"] * steps))
    return dataclasses.replace(
        cfg.with_length(iters, keep=set(given)), epochs=given["epochs"]
    ), bundle


def new_run_config(args: argparse.Namespace) -> TrainConfig:
    """The config a new run with these flags trains (``--epochs`` not yet turned into
    iterations, which needs the data); ``sweep`` checks its variants with it."""
    return _new_config(args, dict(_given(args)))


def run(args: argparse.Namespace) -> int:
    from resnetlab.training.launch import describe, in_process_group, resolve_layout, train_workers
    from resnetlab.training.loop import train

    given = _given(args)
    resume = bool(args.resume)
    if resume:
        if not args.out:
            raise ResnetlabError("--resume needs --out RUN_DIR (the run to continue)")
        cfg = _resumed_config(Path(args.out), given)
    else:
        cfg = _new_config(args, dict(given))
        if elastic_restart_count() and RunFolder(cfg.out).config.is_file():
            # torchrun --max-restarts restarted the group: continue, as --resume would
            print(f"restart {elastic_restart_count()} of this torchrun job: resuming {cfg.out}")
            cfg, resume = _resumed_config(Path(cfg.out), given), True
    cfg.validate()
    folder = RunFolder(cfg.out)
    folder.check_writable()
    if not resume and folder.holds_run():
        raise ResnetlabError(
            f"{folder.path} already holds a run; continue it with --resume or choose another --out"
        )
    cfg, bundle = _apply_epochs(cfg, given)
    cfg, why = resolve_layout(cfg, bundle)
    if cfg.procs > 1 and not in_process_group():
        print(f"process layout: {why}: {describe(cfg)}", flush=True)
        return train_workers(cfg, resume)
    if why:
        print(f"process layout: {why}", flush=True)
    result = train(cfg, resume=resume, bundle=bundle)
    report(result)
    return 3 if result.stopped_by_signal else 0


def report(result: Any) -> None:
    """The last lines of a run: its score and where it is."""
    if result.test is not None:
        t = result.test
        print(
            f"test accuracy: {100 * t.top1_acc:.2f}% (top-5 {100 * t.top5_acc:.2f}%) "
            f"on {t.n} images"
        )
    elif result.val is not None:
        print(f"validation accuracy: {100 * result.val.top1_acc:.2f}% on {result.val.n} images")
    print(f"run folder: {result.run_dir}")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--model", help="model preset (see 'resnetlab models'); default resnet20")
    a("--data", help="cifar10 | cifar100 | cifar100-coarse | fashion-mnist | PATH to class folders")
    a("--data-dir", help="where datasets are looked up/downloaded ($RESNETLAB_DATA)")
    a(
        "--recipe",
        choices=sorted(RECIPES),
        help="paper (default) | paper-short | paper-imagenet | fast | finetune",
    )
    a("--config", help="start from a run's config.json (reproduce a run)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help="iterations (the schedule scales to fit)")
    length.add_argument("--epochs", type=float, help="epochs over the training split")
    a("--batch-size", type=int)
    a("--lr", type=float, help="base learning rate")
    a("--momentum", type=float)
    a("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    a("--weight-decay", type=float)
    a(
        "--norm-weight-decay",
        type=float,
        help="weight decay of BN scales/shifts and biases (default: --weight-decay's)",
    )
    a("--schedule", choices=["step", "cosine", "linear", "onecycle"])
    a("--milestones", type=int, nargs="*", help="lr steps (iterations) for --schedule step")
    a("--lr-decay", type=float, help="factor at each milestone (0.1)")
    a("--warmup", choices=["none", "paper", "linear"])
    a("--warmup-iters", type=int)
    a("--label-smoothing", type=float)
    a(
        "--logit-scale",
        type=float,
        help="the training loss sees the logits times this (a softmax temperature; "
        "predictions are unchanged; default 1)",
    )
    a(
        "--lookahead",
        type=int,
        metavar="N",
        help="every N iterations, pull the weights back to their running average "
        "(Lookahead with airbench's decay schedule; 0: off)",
    )
    a(
        "--stem-init",
        choices=["he", "pca"],
        help="the stem's starting filters: he (§3.4) or pca (+/- the leading principal "
        "components of the training patches, at He's norm)",
    )
    a("--accum-steps", type=int, help="split each batch into micro-batches (same as DDP ranks)")
    a(
        "--sync-bn",
        action="store_true",
        default=None,
        help="DDP on CUDA: BN over the global batch (default: over each process's B/W images)",
    )
    a("--val-size", type=int, help="images held out of train for validation (paper: 5000)")
    a("--normalize", choices=["pixel", "channel"])
    a("--augment", action=argparse.BooleanOptionalAction, default=None)
    a("--pad", type=int, help="small images: pixels padded on each side before the random crop")
    a(
        "--flip",
        choices=["random", "alternate"],
        help="small images: mirror at random (§4.2) or each image every other epoch",
    )
    a(
        "--train-crop",
        choices=["scale", "rrc"],
        help="large images: scale (§3.4, shorter side 256-480 + 224 crop + PCA colour) or "
        "rrc (random-resized crop)",
    )
    a("--image-size", type=int, help="large images: crop side (default 224)")
    a(
        "--strict-data",
        action="store_true",
        default=None,
        help="stop at the first unreadable image (default: skip it with a counted warning)",
    )
    a("--shortcut", choices=["A", "B", "C", "none"], help="override the preset's shortcut")
    a("--zero-init-residual", action="store_true", default=None)
    a("--stride-in", choices=["1x1", "3x3"], help="bottleneck stride: 1x1 (paper) or 3x3")
    a("--width", type=int, help="channels of the first stage (preset: 16 CIFAR, 64 ImageNet)")
    a("--zero-pad", choices=["end", "both"], help="option A's zero channels (akamaster: both)")
    a(
        "--init",
        help="start from weights: .safetensors, a training checkpoint, a torchvision-layout "
        ".pth or an akamaster .th (the classifier is replaced if the class count differs)",
    )
    a("--freeze", type=int, help="freeze the stem and the first N stages (their BN too)")
    a("--backbone-lr-scale", type=float, help="lr of the pretrained part / lr of the head")
    a("--tta-flip", action=argparse.BooleanOptionalAction, default=None)
    a("--tta-shift", type=int, help="test: also average over images moved by N pixels")
    a("--eval-every", type=int, help="iterations between evaluations")
    a("--eval-points", type=int, help="evaluations over the run when --eval-every is unset")
    a("--checkpoint-every", type=int)
    a("--log-every", type=int, help="plain log lines every N iterations instead of a bar")
    a("--out", help="run folder (default runs/MODEL-DATA-RECIPE)")
    a("--device", help="auto | cpu | cuda | cuda:N")
    a("--threads", type=int, help="CPU threads (default: all cores)")
    a(
        "--procs",
        type=int,
        help="CPU training processes, one thread each, DDP (default: one per core when the "
        "images are in memory, else 1; $RESNETLAB_PROCS)",
    )
    a("--compile", choices=["auto", "on", "off"])
    a("--channels-last", choices=["auto", "on", "off"])
    a("--amp", choices=["auto", "off", "bf16", "fp16"])
    a(
        "--malloc-tuning",
        choices=["auto", "on", "off"],
        help="keep freed memory in glibc malloc (auto: on for CPU)",
    )
    a("--seed", type=int)
    a("--stop-at", type=int, help="stop resumably after this iteration")
    a("--resume", action="store_true", help="continue the run in --out from checkpoints/last.pt")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (paper or fast recipe)",
        description="Train a ResNet. Every flag overrides the recipe.",
    )
    add_train_arguments(p)
    p.set_defaults(func=run)
