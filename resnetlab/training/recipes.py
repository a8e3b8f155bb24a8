"""Named training recipes: the paper's (§4.2 CIFAR, §3.4 ImageNet) and a fast one.

A recipe is a set of TrainConfig defaults. Schedules are in iterations; when the user
asks for a different length (``--iters`` or ``--epochs``), milestones and warm-up scale
proportionally, so ``--iters 6400`` of the paper recipe decays at 3200 and 4800.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig

# §4.2: lr 0.1, /10 at 32k and 48k, stop at 64k, batch 128, wd 1e-4, momentum 0.9,
# 45k/5k split, per-pixel mean, pad-4 crop + flip. Warm-up for 110+ layers (see apply).
_PAPER_CIFAR: dict[str, Any] = dict(
    iters=64_000,
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="step",
    milestones=[32_000, 48_000],
    warmup="none",
    val_size=5000,
    normalize="pixel",
)

RECIPES: dict[str, dict[str, Any]] = {
    "paper": _PAPER_CIFAR,
    # The §4.2 recipe for budgets far below 64k iterations: the same optimiser, data,
    # split and augmentation, but a linear warm-up over the first 10% and a linear decay
    # to zero replace the two /10 steps. Scaled down to a few thousand iterations, the
    # steps cut the lr while the deep nets are still in their unstable start at lr 0.1
    # (reports/degradation-paper-steps: resnet56 ended 20 points behind resnet20 that way).
    "paper-short": {
        **_PAPER_CIFAR,
        "schedule": "onecycle",
        "milestones": [],
        "warmup": "linear",
        "warmup_iters": 6_400,
    },
    # §3.4: batch 256, lr 0.1 /10 at plateaus (here the usual 30/60/90-epoch steps of
    # ImageNet's 1.28M images = 150k/300k/450k iterations), 600k iterations.
    "paper-imagenet": {
        **_PAPER_CIFAR,
        "iters": 600_000,
        "batch_size": 256,
        "milestones": [150_000, 300_000, 450_000],
        "val_size": 0,
    },
    # Fewest iterations to accuracy for the unchanged architecture (BENCHMARKS.md,
    # "Time to accuracy"): short linear warm-up to lr 0.3 then linear decay to zero,
    # Nesterov, label smoothing 0.1, translations of at most 1 pixel (at ~8 epochs the
    # §4.2 pad of 4 regularises more than it helps), Lookahead weight averaging, all 50k
    # training images, flip and shift averaged at test. Zero-initialised residual
    # branches measured worse here (BENCHMARKS.md).
    "fast": dict(
        iters=3_000,
        batch_size=128,
        lr=0.3,  # with label smoothing 0.1: BENCHMARKS.md, #16 (2026-12-04)
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="onecycle",
        milestones=[],
        warmup="linear",
        warmup_iters=180,
        label_smoothing=0.1,
        pad=1,
        flip="alternate",  # each image mirrored every other epoch (BENCHMARKS.md, #16)
        lookahead=5,  # weights pulled back to their running average (BENCHMARKS.md, #16)
        val_size=0,
        normalize="channel",
        tta_flip=True,
        tta_shift=1,
        eval_points=5,  # each evaluation: 6 views of the 10k test images
    ),
}

# The longer preset (#16): `fast` run twice as long, with the 2-pixel translations
# airbench94 uses at about 10 epochs (the longer the run, the more augmentation pays).
# BENCHMARKS.md states the best accuracy it reaches and at which iteration.
RECIPES["fast-long"] = {
    **RECIPES["fast"],
    "iters": 6_000,
    "warmup_iters": 360,
    "pad": 2,
    "eval_points": 6,  # every 1,000 iterations
    # measured with `fast` as it was then: without Lookahead, lr 0.2, label smoothing 0.2
    "lookahead": 0,
    "lr": 0.2,
    "label_smoothing": 0.2,
}


# Fine-tuning from trained weights (``--init``): a short linear warm-up, cosine decay,
# a pretrained part that moves 10x slower than the new head, all training images.
RECIPES["finetune"] = dict(
    iters=800,
    batch_size=128,
    lr=0.05,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-4,
    schedule="cosine",
    milestones=[],
    warmup="linear",
    warmup_iters=40,
    label_smoothing=0.1,
    backbone_lr_scale=0.1,
    val_size=0,
    normalize="channel",
    tta_flip=True,
    eval_points=4,
)


def recipe_defaults(name: str, model: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ResnetlabError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    defaults = dict(RECIPES[name])
    if name == "paper" and _depth(model) >= 110:
        # §4.2: for 110 layers, lr 0.01 until training error is below 80% (about 400
        # iterations), then back to 0.1.
        defaults["warmup"] = "paper"
    return defaults


def _depth(model: str) -> int:
    digits = "".join(c for c in model if c.isdigit())
    return int(digits) if digits else 0


def build_config(recipe: str, model: str, overrides: dict[str, Any]) -> TrainConfig:
    """Recipe defaults, rescaled to the requested length, then explicit overrides."""
    given = {k: v for k, v in overrides.items() if v is not None}
    base = TrainConfig(**{**recipe_defaults(recipe, model), "recipe": recipe, "model": model})
    length = given.pop("iters", base.iters)
    cfg = base.with_length(length, keep=set(given))
    cfg = dataclasses.replace(cfg, **given)
    cfg.validate()
    return cfg
