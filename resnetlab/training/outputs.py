"""What a run writes besides checkpoints and metrics: config.json at the start;
results.json, curves.png and model.safetensors when it finishes."""

from __future__ import annotations

import json
import platform
from typing import Any

import torch

import resnetlab
from resnetlab.atomic import write_text_atomic
from resnetlab.runtime import cpu_info, openmp_settings
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import DistInfo
from resnetlab.training.run_folder import RunFolder


def launcher() -> str:
    """Who started this process group: resnetlab's own workers, torchrun, or nobody."""
    from resnetlab.training.launch import in_process_group, launched

    return "resnetlab" if launched() else "torchrun" if in_process_group() else "none"


def write_run_config(
    folder: RunFolder,
    cfg: TrainConfig,
    model_cfg: dict[str, Any],
    bundle: Any,
    pre: dict[str, Any],
    choices: dict[str, Any],
    dist_info: DistInfo,
    device: torch.device,
) -> None:
    """Enough to rerun: ``resnetlab train --config RUN/config.json --out NEW``. A run
    resumed on another machine keeps the environments it ran in before."""

    def count(split: Any) -> int | None:
        return len(split.labels) if split is not None and hasattr(split, "labels") else None

    doc: dict[str, Any] = {
        "train": cfg.to_dict(),
        "model": model_cfg,
        "data": {
            "name": bundle.name,
            "classes": list(bundle.classes),
            "train_images": count(bundle.train),
            "val_images": count(bundle.val),
            "test_images": count(bundle.test),
            "preprocessing": {k: v for k, v in pre.items() if k != "mean"},
        },
        "environment": {
            "resnetlab": resnetlab.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": cpu_info(),
            "accelerator": accelerator_info(device),
            "threads": torch.get_num_threads(),
            "world_size": dist_info.world_size,
            "backend": dist_info.backend,
            "launcher": launcher(),
            "openmp": openmp_settings(),
            "batch_norm": (
                "synchronized over all processes (SyncBatchNorm)"
                if cfg.sync_bn and dist_info.enabled
                else f"per process, over {cfg.batch_size // (dist_info.world_size * cfg.accum_steps)} images"
            ),
            "choices": choices,
        },
    }
    before = earlier_environments(folder, doc["environment"])
    if before:
        doc["environments_before"] = before
    write_text_atomic(folder.config, json.dumps(doc, indent=2) + "\n")


def accelerator_info(device: torch.device) -> dict[str, Any] | None:
    """The GPU a run computes on (None on the CPU), with the precision of its fp32
    convolutions: ``ieee`` (``--amp off``) or ``tf32``."""
    from resnetlab.training.speed import tf32_allowed

    if device.type != "cuda":
        return None
    precision = "tf32" if tf32_allowed() else "ieee"
    return {"name": torch.cuda.get_device_name(device), "conv_fp32": precision}


_MACHINE_KEYS = ("torch", "cpu", "accelerator")


def earlier_environments(folder: RunFolder, env: dict[str, Any]) -> list[dict[str, Any]]:
    """The environments recorded by the run's earlier parts, the one before this start
    added when its machine differs (a report then names every machine a run used)."""
    try:
        old = json.loads(folder.config.read_text())
    except (OSError, ValueError):
        return []
    before = [e for e in old.get("environments_before", []) if isinstance(e, dict)]
    previous = old.get("environment")
    if isinstance(previous, dict) and any(previous.get(k) != env.get(k) for k in _MACHINE_KEYS):
        before.append(previous)
    return before


def write_results(folder: RunFolder, result: Any) -> None:
    doc: dict[str, Any] = {
        "iteration": result.iteration,
        "checkpoint": str(result.checkpoint.relative_to(folder.path))
        if result.checkpoint
        else None,
    }
    if result.train_seconds is not None:
        doc["train_seconds"] = round(result.train_seconds, 1)
    for name in ("val", "test"):
        r = getattr(result, name)
        if r is not None:
            doc[name] = {"top1_acc": r.top1_acc, "top5_acc": r.top5_acc, "loss": r.loss, "n": r.n}
    write_text_atomic(folder.results, json.dumps(doc, indent=2) + "\n")


def plot_run_curves(folder: RunFolder, label: str, title: str) -> None:
    from resnetlab.training.metrics import plot_curves, read_metrics

    plot_curves({label: read_metrics(folder.metrics)}, folder.curves, title=title)


def export_weights(folder: RunFolder, model: Any, meta: dict[str, Any], test: Any) -> None:
    """Final weights in our portable format (safetensors + metadata)."""
    from resnetlab.interop.weights import save_weights
    from resnetlab.training import speed

    save_weights(
        folder.weights,
        speed.set_memory_format(model, False),  # type: ignore[arg-type]
        classes=meta["classes"],
        preprocessing=meta["preprocessing"],
        recipe=meta["recipe"],
        metrics={"test_top1_acc": test.top1_acc} if test else {},
        source=f"resnetlab train ({folder.path.name})",
    )
