"""``resnetlab train``: one command from a dataset name to a run folder that explains itself."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig
from resnetlab.training.recipes import RECIPES, build_config

# flags that map 1:1 onto TrainConfig fields (dest == field name)
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# what may change when resuming a run (the rest comes from its config.json)
_RESUME_OVERRIDES = {
    "iters",
    "stop_at",
    "log_every",
    "device",
    "threads",
    "data_dir",
    "malloc_tuning",
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(text).name or text).strip("-").lower()


def run(args: argparse.Namespace) -> int:
    from resnetlab.training.loop import train

    given = {k: v for k, v in vars(args).items() if k in _FIELDS and v is not None}
    if args.resume:
        if not args.out:
            raise ResnetlabError("--resume needs --out RUN_DIR (the run to continue)")
        cfg = TrainConfig.load(Path(args.out) / "config.json")
        for k, v in given.items():
            if k in _RESUME_OVERRIDES:
                setattr(cfg, k, v)
        if not (Path(args.out) / "checkpoints" / "last.pt").exists():
            raise ResnetlabError(f"nothing to resume in {args.out}: no checkpoints/last.pt")
        result = train(cfg, resume=True)
    else:
        if args.config:
            base = TrainConfig.load(Path(args.config)).to_dict()
            base.update(given)
            given = base
        recipe = given.pop("recipe", None) or "paper"
        model = given.pop("model", None) or "resnet20"
        bundle = None
        if args.epochs:
            from resnetlab.data import open_dataset

            probe = build_config(recipe, model, given)
            bundle = open_dataset(
                probe.data,
                data_dir=probe.data_dir,
                val_size=probe.val_size,
                seed=probe.seed,
                strict=probe.strict_data,
            )
            steps = len(bundle.train.labels) // probe.batch_size
            given["iters"] = max(1, round(args.epochs * steps))
        cfg = build_config(recipe, model, given)
        if not cfg.out:
            cfg.out = str(Path("runs") / f"{cfg.model}-{_slug(cfg.data)}-{cfg.recipe}")
        out = Path(cfg.out)
        if (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
            raise ResnetlabError(
                f"{out} already holds a run; continue it with --resume or choose another --out"
            )
        result = train(cfg, bundle=bundle)
    if result.test is not None:
        t = result.test
        print(
            f"test accuracy: {100 * t.top1_acc:.2f}% (top-5 {100 * t.top5_acc:.2f}%) "
            f"on {t.n} images"
        )
    elif result.val is not None:
        print(f"validation accuracy: {100 * result.val.top1_acc:.2f}% on {result.val.n} images")
    print(f"run folder: {result.run_dir}")
    return 0 if result.finished or args.stop_at else 3


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--model", help="model preset (see 'resnetlab models'); default resnet20")
    a("--data", help="cifar10 | cifar100 | cifar100-coarse | fashion-mnist | PATH to class folders")
    a("--data-dir", help="where datasets are looked up/downloaded ($RESNETLAB_DATA)")
    a(
        "--recipe",
        choices=sorted(RECIPES),
        help="paper (default) | paper-short | paper-imagenet | fast",
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
    a("--schedule", choices=["step", "cosine", "linear", "onecycle"])
    a("--milestones", type=int, nargs="*", help="lr steps (iterations) for --schedule step")
    a("--lr-decay", type=float, help="factor at each milestone (0.1)")
    a("--warmup", choices=["none", "paper", "linear"])
    a("--warmup-iters", type=int)
    a("--label-smoothing", type=float)
    a("--accum-steps", type=int, help="split each batch into micro-batches (same as DDP ranks)")
    a("--val-size", type=int, help="images held out of train for validation (paper: 5000)")
    a("--normalize", choices=["pixel", "channel"])
    a("--augment", action=argparse.BooleanOptionalAction, default=None)
    a(
        "--strict-data",
        action="store_true",
        default=None,
        help="stop at the first unreadable image (default: skip it with a counted warning)",
    )
    a("--shortcut", choices=["A", "B", "C", "none"], help="override the preset's shortcut")
    a("--zero-init-residual", action="store_true", default=None)
    a("--tta-flip", action=argparse.BooleanOptionalAction, default=None)
    a("--eval-every", type=int, help="iterations between evaluations")
    a("--eval-points", type=int, help="evaluations over the run when --eval-every is unset")
    a("--checkpoint-every", type=int)
    a("--log-every", type=int, help="plain log lines every N iterations instead of a bar")
    a("--out", help="run folder (default runs/MODEL-DATA-RECIPE)")
    a("--device", help="auto | cpu | cuda | cuda:N")
    a("--threads", type=int, help="CPU threads (default: all cores)")
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
