"""Models: one configurable ResNet (resnet.py), its blocks (blocks.py), presets."""

from resnetlab.models.blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from resnetlab.models.complexity import count_mult_adds, count_parameters, describe
from resnetlab.models.presets import (
    PRESETS,
    PaperFigures,
    build_model,
    create_model,
    list_models,
    model_config,
    paper_figures,
)
from resnetlab.models.resnet import ResNet, ResNetConfig

__all__ = [
    "PRESETS",
    "BasicBlock",
    "Bottleneck",
    "PaperFigures",
    "ResNet",
    "ResNetConfig",
    "ZeroPadShortcut",
    "build_model",
    "count_mult_adds",
    "count_parameters",
    "create_model",
    "describe",
    "list_models",
    "model_config",
    "paper_figures",
]
