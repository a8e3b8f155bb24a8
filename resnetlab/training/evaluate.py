"""Top-1/top-5 evaluation over a loader (optionally sharded across DDP ranks)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from resnetlab.data.preprocess import Preprocessing
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


def shift_averaged(predict: Predictor, shift: int) -> Predictor:
    """Average the logits over the image and two copies moved diagonally by ``shift``
    pixels each way (edges reflected), weights 1/2, 1/4, 1/4: the test-time view of the
    training's pad-and-crop translations (§4.2)."""
    if shift <= 0:
        return predict

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (shift,) * 4, mode="reflect")
        s2 = 2 * shift
        up_left = padded[..., :h, :w].contiguous(memory_format=_format(x))
        down_right = padded[..., s2 : s2 + h, s2 : s2 + w].contiguous(memory_format=_format(x))
        return 0.5 * predict(x) + 0.25 * (predict(up_left) + predict(down_right))

    return run


def _format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def tta_predictor(predict: Predictor, flip: bool, shift: int) -> Predictor:
    """The run's test-time augmentation: mirror averaging inside shift averaging."""
    return shift_averaged(flip_averaged(predict) if flip else predict, shift)


@torch.no_grad()
def evaluate(
    predict: Predictor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dist_info: DistInfo | None = None,
    device: torch.device | None = None,
) -> EvalResult:
    """``predict`` maps a float batch [N,C,H,W] (or [N,K,C,H,W] crops, averaged) to logits.
    Under DDP each process evaluates its shard and the totals are summed (``device``: where
    the reduction runs when this process's shard is empty)."""
    return score(log_probabilities(predict, batches), dist_info, device)


@torch.no_grad()  # on a generator: applied each time it resumes, not leaked to the caller
def log_probabilities(
    predict: Predictor, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(log-probabilities [N,K], labels) per batch; [N,K,C,H,W] multi-crop batches get
    the log of their softmax averaged over the K crops (§3.4's 10-crop test)."""
    for x, y in batches:
        if x.dim() == 5:
            n, k = x.shape[:2]
            logits = predict(x.flatten(0, 1)).float().view(n, k, -1)
            yield logits.softmax(-1).mean(1).clamp_min(1e-12).log(), y
        else:
            yield predict(x).float().log_softmax(-1), y


@torch.no_grad()
def score(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dist_info: DistInfo | None = None,
    device: torch.device | None = None,
) -> EvalResult:
    """Top-1, top-5 and mean loss of log-probabilities [N,K] against labels [N]."""
    totals = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss sum, n
    for log_probs, y in batches:
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


@torch.no_grad()
def multiscale_probabilities(
    predict: Predictor,
    batches: Iterable[tuple[list[list[torch.Tensor]], torch.Tensor]],
    preprocessing: Preprocessing,
    max_pixels: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fully-convolutional multi-scale test (§3.4, Table 4): each image's softmax
    averaged over its whole-image views (one per scale, uint8 [3,H,W] as
    ``multiscale_batches`` gives them) and their mirrors. Images whose view has the same
    size at a scale go through the network together, at most ``max_pixels`` input
    pixels per call (one image at a time when nothing matches). A per-pixel mean is
    applied as its channel averages (the mean image only exists at the crop size).
    Yields (probabilities [N,K], labels)."""
    for views, y in batches:
        total: torch.Tensor | None = None
        scales = len(views[0]) if views else 0
        for s in range(scales):
            by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
            for i, v in enumerate(views):
                by_shape[tuple(v[s].shape)].append(i)
            for shape, members in by_shape.items():
                per_call = max(1, max_pixels // (2 * shape[-2] * shape[-1]))
                for j in range(0, len(members), per_call):
                    idx = members[j : j + per_call]
                    x = torch.stack([views[i][s] for i in idx])
                    x = preprocessing.normalize(torch.cat([x, x.flip(-1)]), channel_mean=True)
                    p = predict(x).float().softmax(-1)
                    if total is None:
                        total = p.new_zeros(len(views), p.shape[1])
                    total[idx] += p[: len(idx)] + p[len(idx) :]
        if total is not None:
            yield total / (2 * scales), y
