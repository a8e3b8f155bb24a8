"""Residual blocks and shortcut connections (He et al. 2015, §3.2-3.3, Fig. 2 and Fig. 5).

A block computes y = F(x) + shortcut(x) followed by ReLU, with BN after every
convolution (§3.4). ``shortcut="none"`` drops the addition and gives the *plain*
counterpart used to show the degradation problem (§4.1).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Shortcut = Literal["A", "B", "C", "none"]
ZeroPadPlacement = Literal["end", "both"]
StrideIn = Literal["1x1", "3x3"]

SHORTCUTS: tuple[str, ...] = ("A", "B", "C", "none")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows every conv, §3.4)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A (§3.3): identity with stride-s subsampling and zero-filled extra channels.

    It has no parameters. Where the zero channels go is not fixed by the paper:
    ``placement="end"`` keeps the input on channels [0, C_in) and appends zeros;
    ``placement="both"`` splits the zeros before and after the input channels, the
    convention of akamaster/pytorch_resnet_cifar10 (pad (C_out-C_in)//2 on each side).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, placement: ZeroPadPlacement
    ) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("option A cannot reduce channels")
        if placement not in ("end", "both"):
            raise ValueError(f"zero_pad must be 'end' or 'both', got {placement!r}")
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2 if placement == "both" else 0
        self.pad_after = extra - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_before or self.pad_after:
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def make_shortcut(
    kind: Shortcut,
    in_channels: int,
    out_channels: int,
    stride: int,
    zero_pad: ZeroPadPlacement,
) -> nn.Module | None:
    """The module applied to x on the shortcut path; ``None`` means plain identity.

    A: identity, parameter-free zero-pad where the shape changes.
    B: identity, 1x1 conv + BN projection only where the shape changes.
    C: 1x1 conv + BN projection on every block.
    none: not used (plain block, no addition).
    """
    changes_shape = stride != 1 or in_channels != out_channels
    if kind == "none":
        return None
    if kind == "A":
        return (
            ZeroPadShortcut(in_channels, out_channels, stride, zero_pad) if changes_shape else None
        )
    if kind == "B" and not changes_shape:
        return None
    if kind in ("B", "C"):
        return nn.Sequential(
            conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
        )
    raise ValueError(f"unknown shortcut {kind!r}; choose from {SHORTCUTS}")


def keep_grad_channels_last(t: torch.Tensor) -> torch.Tensor:
    """Make the gradient reaching a channels_last block output channels_last too.

    In channels_last training, autograd hands a few block outputs an NCHW gradient (from
    the global pool's backward and from stride-2 blocks); ReLU's backward on mixed
    formats is about 10x slower than on matching ones, which costs a 2-core CPU ~6% of
    each ResNet-20 step. One copy of that gradient avoids it. No-op elsewhere
    (inference, NCHW, tracing, compile).
    """
    if (
        isinstance(t, torch.Tensor)
        and t.requires_grad
        and t.dim() == 4
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    ):
        t.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))
    return t


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (Fig. 5 left); used by ResNet-18/34 and all CIFAR nets."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        zero_pad: ZeroPadPlacement = "end",
        stride_in: StrideIn = "1x1",
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = shortcut != "none"
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, zero_pad)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return keep_grad_channels_last(self.relu(out))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) (Fig. 5 right); ResNet-50/101/152.

    ``stride_in="1x1"`` puts the stride-2 downsampling in the first 1x1 conv, as the
    paper does (§3.3, "performed by conv3_1, conv4_1, conv5_1 with a stride of 2");
    ``"3x3"`` puts it in the 3x3 conv, as most PyTorch ImageNet weights do ("v1.5").
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        shortcut: Shortcut = "B",
        zero_pad: ZeroPadPlacement = "end",
        stride_in: StrideIn = "1x1",
    ) -> None:
        super().__init__()
        if stride_in not in ("1x1", "3x3"):
            raise ValueError(f"stride_in must be '1x1' or '3x3', got {stride_in!r}")
        out_channels = width * self.expansion
        s1, s3 = (stride, 1) if stride_in == "1x1" else (1, stride)
        self.conv1 = conv1x1(in_channels, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = shortcut != "none"
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride, zero_pad)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return keep_grad_channels_last(self.relu(out))


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}
