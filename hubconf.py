"""torch.hub entry points: ``torch.hub.load(path_to_clone, "resnet20", source="local")``.

One entry per preset of the paper (resnet20..1202, plain20..110, resnet18..152,
plain18/34), each accepting the preset's overrides (num_classes, stride_in, ...).
No weights are hosted, so ``pretrained=True`` is refused with an explanation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# torch.hub puts the clone's directory on sys.path while importing this file
from resnetlab.models import create_model, list_models
from resnetlab.models.resnet import ResNet

dependencies = ["torch", "numpy", "safetensors"]


def _entry(name: str) -> Callable[..., ResNet]:
    def entry(pretrained: bool = False, **overrides: Any) -> ResNet:
        if pretrained:
            raise ValueError(
                f"resnetlab hosts no pretrained weights for {name}; build it untrained "
                "(pretrained=False) and load a file with resnetlab.interop.load_model_file, "
                "or convert third-party weights with 'resnetlab import'"
            )
        return create_model(name, **overrides)

    entry.__name__ = name
    entry.__doc__ = f"{name} from He et al. 2015 (untrained); overrides as in create_model."
    return entry


for _name in list_models():
    globals()[_name] = _entry(_name)
