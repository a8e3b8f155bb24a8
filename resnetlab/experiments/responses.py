"""Layer-response statistics for Fig. 7 (§4.2, "Analysis of Layer Responses").

The responses are the outputs of each 3x3 layer after BN and before the other
nonlinearity (ReLU, and the addition in a residual block); their standard deviation
over the test set shows that residual functions are generally closer to zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.errors import DataError
from resnetlab.models import ResNet


def bn_after_3x3(model: ResNet) -> list[nn.BatchNorm2d]:
    """The BN layers that follow a 3x3 convolution, in network order."""
    layers: list[nn.BatchNorm2d] = []
    if model.conv1.kernel_size == (3, 3):
        layers.append(model.bn1)
    for block in model.blocks():
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            conv = getattr(block, conv_name, None)
            if conv is not None and conv.kernel_size == (3, 3):
                layers.append(getattr(block, bn_name))
    return layers


@torch.no_grad()
def response_stds(model: ResNet, batches: Any) -> list[float]:
    """Std of each 3x3 layer's BN output over every element of every batch."""
    layers = bn_after_3x3(model)
    sums = torch.zeros(len(layers), 3, dtype=torch.float64)  # n, sum, sum of squares

    def hook(i: int) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            x = output.detach().double()
            sums[i] += torch.stack(
                [torch.tensor(x.numel(), dtype=torch.float64), x.sum(), (x * x).sum()]
            )

        return record

    handles = [bn.register_forward_hook(hook(i)) for i, bn in enumerate(layers)]
    try:
        model.eval()
        for x, _ in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    n, s, ss = sums.unbind(1)
    return (ss / n - (s / n) ** 2).clamp_min(0).sqrt().tolist()


def layer_response_stds(
    checkpoint: Path, data: str, *, data_dir: str | None = None, limit: int | None = None
) -> list[float]:
    return measure_responses(checkpoint, data, data_dir=data_dir, limit=limit)[0]


def measure_responses(
    weights: Path, data: str, *, data_dir: str | None = None, limit: int | None = None
) -> tuple[list[float], int, str]:
    """The stds of Fig. 7 for the model in ``weights``, measured on the test split (the
    validation split where there is none), with the number of images and the split."""
    from resnetlab.data import make_loader, open_dataset
    from resnetlab.interop.loading import load_model_file

    loaded = load_model_file(weights)
    model = loaded.torch_model
    bundle = open_dataset(data, data_dir=data_dir, val_size=0)
    split, split_name = (bundle.test, "test") if bundle.test is not None else (bundle.val, "val")
    if split is None:
        raise DataError(f"{data} has no test or validation split to measure responses on")
    loader = make_loader(split, 500, train=False, preprocessing=loaded.preprocessing)
    seen = 0

    def limited() -> Any:
        nonlocal seen
        for x, y in loader.epoch(0):
            if limit is not None and seen >= limit:
                return
            yield x, y
            seen += len(y)

    return response_stds(model, limited()), seen, split_name
