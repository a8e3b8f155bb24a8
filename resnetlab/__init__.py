"""resnetlab: deep residual learning (He, Zhang, Ren, Sun 2015), faithful and fast.

The model API is imported on first use, so that the ``resnetlab`` command can set what
OpenMP reads once, when torch loads (threads, wait policy), before anything imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ResNet", "ResNetConfig", "__version__", "build_model", "create_model", "list_models"]

if TYPE_CHECKING:
    from resnetlab.models import ResNet, ResNetConfig, build_model, create_model, list_models


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("resnetlab.models"), name)
    raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
