"""hubconf.py: torch.hub.load(<clone>, "resnet20", source="local") builds our models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from resnetlab.models import ResNet, count_parameters, list_models

REPO = str(Path(__file__).resolve().parents[1])


def test_hubconf_has_an_entry_point_for_every_preset() -> None:
    spec = importlib.util.spec_from_file_location("hubconf", Path(REPO) / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    for name in list_models():
        assert callable(getattr(hubconf, name))


def test_hub_load_builds_the_preset_with_overrides() -> None:
    model = torch.hub.load(REPO, "resnet20", source="local")
    assert isinstance(model, ResNet) and model.config.name == "resnet20"
    assert count_parameters(model) == 269_722
    r50 = torch.hub.load(REPO, "resnet50", source="local", stride_in="3x3", num_classes=7)
    assert r50.config.stride_in == "3x3" and r50.fc.out_features == 7
    assert r50.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_hub_pretrained_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        torch.hub.load(REPO, "resnet56", source="local", pretrained=True)
