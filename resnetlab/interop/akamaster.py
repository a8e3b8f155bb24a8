"""Import checkpoints of akamaster/pytorch_resnet_cifar10 (resnet20/32/44/56/110/1202).

That project's conventions, matched exactly: state dict under ``"state_dict"`` (or bare),
keys prefixed ``module.`` (saved from DataParallel), classifier named ``linear``, option-A
shortcuts as a parameter-free lambda that subsamples by 2 and pads zero channels on
BOTH sides (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``) — our
``zero_pad="both"``. Its training normalised inputs with ImageNet's mean/std.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.cifar import CIFAR10_CLASSES
from resnetlab.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.safe_load import safe_torch_load
from resnetlab.interop.weights import model_from_state, save_imported
from resnetlab.models import ResNet, model_config

AKAMASTER_DEPTHS = (20, 32, 44, 56, 110, 1202)
SOURCE = "akamaster/pytorch_resnet_cifar10"


def akamaster_preprocessing() -> Preprocessing:
    """What akamaster trained and evaluated with: RGB [0,1], ImageNet mean/std, 32x32."""
    return Preprocessing(mode="RGB", size=32, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (``{"state_dict": ...}`` or bare)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise CheckpointError(f"{where} does not contain a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """akamaster names -> ours: drop ``module.``, ``linear`` -> ``fc``, ``shortcut`` -> ``downsample``.

    Their checkpoints predate BN's ``num_batches_tracked`` counter; it is not used in
    eval mode, so missing counters are added as 0 to allow a strict load.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        k = re.sub(r"^linear\.", "fc.", k)
        k = k.replace(".shortcut.", ".downsample.")  # option B variant (1x1 conv + BN), if any
        out[k] = value
    for key in list(out):
        if key.endswith(".running_mean"):
            counter = key.removesuffix("running_mean") + "num_batches_tracked"
            out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out


def infer_depth(state: dict[str, torch.Tensor], where: str = "checkpoint") -> int:
    """Depth 6n+2 from the block indices of layer1..3 (all three must have n blocks)."""
    counts = []
    for stage in (1, 2, 3):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not idx or idx != set(range(len(idx))):
            raise CheckpointError(f"{where}: layer{stage} blocks missing or not numbered 0..n-1")
        counts.append(len(idx))
    if len(set(counts)) != 1 or any(k.startswith("layer4.") for k in state):
        raise CheckpointError(f"{where}: not an akamaster CIFAR ResNet (blocks per stage {counts})")
    return 6 * counts[0] + 2


def convert_akamaster(obj: Any, model_name: str | None = None, where: str = "checkpoint") -> ResNet:
    """Build our model (option A, zeros on both sides) from a loaded akamaster checkpoint."""
    state = convert_state_dict(extract_state_dict(obj, where))
    depth = infer_depth(state, where)
    inferred = f"resnet{depth}"
    if model_name is not None and model_name != inferred:
        raise CheckpointError(f"{where} holds a {inferred} (from its keys), not {model_name}")
    if "fc.weight" not in state:
        raise CheckpointError(f"{where}: no classifier ('linear') weights")
    shortcut = "B" if any(".downsample." in k for k in state) else "A"
    config = model_config(
        inferred,
        shortcut=shortcut,
        zero_pad="both",
        num_classes=int(state["fc.weight"].shape[0]),
        in_channels=int(state["conv1.weight"].shape[1]),
        width=int(state["conv1.weight"].shape[0]),
    )
    return model_from_state(config, state, where)


def import_akamaster(
    path: str | Path, model_name: str | None = None, out: str | Path | None = None
) -> Path:
    """Convert an akamaster checkpoint file into our .safetensors (safe load, strict)."""
    path = Path(path)
    obj = safe_torch_load(path)
    model = convert_akamaster(obj, model_name, str(path))
    n = model.config.num_classes
    classes = CIFAR10_CLASSES if n == 10 else [f"class_{i}" for i in range(n)]
    metrics = None
    if isinstance(obj, dict) and isinstance(obj.get("best_prec1"), (int, float, torch.Tensor)):
        metrics = {"reported_top1_cifar10_test": float(obj["best_prec1"]), "reported_by": SOURCE}
    return save_imported(
        path,
        out,
        model,
        origin=SOURCE,
        classes=classes,
        preprocessing=akamaster_preprocessing(),
        metrics=metrics,
    )
