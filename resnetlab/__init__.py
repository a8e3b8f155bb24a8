"""resnetlab: deep residual learning (He, Zhang, Ren, Sun 2015), faithful and fast."""

from resnetlab.models import ResNet, ResNetConfig, build_model, create_model, list_models

__version__ = "0.1.0"

__all__ = ["ResNet", "ResNetConfig", "__version__", "build_model", "create_model", "list_models"]
