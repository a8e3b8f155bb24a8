"""Our weights format: safetensors tensors + one JSON metadata entry.

safetensors holds only raw tensors (no pickle, so loading never runs code from the
file); the JSON under header key ``"resnetlab"`` carries everything needed to rebuild
and use the model: full config, class names, preprocessing, recipe, metrics, version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from resnetlab.atomic import write_bytes_atomic
from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.models import ResNet, ResNetConfig

FORMAT = "resnetlab-weights"
FORMAT_VERSION = 1
META_KEY = "resnetlab"

TensorSpec = tuple[tuple[int, ...], bool]  # (shape, is floating point)
_T = TypeVar("_T")
_BLOCK_KEY = re.compile(r"layer(\d{1,9})\.(\d{1,9})\.")


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
    data = safetensors_bytes(tensors, metadata={META_KEY: json.dumps(meta)})
    return write_bytes_atomic(path, data)  # never a half-written file under the final name


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


def _safetensors(path: Path, read: Callable[[Any], _T]) -> _T:
    """``read(f)`` on the open file; safetensors' own errors become one CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return read(f)
    except Exception as e:  # safetensors raises its own error types for bad headers/sizes
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {msg}"
        ) from None


def _header(path: Path) -> tuple[dict[str, Any], dict[str, TensorSpec]]:
    """Metadata and tensor (shape, is-float) of a .safetensors file, without reading tensors."""

    def read(f: Any) -> tuple[dict[str, str], dict[str, TensorSpec]]:
        specs = {}
        for k in f.keys():  # noqa: SIM118 (not a dict)
            sl = f.get_slice(k)
            specs[k] = (tuple(sl.get_shape()), sl.get_dtype().startswith(("F", "BF")))
        return f.metadata() or {}, specs

    header, specs = _safetensors(path, read)
    if META_KEY not in header:
        raise CheckpointError(f"{path} has no resnetlab metadata (not written by resnetlab?)")
    meta = parse_json(header[META_KEY], str(path))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format is not {FORMAT!r}")
    check_format_version(meta.get("format_version"), FORMAT_VERSION, str(path))
    return meta, specs


