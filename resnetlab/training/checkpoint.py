"""Training checkpoints: atomic writes, safe reads (``weights_only=True``).

A checkpoint is a plain dict of tensors, numbers and strings, so it loads without
unpickling arbitrary objects:

    format, format_version, model_config, model (state dict), meta (classes,
    preprocessing, recipe, metrics), optimizer, iteration, warmup_done_at,
    best_val_error, rng
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from resnetlab.errors import CheckpointError

FORMAT = "resnetlab-checkpoint"
FORMAT_VERSION = 1


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk mid-write leaves the previous file intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint without executing code from it."""
    from resnetlab.interop.safe_load import safe_torch_load

    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnetlab training checkpoint")
    return ckpt
