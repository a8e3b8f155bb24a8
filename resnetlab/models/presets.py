"""Named presets for every network in the paper, with the paper's own figures.

CIFAR nets (§4.2, Table 6) have depth 6n+2: three stages of n basic blocks,
widths 16/32/64, option-A shortcuts. ImageNet nets (Table 1) use option B, as
the paper's Table 3 "B" rows and the ResNet-50/101/152 entries do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from resnetlab.models.resnet import ResNet, ResNetConfig


@dataclass(frozen=True)
class PaperFigures:
    """What the paper reports for a preset (None where it reports nothing)."""

    params_millions: float | None = None  # Table 6
    mult_adds_billions: float | None = None  # Table 1, "FLOPs" (multiply-adds)
    cifar10_test_error: float | None = None  # Table 6, % (best of 5 for 110: 6.43)
    imagenet_top1_error: float | None = None  # Tables 2-3 (10-crop, val), %


def _cifar(n: int, shortcut: str) -> ResNetConfig:
    return ResNetConfig(
        block="basic",
        layers=(n, n, n),
        stem="cifar",
        shortcut=shortcut,  # type: ignore[arg-type]
        num_classes=10,
        width=16,
    )


def _imagenet(block: str, layers: tuple[int, ...], shortcut: str) -> ResNetConfig:
    return ResNetConfig(
        block=block,  # type: ignore[arg-type]
        layers=layers,
        stem="imagenet",
        shortcut=shortcut,  # type: ignore[arg-type]
        num_classes=1000,
        width=64,
    )


_CIFAR_TABLE6 = {  # depth: (n, params M, test error %)
    20: (3, 0.27, 8.75),
    32: (5, 0.46, 7.51),
    44: (7, 0.66, 7.17),
    56: (9, 0.85, 6.97),
    110: (18, 1.7, 6.43),
    1202: (200, 19.4, 7.93),
}
_IMAGENET_TABLE1 = {  # depth: (block, layers, mult-adds 1e9, top-1 error %: Table 2 for 18, Table 3 B)
    18: ("basic", (2, 2, 2, 2), 1.8, 27.88),
    34: ("basic", (3, 4, 6, 3), 3.6, 24.52),
    50: ("bottleneck", (3, 4, 6, 3), 3.8, 22.85),
    101: ("bottleneck", (3, 4, 23, 3), 7.6, 21.75),
    152: ("bottleneck", (3, 8, 36, 3), 11.3, 21.43),
}
_IMAGENET_PLAIN_TOP1 = {18: 27.94, 34: 28.54}  # Table 2 (10-crop)

PRESETS: dict[str, tuple[ResNetConfig, PaperFigures]] = {}

for _depth, (_n, _params, _err) in _CIFAR_TABLE6.items():
    PRESETS[f"resnet{_depth}"] = (
        _cifar(_n, "A"),
        PaperFigures(params_millions=_params, cifar10_test_error=_err),
    )
for _depth in (20, 32, 44, 56, 110):  # Fig. 6 left
    PRESETS[f"plain{_depth}"] = (_cifar(_CIFAR_TABLE6[_depth][0], "none"), PaperFigures())
for _depth, (_block, _layers, _madds, _top1) in _IMAGENET_TABLE1.items():
    PRESETS[f"resnet{_depth}"] = (
        _imagenet(_block, _layers, "B"),
        PaperFigures(mult_adds_billions=_madds, imagenet_top1_error=_top1),
    )
for _depth in (18, 34):
    _block, _layers, _madds, _ = _IMAGENET_TABLE1[_depth]
    PRESETS[f"plain{_depth}"] = (
        _imagenet(_block, _layers, "none"),
        PaperFigures(mult_adds_billions=_madds, imagenet_top1_error=_IMAGENET_PLAIN_TOP1[_depth]),
    )


def list_models() -> list[str]:
    """Preset names, CIFAR family first, each ordered by depth."""

    def key(name: str) -> tuple[int, int, int]:
        cfg = PRESETS[name][0]
        return (cfg.stem != "cifar", name.startswith("plain"), cfg.depth)

    return sorted(PRESETS, key=key)


def model_config(name: str, **overrides: Any) -> ResNetConfig:
    """The preset's config with ``overrides`` applied (any ResNetConfig field)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    base = PRESETS[name][0]
    fields = {f.name for f in dataclasses.fields(ResNetConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(
            f"unknown override(s) {bad} for {name}; valid: {sorted(fields - {'name'})}"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, name=name, **overrides)


def paper_figures(name: str) -> PaperFigures:
    return PRESETS[name][1] if name in PRESETS else PaperFigures()


def create_model(name: str, **overrides: Any) -> ResNet:
    """Build a preset by name, e.g. ``create_model("resnet56", num_classes=100)``.

    Overrides: num_classes, in_channels, width, shortcut ("A"/"B"/"C"/"none"),
    zero_pad ("end"/"both"), stride_in ("1x1"/"3x3"), zero_init_residual.
    """
    return ResNet(model_config(name, **overrides))


def build_model(config: ResNetConfig | dict[str, Any]) -> ResNet:
    """Rebuild a model from a saved config (a ResNetConfig or its ``to_dict()``)."""
    if isinstance(config, dict):
        config = ResNetConfig.from_dict(config)
    return ResNet(config)