def parse_json(text: str, where: str) -> Any:
    """Metadata JSON; undecodable or absurdly nested text is one CheckpointError."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = e if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        raise CheckpointError(f"{where}: metadata is not valid JSON ({detail})") from None


def check_format_version(version: Any, newest: int, where: str) -> None:
    """Absent (early files) is accepted; present, it must be a version we can read."""
    if version is None:
        return
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{where}: format_version must be a positive integer")
    if version > newest:
        raise CheckpointError(
            f"{where}: format_version {version} is newer than this resnetlab "
            f"understands ({newest}); upgrade resnetlab"
        )


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and parsed metadata of a .safetensors file; any damage -> CheckpointError."""
    path = Path(path)
    meta, _ = _header(path)
    tensors = _safetensors(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return tensors, meta


def parse_config(config: ResNetConfig | Any, where: str) -> ResNetConfig:
    """A saved model config, type- and range-checked before anything is built."""
    if isinstance(config, ResNetConfig):
        return config
    try:
        return ResNetConfig.from_dict(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid model config ({e})") from None


def parse_meta(
    meta: dict[str, Any], num_classes: int, in_channels: int | None, where: str
) -> tuple[list[str], Preprocessing]:
    """Class names and preprocessing from metadata, checked against the model they feed.

    Missing class names become ``class_0..``; missing preprocessing is refused (we
    could not feed the model safely).
    """
    if num_classes < 1:
        raise CheckpointError(f"{where}: no class names and no model config")
    classes = meta.get("classes")
    if classes is None:
        classes = [f"class_{i}" for i in range(num_classes)]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{where}: 'classes' must be a list of strings")
    if len(classes) != num_classes:
        raise CheckpointError(
            f"{where}: metadata names {len(classes)} classes for {num_classes} outputs"
        )
    if not meta.get("preprocessing"):
        raise CheckpointError(f"{where}: no preprocessing recorded; cannot feed the model safely")
    try:
        pre = Preprocessing.from_dict(meta["preprocessing"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid preprocessing metadata ({e})") from None
    if in_channels is not None and pre.channels != in_channels:
        raise CheckpointError(
            f"{where}: preprocessing gives {pre.channels}-channel images ({pre.mode}) "
            f"but the model takes {in_channels}"
        )
    return classes, pre


def _spec(t: torch.Tensor) -> TensorSpec:
    return tuple(t.shape), t.is_floating_point()


def meta_model(
    config: ResNetConfig, state: Mapping[str, torch.Tensor | TensorSpec], where: str
) -> ResNet:
    """The model ``config`` describes, on the meta device (no memory, no init), once the
    tensors ``state`` names are known to fit it: blocks per stage are compared from the
    names first, so a config claiming 300,000 blocks is refused before any is built."""
    stages = len(config.layers)
    found = [0] * (stages + 1)  # blocks per stage in the tensor names, one stage beyond
    for m in filter(None, map(_BLOCK_KEY.match, state)):
        i = int(m.group(1)) - 1
        if 0 <= i <= stages:
            found[i] = max(found[i], int(m.group(2)) + 1)
    problems = []
    for i, (want, got) in enumerate(zip((*config.layers, 0), found)):
        if want != got:
            lo, hi = sorted((want, got))
            kind = "missing" if want > got else "unexpected"
            problems.append(f"{kind} tensors of blocks layer{i + 1}.{lo}..{hi - 1}")
    if problems:
        raise CheckpointError(
            f"{where}: tensors do not match the model config: {'; '.join(problems[:3])}"
        )
    with torch.device("meta"):
        model = ResNet(config)
    check_state_matches(model, state, where)
    return model


def fill_model(model: ResNet, state: dict[str, torch.Tensor], where: str) -> ResNet:
    """Put checked tensors into a meta model (strict), in eval mode."""
    expected = model.state_dict()
    # fresh, aligned copies in the model's dtypes: tensors read from a file may sit at
    # offsets that make oneDNN pick other kernels (last-bit differences) and may share storage
    state = {
        k: v.to(dtype=expected[k].dtype, memory_format=torch.contiguous_format, copy=True)
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # only possible with non-persistent buffers, which ResNet does not have
        raise CheckpointError(f"{where}: no values for {', '.join(leftover[:3])}")
    return model.eval()


def model_from_state(
    config: ResNetConfig | dict[str, Any], state: dict[str, torch.Tensor], where: str
) -> ResNet:
    """Build the model ``config`` describes and load ``state`` strictly, or explain the mismatch."""
    return fill_model(meta_model(parse_config(config, where), state, where), state, where)


def check_state_matches(
    model: nn.Module, state: Mapping[str, torch.Tensor | TensorSpec], where: str
) -> None:
    """Refuse tensors that do not match the model: missing, extra, mis-shaped or of a
    kind (float/integer) the model's tensor cannot take."""
    specs = {k: _spec(v) if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    expected = {k: _spec(v) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in specs]
    extra = [k for k in specs if k not in expected]
    shapes = [
        f"{k} {specs[k][0]} != {v[0]}"
        for k, v in expected.items()
        if k in specs and specs[k][0] != v[0]
    ]
    kinds = [k for k, v in expected.items() if k in specs and specs[k][1] != v[1]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s) (e.g. {', '.join(extra[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:2])})")
    if kinds:
        problems.append(f"{len(kinds)} of the wrong dtype (e.g. {', '.join(kinds[:3])})")
    if problems:
        raise CheckpointError(
            f"{where}: tensors do not match the model config: {'; '.join(problems)}"
        )


def load_weights(path: str | Path) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model stored in a .safetensors file (eval mode) and return it with its
    metadata. Everything is checked from the header (config, classes, preprocessing,
    tensor names and shapes) before a tensor is read or a parameter allocated."""
    path = Path(path)
    meta, specs = _header(path)
    for key in ("model_config", "classes", "preprocessing"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
    config = parse_config(meta["model_config"], str(path))
    parse_meta(meta, config.num_classes, config.in_channels, str(path))
    model = meta_model(config, specs, str(path))
    tensors = _safetensors(path, lambda f: {k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return fill_model(model, tensors, str(path)), meta
