"""Our weights format: safetensors tensors + one JSON metadata entry.

safetensors holds only raw tensors (no pickle, so loading never runs code from the
file); the JSON under header key ``"resnetlab"`` carries everything needed to rebuild
and use the model: full config, class names, preprocessing, recipe, metrics, version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.models import ResNet, ResNetConfig, build_model

FORMAT = "resnetlab-weights"
FORMAT_VERSION = 1
META_KEY = "resnetlab"


def make_meta(
    model: ResNet,
    *,
    classes: list[str],
    preprocessing: Preprocessing | dict[str, Any],
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """The metadata dict shared by .safetensors, ONNX and TorchScript exports."""
    from resnetlab import __version__

    if not isinstance(preprocessing, Preprocessing):
        preprocessing = Preprocessing.from_dict(preprocessing)
    classes = [str(c) for c in classes]
    if len(classes) != model.config.num_classes:
        raise CheckpointError(
            f"{len(classes)} class names for a model with {model.config.num_classes} outputs"
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "classes": classes,
        "preprocessing": preprocessing.to_dict(),
        "recipe": recipe,
        "metrics": metrics,
        "resnetlab_version": __version__,
        "source": source,
    }


def save_weights(
    path: str | Path,
    model: ResNet,
    *,
    classes: list[str],
    preprocessing: Preprocessing | dict[str, Any],
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    source: str = "",
) -> Path:
    """Write ``model``'s state dict and metadata to ``path`` (a .safetensors file)."""
    meta = make_meta(
        model,
        classes=classes,
        preprocessing=preprocessing,
        recipe=recipe,
        metrics=metrics,
        source=source,
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        tmp.replace(path)  # never leave a half-written file under the final name
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write {path}: {e.strerror or e} (choose another --out)"
        ) from None
    return path


def save_imported(
    source_file: Path,
    out: str | Path | None,
    model: ResNet,
    *,
    origin: str,
    classes: list[str],
    preprocessing: Preprocessing,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save a converted third-party checkpoint, recording where it came from and its
    sha256; by default next to the input, with the .safetensors suffix."""
    digest = hashlib.sha256(source_file.read_bytes()).hexdigest()
    return save_weights(
        Path(out) if out else source_file.with_suffix(".safetensors"),
        model,
        classes=classes,
        preprocessing=preprocessing,
        metrics=metrics,
        source=f"{origin} {source_file.name} sha256:{digest}",
    )


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and parsed metadata of a .safetensors file; any damage -> CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own error types for bad headers/sizes
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {msg}"
        ) from None
    if META_KEY not in header:
        raise CheckpointError(f"{path} has no resnetlab metadata (not written by resnetlab?)")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format is not {FORMAT!r}")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.get('format_version')} is newer than this resnetlab "
            f"understands ({FORMAT_VERSION}); upgrade resnetlab"
        )
    return tensors, meta


def model_from_state(
    config: ResNetConfig | dict[str, Any], state: dict[str, torch.Tensor], where: str
) -> ResNet:
    """Build the model ``config`` describes and load ``state`` strictly, or explain the mismatch."""
    try:
        with torch.device("meta"):  # no random init: every tensor comes from ``state``
            model = build_model(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid model config ({e})") from None
    check_state_matches(model, state, where)
    # fresh, aligned copies: tensors read from a file may sit at offsets that make
    # oneDNN pick other kernels (last-bit differences) and may share storage
    state = {k: v.clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # only possible with non-persistent buffers, which ResNet does not have
        raise CheckpointError(f"{where}: no values for {', '.join(leftover[:3])}")
    return model.eval()


def check_state_matches(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse tensors that do not match the model: missing, extra or mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s) (e.g. {', '.join(extra[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(
            f"{where}: tensors do not match the model config: {'; '.join(problems)}"
        )


def load_weights(path: str | Path) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model stored in a .safetensors file (eval mode) and return it with its metadata."""
    tensors, meta = read_weights(path)
    for key in ("model_config", "classes", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
    model = model_from_state(meta["model_config"], tensors, str(path))
    if len(meta["classes"]) != model.config.num_classes:
        raise CheckpointError(
            f"{path}: metadata lists {len(meta['classes'])} classes but the model has "
            f"{model.config.num_classes} outputs"
        )
    try:
        Preprocessing.from_dict(meta["preprocessing"])
    except TypeError as e:
        raise CheckpointError(f"{path}: invalid preprocessing metadata ({e})") from None
    return model, meta
