"""Starting from trained weights (``train --init``): architecture, weights, frozen parts.

The architecture comes from the weights file (a torchvision ResNet-50 keeps its 3x3
stride placement, an akamaster ResNet-20 its zero padding on both sides); only the
class count follows the new data. The load is strict on every layer but the
classifier, which is replaced when the class count differs. The input normalisation
the weights were trained with is kept: a pretrained network expects it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError, ResnetlabError
from resnetlab.models import ResNetConfig, model_config

HEAD = "fc."


def init_config(
    cfg: Any, pretrained: ResNetConfig, num_classes: int, in_channels: int
) -> ResNetConfig:
    """The pretrained architecture with the new class count; refuses a ``--model`` or a
    model flag that contradicts the file rather than loading the weights half."""
    preset = model_config(cfg.model)
    same = (preset.block, preset.layers, preset.stem) == (
        pretrained.block,
        pretrained.layers,
        pretrained.stem,
    )
    if not same:
        raise ResnetlabError(
            f"--init holds a {pretrained.block} net with blocks {list(pretrained.layers)} "
            f"({pretrained.stem} stem), not a {cfg.model}; give the matching --model"
        )
    for key in ("shortcut", "stride_in", "width", "zero_pad"):
        want = getattr(cfg, key)
        if want is not None and want != getattr(pretrained, key):
            raise ResnetlabError(
                f"--{key.replace('_', '-')} {want} contradicts the --init weights "
                f"({getattr(pretrained, key)})"
            )
    if pretrained.in_channels != in_channels:
        raise ResnetlabError(
            f"the --init weights take {pretrained.in_channels}-channel images, the data has "
            f"{in_channels}"
        )
    return dataclasses.replace(pretrained, num_classes=num_classes, name=cfg.model)


def load_init(model: nn.Module, source: nn.Module, log: Callable[[str], None]) -> None:
    """Copy every tensor but the classifier's strictly; the classifier too if it fits."""
    theirs = source.state_dict()
    ours = model.state_dict()
    head_fits = all(theirs[k].shape == ours[k].shape for k in ours if k.startswith(HEAD))
    body = {k: v for k, v in theirs.items() if not k.startswith(HEAD)}
    missing = sorted(k for k in ours if not k.startswith(HEAD) and k not in body)
    unexpected = sorted(k for k in body if k not in ours)
    wrong = sorted(k for k in body if k in ours and body[k].shape != ours[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"--init weights do not fit the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shape {wrong[:3]})"
        )
    with torch.no_grad():
        for k, v in body.items():
            ours[k].copy_(v)
        if head_fits:
            for k in ours:
                if k.startswith(HEAD):
                    ours[k].copy_(theirs[k])
    n_old = theirs[HEAD + "weight"].shape[0]
    n_new = ours[HEAD + "weight"].shape[0]
    log(
        f"initialised from --init weights; classifier {'kept' if head_fits else 'replaced'}"
        f" ({n_old} -> {n_new} classes)"
    )


def adopt_normalisation(data: Preprocessing, pretrained: Preprocessing) -> Preprocessing:
    """The data's geometry with the pretrained weights' mean/std (per channel if the
    pretrained mean is a per-pixel image of another size)."""
    mean = torch.as_tensor(pretrained.mean, dtype=torch.float64)
    if mean.dim() == 3 and tuple(mean.shape[1:]) != (data.size, data.size):
        mean = mean.mean(dim=(1, 2))
    return dataclasses.replace(data, mean=mean.tolist(), std=list(pretrained.std))


def frozen_modules(model: nn.Module, stages: int) -> list[nn.Module]:
    """The stem and the first ``stages`` residual stages (none when ``stages`` < 0)."""
    if stages < 0:
        return []
    names = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, stages + 1)]
    missing = [n for n in names if not hasattr(model, n)]
    if missing:
        raise ResnetlabError(f"--freeze {stages}: the model has no {missing[0]}")
    return [getattr(model, n) for n in names]


def param_groups(
    model: nn.Module,
    frozen: list[nn.Module],
    backbone_scale: float,
    norm_weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Trainable parameters: the pretrained part at ``backbone_scale`` x lr, the head at lr.
    Frozen parameters stop requiring gradients and are left out. With ``norm_weight_decay``
    set, BN scales and shifts and all biases (the 1-d parameters) get that weight decay
    instead of the optimiser's: decay then only limits the conv and FC weights, whose
    scale BN makes irrelevant, and does not shrink the residual branches' output scales."""
    for m in frozen:
        m.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    for is_head, scale in ((False, backbone_scale), (True, 1.0)):
        params = [
            p
            for n, p in model.named_parameters()
            if n.startswith(HEAD) == is_head and p.requires_grad
        ]
        if norm_weight_decay is None:
            groups.append({"params": params, "lr_scale": scale})
            continue
        groups.append({"params": [p for p in params if p.dim() > 1], "lr_scale": scale})
        groups.append(
            {
                "params": [p for p in params if p.dim() <= 1],
                "lr_scale": scale,
                "weight_decay": norm_weight_decay,
            }
        )
    return [g for g in groups if g["params"]]


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, but frozen parts keep their BN statistics (eval mode)."""
    model.train()
    for m in frozen:
        m.eval()
