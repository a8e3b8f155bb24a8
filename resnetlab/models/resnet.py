"""One configurable ResNet: every network of the paper is a ``ResNetConfig``.

Two stems cover the paper's two families:

* ``"cifar"`` (§4.2): 3x3 conv with ``width`` filters, no pooling; stages of
  ``widths = width * 2**i`` on 32/16/8 maps.
* ``"imagenet"`` (Table 1): 7x7/2 conv with ``width`` filters, 3x3/2 max pool.

Then ``len(layers)`` stages of blocks (the first block of every stage after the
first has stride 2), global average pooling and one fully-connected layer. BN after
every conv, no dropout (§3.4). State-dict names follow torchvision's convention
(conv1, bn1, layer1..N, fc) so that ImageNet weights in that format load strictly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from resnetlab.models.blocks import (
    BLOCKS,
    SHORTCUTS,
    BasicBlock,
    Bottleneck,
    Shortcut,
    StrideIn,
    ZeroPadPlacement,
)

Stem = Literal["cifar", "imagenet"]


@dataclass(frozen=True)
class ResNetConfig:
    """Everything needed to rebuild a model; saved with every run and checkpoint."""

    block: Literal["basic", "bottleneck"]
    layers: tuple[int, ...]
    stem: Stem
    shortcut: Shortcut = "B"
    num_classes: int = 1000
    in_channels: int = 3
    width: int = 64
    zero_pad: ZeroPadPlacement = "end"
    stride_in: StrideIn = "1x1"
    zero_init_residual: bool = False
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if self.zero_pad not in ("end", "both"):
            raise ValueError(f"zero_pad must be 'end' or 'both', got {self.zero_pad!r}")
        if self.stride_in not in ("1x1", "3x3"):
            raise ValueError(f"stride_in must be '1x1' or '3x3', got {self.stride_in!r}")
        if not 1 <= len(self.layers) <= MAX_STAGES or any(n < 1 for n in self.layers):
            raise ValueError(
                f"layers must be 1 to {MAX_STAGES} positive block counts, got {_short(self.layers)}"
            )
        if max(self.layers) > MAX_BLOCKS_PER_STAGE:
            raise ValueError(
                f"layers: at most {MAX_BLOCKS_PER_STAGE} blocks per stage, got {max(self.layers)}"
            )
        for key, (lo, hi) in LIMITS.items():
            if not lo <= int(getattr(self, key)) <= hi:
                raise ValueError(f"{key} must be in {lo}..{hi}, got {getattr(self, key)}")

    @property
    def expansion(self) -> int:
        return BLOCKS[self.block].expansion

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.width * 2**i for i in range(len(self.layers)))

    @property
    def depth(self) -> int:
        """Weighted layers: stem conv + convs in blocks + FC (the paper's naming)."""
        per_block = 2 if self.block == "basic" else 3
        return 1 + per_block * sum(self.layers) + 1

    @property
    def native_size(self) -> int:
        return 32 if self.stem == "cifar" else 224

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ResNetConfig:
        """Rebuild a saved config; refuses wrong types and out-of-range values (ValueError)
        before anything is built, since the dict may come from an untrusted file."""
        if not isinstance(d, dict):
            raise ValueError(f"model config must be an object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(map(str, unknown))[:5]}")
        missing = [k for k in ("block", "layers", "stem") if k not in d]
        if missing:
            raise ValueError(f"model config lacks {', '.join(map(repr, missing))}")
        for key, value in d.items():
            _check_type(key, value)
        return cls(**d)


# Generous bounds for real networks (resnet1202 has 200 blocks per stage, ImageNet nets
# a width of 64): a saved config outside them is damaged or hostile, and refusing it
# before the model is built avoids minutes of work and gigabytes of memory.
MAX_STAGES = 8
MAX_BLOCKS_PER_STAGE = 1000
LIMITS: dict[str, tuple[int, int]] = {
    "num_classes": (1, 100_000),
    "in_channels": (1, 64),
    "width": (1, 8192),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_type(key: str, value: Any) -> None:
    """JSON types of one config field (range checks are in ``__post_init__``)."""
    if key == "layers":
        ok = isinstance(value, (list, tuple)) and all(_is_int(n) for n in value)
        want = "a list of integers"
    elif key in LIMITS:
        ok, want = _is_int(value), "an integer"
    elif key == "zero_init_residual":
        ok, want = isinstance(value, bool), "true or false"
    else:  # block, stem, shortcut, zero_pad, stride_in, name
        ok, want = isinstance(value, str) and len(value) <= 200, "a short string"
    if not ok:
        raise ValueError(f"model config {key!r} must be {want}, got {_short(value)}")


def _short(value: Any) -> str:
    """A repr fit for a one-line message, whatever a file put there."""
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


class ResNet(nn.Module):
    """Residual (or plain) network built from a :class:`ResNetConfig`."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        block = BLOCKS[config.block]
        w = config.width
        if config.stem == "cifar":
            self.conv1 = nn.Conv2d(config.in_channels, w, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(config.in_channels, w, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)

        in_channels = w
        self.stage_names: list[str] = []
        for i, (n_blocks, width) in enumerate(zip(config.layers, config.stage_widths)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(
                    block(
                        in_channels,
                        width,
                        stride=stride if j == 0 else 1,
                        shortcut=config.shortcut,
                        zero_pad=config.zero_pad,
                        stride_in=config.stride_in,
                    )
                )
                in_channels = width * block.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, config.num_classes)
        self.num_features = in_channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialization (§3.4, [13]): normal, fan_out, for ReLU; BN weight 1, bias 0.

        With ``zero_init_residual`` the last BN of every residual branch starts at 0,
        so every residual block starts as the identity (Goyal et al. 2017).
        """
        if self.fc.weight.is_meta:  # nothing to initialise; meta init costs seconds
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        bound = 1 / math.sqrt(self.fc.in_features)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)
        if self.config.zero_init_residual and self.config.shortcut != "none":
            for m in self.blocks():
                nn.init.zeros_(m.last_bn().weight)

    def blocks(self) -> list[BasicBlock | Bottleneck]:
        return [b for name in self.stage_names for b in getattr(self, name)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
