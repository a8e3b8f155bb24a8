"""Batch-norm folding for inference: conv -> BN becomes one conv with a bias.

In eval mode BN is an affine map per channel, y = (x - mean) / sqrt(var + eps) * gamma + beta,
so it can be merged into the preceding convolution's weights and bias; this removes one
full pass over every activation map and is the first step of every fast inference path.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    # compute in float64 so folding adds no rounding beyond the final cast
    w = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    fused.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_(((bias - mean) * scale + beta).to(conv.weight.dtype))  # type: ignore[union-attr]
    return fused


def _fold_children(module: nn.Module) -> int:
    """Fold sibling pairs named convK/bnK, and Conv2d->BatchNorm2d inside a Sequential."""
    count = 0
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for a, b in itertools.pairwise(names):
            conv, bn = children[a], children[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, a, fold_conv_bn(conv, bn))
                setattr(module, b, nn.Identity())
                count += 1
    else:
        for name, child in children.items():
            if not (name.startswith("conv") and isinstance(child, nn.Conv2d)):
                continue
            conv = child
            bn_name = "bn" + name[len("conv") :]
            norm = children.get(bn_name)
            if isinstance(norm, nn.BatchNorm2d):
                setattr(module, name, fold_conv_bn(conv, norm))
                setattr(module, bn_name, nn.Identity())
                count += 1
    return count


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BN folded into its conv; ``model`` is untouched.

    Works on our ResNet (stem, basic and bottleneck blocks, projection shortcuts);
    option-A shortcuts have no parameters and are kept as they are.
    """
    fused = copy.deepcopy(model).eval()
    folded = sum(_fold_children(m) for m in list(fused.modules()))
    remaining = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    if remaining:
        raise ValueError(f"{remaining} BatchNorm layer(s) not preceded by a conv were left unfused")
    fused.folded_bn = folded  # type: ignore[assignment]
    return fused
