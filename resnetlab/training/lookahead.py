"""Lookahead weight averaging: every few steps, pull the weights back to their average.

Zhang et al. 2019 ("Lookahead Optimizer: k steps forward, 1 step back") with the decay
schedule of Keller Jordan's airbench: every ``every`` iterations the running average
moves towards the live weights by ``1 - decay`` and the live weights are set to it, with
``decay = 0.95**every * (t / T)**3``. Early in a run the decay is ~0 (plain SGD); towards
the end, when the learning rate is small and SGD only jitters around a minimum, the
average keeps ~77% of the previous one. BN running statistics are averaged with the
weights, so the averaged net's BN matches its weights without a recalibration pass.

The average is part of the run's state (state.py): a resumed run continues it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

BASE_DECAY = 0.95  # per iteration


def decay_at(iteration: int, total: int, every: int) -> float:
    """How much of the old average an update at ``iteration`` of ``total`` keeps."""
    return BASE_DECAY**every * (min(iteration, total) / total) ** 3


class Lookahead:
    """The averaged copy of a model's floating-point state (weights and BN statistics)."""

    def __init__(self, model: nn.Module, every: int) -> None:
        if every < 1:
            raise ValueError(f"lookahead interval must be >= 1 (got {every})")
        self.every = every
        self.average = {k: v.detach().clone() for k, v in _floating_state(model).items()}

    def due(self, iteration: int, total: int) -> bool:
        """Every ``every`` iterations, and at the run's last one (so the final weights
        include the steps since the last update)."""
        return iteration % self.every == 0 or iteration == total

    @torch.no_grad()
    def update(self, model: nn.Module, iteration: int, total: int) -> None:
        decay = decay_at(iteration, total, self.every)
        live = _floating_state(model)
        for name, avg in self.average.items():
            avg.lerp_(live[name], 1.0 - decay)
            live[name].copy_(avg)

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "average": dict(self.average)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        saved = d["average"]
        if d.get("every", self.every) != self.every:  # an average over other horizons
            raise ValueError(
                f"the saved lookahead average was kept every {d['every']} iterations, "
                f"this run keeps it every {self.every}"
            )
        if set(saved) != set(self.average):
            raise ValueError("the saved lookahead average does not match the model's state")
        for name, avg in self.average.items():
            avg.copy_(saved[name])


def _floating_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and floating buffers (BN means/variances), not counters."""
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
