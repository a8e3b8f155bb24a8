"""Import ImageNet ResNet state dicts in torchvision's naming (resnet18/34/50/101/152).

Those weights put the bottleneck's stride in the 3x3 conv ("ResNet v1.5"), so they load
into our ``stride_in="3x3"`` variant; names already match ours. The load is strict on
every parameter and running statistic. ImageNet class names are not shipped offline:
classes default to ``class_0..class_{N-1}`` unless a names file is given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.safe_load import safe_torch_load
from resnetlab.interop.weights import model_from_state, save_imported
from resnetlab.models import ResNet, model_config

IMAGENET_PRESETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_LAYERS: dict[tuple[str, tuple[int, ...]], str] = {  # (block, blocks per stage) -> preset
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


def imagenet_preprocessing() -> Preprocessing:
    """torchvision's ImageNet eval transform: shorter side 256, center crop 224, mean/std."""
    return Preprocessing(
        mode="RGB", size=224, resize=256, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)
    )


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """A bare state dict, or one under "state_dict"/"model"; DataParallel prefix removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise CheckpointError(f"{where} does not contain a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def infer_model_name(state: dict[str, torch.Tensor], where: str = "checkpoint") -> str:
    """The preset whose block type and blocks per stage match the keys."""
    block = "bottleneck" if any(k.endswith(".conv3.weight") for k in state) else "basic"
    counts = []
    for stage in (1, 2, 3, 4):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(len(idx))
    name = _LAYERS.get((block, tuple(counts)))
    if name is None:
        raise CheckpointError(
            f"{where}: not a torchvision ImageNet ResNet ({block}, blocks {counts})"
        )
    return name


def read_classes_file(path: str | Path, n: int) -> list[str]:
    """One class name per line (blank lines ignored); must give exactly ``n`` names."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise CheckpointError(f"cannot read classes file {path}: {e.strerror}") from None
    names = [s for s in names if s]
    if len(names) != n:
        raise CheckpointError(
            f"classes file {path} has {len(names)} names; the model has {n} outputs"
        )
    return names


def convert_torchvision(
    obj: Any, model_name: str | None = None, where: str = "checkpoint"
) -> ResNet:
    """Our 3x3-stride model loaded strictly from a torchvision-format state dict."""
    state = extract_state_dict(obj, where)
    inferred = infer_model_name(state, where)
    if model_name is not None and model_name != inferred:
        raise CheckpointError(f"{where} holds a {inferred} (from its keys), not {model_name}")
    # BN step counters are absent from older torchvision files and unused in eval mode
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key.removesuffix("running_mean") + "num_batches_tracked", torch.tensor(0))
    if "fc.weight" not in state:
        raise CheckpointError(f"{where}: no classifier ('fc') weights")
    config = model_config(inferred, stride_in="3x3", num_classes=int(state["fc.weight"].shape[0]))
    return model_from_state(config, state, where)


def import_torchvision(
    path: str | Path,
    model_name: str | None = None,
    out: str | Path | None = None,
    classes_file: str | Path | None = None,
) -> Path:
    """Convert a torchvision-format ImageNet checkpoint into our .safetensors."""
    path = Path(path)
    model = convert_torchvision(safe_torch_load(path), model_name, str(path))
    n = model.config.num_classes
    classes = (
        read_classes_file(classes_file, n) if classes_file else [f"class_{i}" for i in range(n)]
    )
    return save_imported(
        path,
        out,
        model,
        origin="torchvision-format",
        classes=classes,
        preprocessing=imagenet_preprocessing(),
    )
