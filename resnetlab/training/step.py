"""One SGD step: forward, loss, backward (in micro-batches), update."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


class ScaledCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy of the logits times a constant: a softmax temperature for the
    training loss only. Predictions (the argmax) are unchanged, so evaluation ignores it;
    the model is the paper's, unscaled."""

    def __init__(self, scale: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.scale = scale

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits * self.scale if self.scale != 1.0 else logits, target)


def train_step(
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    *,
    accum: int = 1,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    stats: torch.Tensor | None = None,
    ddp: bool = False,
) -> None:
    """One SGD step on a (global or per-rank) batch, in ``accum`` micro-batches.

    ``stats`` (float64 [3], on the device) accumulates loss sum, errors and images
    without a host sync; under DDP, gradients are all-reduced only on the last micro-batch.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    for i, (xc, yc) in enumerate(zip(x.chunk(accum), y.chunk(accum))):
        sync_ctx = _no_sync(train_model) if ddp and i < accum - 1 else contextlib.nullcontext()
        with sync_ctx, autocast or contextlib.nullcontext():
            out = train_model(xc)
            loss = criterion(out.float(), yc)
        (loss / accum).backward()
        if stats is not None:
            with torch.no_grad():
                stats[0] += loss.detach() * yc.numel()
                stats[1] += (out.argmax(1) != yc).sum()
                stats[2] += yc.numel()
    optimizer.step()


def _no_sync(module: nn.Module) -> contextlib.AbstractContextManager[Any]:
    target = getattr(module, "_orig_mod", module)
    return target.no_sync()  # type: ignore[operator]
