"""Training checkpoints: the whole TrainState in one file, written atomically, read safely.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``weights_only=True`` and never unpickles arbitrary objects:

    format, format_version, model_config, meta (classes, preprocessing, recipe,
    metrics), and TrainState.state_dict(): model, optimizer, iteration,
    steps_per_epoch, warmup_done_at, train_error_ema, interval, best_val_error,
    images_seen, choices, rng

Version 1 files (before the TrainState) lack the last six state keys and still resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import write_atomic
from resnetlab.errors import CheckpointError

FORMAT = "resnetlab-checkpoint"
FORMAT_VERSION = 1  # readers accept files with extra keys; bump only for breaking changes


def save_checkpoint(
    path: Path, state: dict[str, Any], model_config: dict[str, Any], meta: dict[str, Any]
) -> None:
    """``state`` is a TrainState.state_dict(); the header makes the file self-describing."""
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model_config,
        "meta": meta,
        **state,
    }
    write_atomic(path, lambda f: torch.save(doc, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint without executing code from it."""
    from resnetlab.interop.safe_load import safe_torch_load

    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnetlab training checkpoint")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: checkpoint has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format is newer than this resnetlab")
    for key in ("model", "optimizer", "iteration"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return ckpt
