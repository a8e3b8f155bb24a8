"""TrainState: everything that changes during a run, saved and restored as one object.

Like Flax's ``TrainState``: the config says what a run *is*; the state says where it
*stands*. A checkpoint is ``state_dict()`` (checkpoint.py adds the header), and
``load_state_dict`` puts a run back exactly where it stopped, at any iteration: the
data order is a function of (seed, epoch, batch), the learning rate a function of the
iteration and the §4.2 warm-up's end, and the rest is here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnetlab.errors import CheckpointError
from resnetlab.training.lookahead import Lookahead


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    iteration: int = 0
    # §4.2 warm-up (lr x0.1 until the training error is below 80%): when it ended, and
    # the running training error that decides it
    warmup_done_at: int | None = None
    train_error_ema: float = 1.0
    pending: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # not yet in the EMA
    # loss sum, errors, images since the last metrics row (so a row spanning a resume
    # reports the same training error as an uninterrupted run)
    interval: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    best_val_error: float = math.inf
    images_seen: int = 0
    # wall time of the run so far, evaluations included, summed over its sessions (a
    # crash loses the time since the last checkpoint): the reports state what runs cost
    train_seconds: float = 0.0
    # speed settings chosen once at the start (channels_last, compile, amp, ...)
    choices: dict[str, Any] = field(default_factory=dict)
    # the averaged weights of --lookahead (None: off)
    lookahead: Lookahead | None = None

    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_done_at": self.warmup_done_at,
            "train_error_ema": self.train_error_ema,
            "pending": list(self.pending),
            "interval": list(self.interval),
            "best_val_error": self.best_val_error,
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "choices": dict(self.choices),
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
            "rng": rng,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from a checkpoint; refuses one made with another data size (epoch
        boundaries would move, so the data order could not continue exactly)."""
        saved_steps = d.get("steps_per_epoch")
        if saved_steps is not None and int(saved_steps) != self.steps_per_epoch:
            raise CheckpointError(
                f"the checkpoint was made with {saved_steps} batches per epoch, this data "
                f"gives {self.steps_per_epoch}: the dataset or batch size changed"
            )
        self.model.load_state_dict(d["model"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.iteration = int(d["iteration"])
        self.warmup_done_at = d.get("warmup_done_at")
        self.train_error_ema = float(d.get("train_error_ema", 1.0))
        self.pending = [float(v) for v in d.get("pending", [0.0, 0.0, 0.0])]
        self.interval = [float(v) for v in d.get("interval", [0.0, 0.0, 0.0])]
        self.best_val_error = float(d.get("best_val_error", math.inf))
        self.images_seen = int(d.get("images_seen", 0))
        self.train_seconds = float(d.get("train_seconds", 0.0))
        self.choices = dict(d.get("choices") or self.choices)
        if self.lookahead is not None:
            saved = d.get("lookahead")
            if saved is None:  # a run that had none: the average starts from here
                self.lookahead = Lookahead(self.model, self.lookahead.every)
            else:
                try:
                    self.lookahead.load_state_dict(saved)
                except (KeyError, ValueError, RuntimeError) as e:
                    raise CheckpointError(f"bad lookahead state in the checkpoint: {e}") from None
        rng = d.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
