"""Learning rate as a pure function of the iteration (plus the paper's warm-up state).

Keeping the schedule stateless makes resuming exact: the checkpoint stores only the
iteration and, for the paper's warm-up, the iteration at which it ended.
"""

from __future__ import annotations

import math

from resnetlab.training.config import TrainConfig

PAPER_WARMUP_FACTOR = 0.1  # §4.2: 0.01 when the base lr is 0.1
PAPER_WARMUP_ERROR = 0.80  # §4.2: "until the training error is below 80%"


def learning_rate(cfg: TrainConfig, iteration: int, warmup_done_at: int | None = None) -> float:
    """lr for the optimizer step that takes the model from ``iteration`` to ``iteration+1``."""
    base = cfg.lr
    if cfg.warmup == "paper" and warmup_done_at is None:
        return base * PAPER_WARMUP_FACTOR
    if cfg.warmup == "linear" and iteration < cfg.warmup_iters:
        return base * (iteration + 1) / cfg.warmup_iters
    if cfg.schedule == "step":
        return base * cfg.lr_decay ** sum(iteration >= m for m in cfg.milestones)
    start = cfg.warmup_iters if cfg.warmup == "linear" else 0
    progress = min(1.0, (iteration - start) / max(1, cfg.iters - start))
    if cfg.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    # "linear" and "onecycle" (linear warm-up + linear decay to zero)
    return base * (1 - progress)


def paper_warmup_should_end(cfg: TrainConfig, iteration: int, recent_train_error: float) -> bool:
    if cfg.warmup != "paper":
        return False
    capped = cfg.warmup_iters > 0 and iteration >= cfg.warmup_iters
    return recent_train_error < PAPER_WARMUP_ERROR or capped
