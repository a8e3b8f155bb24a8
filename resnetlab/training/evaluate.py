"""Top-1/top-5 evaluation over a loader (optionally sharded across DDP ranks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from resnetlab.training.distributed import DistInfo, all_reduce_sum

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    top1_acc: float
    top5_acc: float
    loss: float
    n: int

    @property
    def error(self) -> float:
        return 1.0 - self.top1_acc


def flip_averaged(predict: Predictor) -> Predictor:
    """Average the logits of the image and its mirror (test-time flip)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (predict(x) + predict(torch.flip(x, dims=[3])))

    return run


@torch.no_grad()
def evaluate(
    predict: Predictor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dist_info: DistInfo | None = None,
) -> EvalResult:
    """``predict`` maps a float batch [N,C,H,W] (or [N,K,C,H,W] crops, averaged) to logits."""
    device = None
    totals = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss sum, n
    for x, y in batches:
        if x.dim() == 5:  # multi-crop: average the softmax over crops
            n, k = x.shape[:2]
            logits = predict(x.flatten(0, 1)).float().view(n, k, -1)
            probs = logits.softmax(-1).mean(1)
            log_probs = probs.clamp_min(1e-12).log()
        else:
            log_probs = predict(x).float().log_softmax(-1)
        device = log_probs.device
        topk = log_probs.topk(min(5, log_probs.shape[1]), dim=1).indices
        hits = topk == y.view(-1, 1)
        totals += torch.tensor(
            [
                hits[:, 0].sum().item(),
                hits.any(1).sum().item(),
                F.nll_loss(log_probs, y, reduction="sum").item(),
                y.numel(),
            ],
            dtype=torch.float64,
        )
    if dist_info is not None and dist_info.enabled:
        backend_device = device if device is not None and device.type == "cuda" else "cpu"
        totals = all_reduce_sum(totals.to(backend_device), dist_info).cpu()
    n = int(totals[3].item())
    if n == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    return EvalResult(float(totals[0] / n), float(totals[1] / n), float(totals[2] / n), n)
