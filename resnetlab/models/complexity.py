"""Parameter and multiply-add counts, to check models against Tables 1 and 6.

Multiply-adds are counted with ``torch.utils.flop_counter`` (which counts the
matrix work of convolutions and linear layers, 2 FLOPs per multiply-add) on the
meta device, so even ResNet-1202 is counted instantly without real memory.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnetlab.models.presets import PaperFigures, model_config, paper_figures
from resnetlab.models.resnet import ResNet, ResNetConfig


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_mult_adds(config: ResNetConfig, image_size: int | None = None) -> int:
    """Multiply-adds of one forward pass of a single image (conv and fc layers)."""
    size = image_size or config.native_size
    with torch.device("meta"):
        model = ResNet(config)
        x = torch.empty(1, config.in_channels, size, size)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return counter.get_total_flops() // 2


def describe(name: str, **overrides: object) -> dict[str, object]:
    """One row of ``resnetlab models``: our counts beside the paper's."""
    cfg = model_config(name, **overrides)
    with torch.device("meta"):
        params = count_parameters(ResNet(cfg))
    paper: PaperFigures = paper_figures(name)
    return {
        "name": name,
        "depth": cfg.depth,
        "block": cfg.block,
        "shortcut": cfg.shortcut,
        "input": cfg.native_size,
        "params": params,
        "mult_adds": count_mult_adds(cfg),
        "paper_params_millions": paper.params_millions,
        "paper_mult_adds_billions": paper.mult_adds_billions,
    }
