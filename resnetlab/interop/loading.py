"""One entry point for every model file a user may hand us: ``load_model_file``.

Accepted: our ``.safetensors`` weights, a training checkpoint (``.pt``/``.pth``/``.ckpt``,
read with ``weights_only=True``) and an ``.onnx`` file exported by ``resnetlab export``
(run with ONNX Runtime). ``eval``, ``predict`` and ``export`` use it so they accept
them all alike; none of them ever executes code stored in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.safe_load import safe_torch_load
from resnetlab.interop.weights import (
    META_KEY,
    check_format_version,
    fill_model,
    load_weights,
    meta_model,
    parse_config,
    parse_json,
    parse_meta,
)
from resnetlab.models import ResNet
from resnetlab.training.checkpoint import FORMAT as CHECKPOINT_FORMAT

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".th")
# wrappers that prefix state-dict keys: DataParallel/DDP ("module."), torch.compile ("_orig_mod.")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class OnnxModel:
    """An ONNX Runtime session behaving like a model: float NCHW tensor in, logits out."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types (InvalidGraph, Fail...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"ONNX Runtime cannot load {path}: {msg}") from None
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        batch = inp.shape[0]
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session; a fixed-batch export is fed in chunks of its batch size."""
        x = x.detach().float().contiguous().cpu()
        step = self.fixed_batch or x.shape[0]
        outs = []
        for i in range(0, x.shape[0], step):
            chunk = x[i : i + step]
            n = chunk.shape[0]
            if n < step:  # pad the last chunk up to the exported batch size
                chunk = torch.cat([chunk, chunk.new_zeros(step - n, *chunk.shape[1:])])
            (y,) = self.session.run(None, {self.input_name: chunk.numpy()})
            outs.append(torch.from_numpy(y)[:n])
        return torch.cat(outs)

    def eval(self) -> OnnxModel:
        """Already inference-only; mirrors nn.Module.eval() so callers need not care."""
        return self


@dataclass
class LoadedModel:
    """A ready-to-run model with what is needed to feed it and name its outputs."""

    model: nn.Module | OnnxModel  # nn.Module in eval mode, or an ONNX Runtime wrapper
    classes: list[str]
    preprocessing: Preprocessing
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    kind: str = "safetensors"  # "safetensors" | "checkpoint" | "onnx"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalized float batch [N,C,H,W]."""
        return self.model(x)

    @property
    def torch_model(self) -> ResNet:
        """The PyTorch model (export needs one; an .onnx file cannot provide it)."""
        if not isinstance(self.model, ResNet):
            raise CheckpointError(f"{self.path} is an ONNX model; this needs PyTorch weights")
        return self.model


def _strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        for p in _WRAPPER_PREFIXES:
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_training_checkpoint(path: str | Path) -> LoadedModel:
    """A trainer checkpoint (``torch.save``d dict), read without unpickling arbitrary objects.

    Its config, class names and preprocessing are checked, and the tensors compared with
    the model on the meta device, before any parameter is allocated."""
    ckpt = safe_torch_load(path)
    where = str(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and ("state_dict" in ckpt or "conv1.weight" in ckpt):
            hint = " (a third-party state dict? convert it with 'resnetlab import ...')"
        raise CheckpointError(f"{where} is not a resnetlab training checkpoint{hint}")
    check_format_version(ckpt.get("format_version"), 1, where)
    for key in ("model_config", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{where}: checkpoint lacks {key!r}")
    state = ckpt["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{where}: 'model' is not a state dict of tensors")
    meta = ckpt.get("meta") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: 'meta' is not a dict")
    meta = dict(meta)
    config = parse_config(ckpt["model_config"], where)
    classes, pre = parse_meta(meta, config.num_classes, config.in_channels, where)
    state = _strip_prefixes(state)
    model = fill_model(meta_model(config, state, where), state, where)
    meta.setdefault("model_config", model.config.to_dict())
    return LoadedModel(model, classes, pre, meta, Path(path), "checkpoint")


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """Our metadata from an ONNX model's metadata_props (written by ``resnetlab export``)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise CheckpointError(f"{path} is not a valid ONNX file: {type(e).__name__}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise CheckpointError(
            f"{path} has no resnetlab metadata (classes, preprocessing); "
            "export it with 'resnetlab export' to use it here"
        )
    meta = parse_json(props[META_KEY], str(path))
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: resnetlab metadata is not a JSON object")
    return meta


def load_onnx(path: str | Path, threads: int | None = None) -> LoadedModel:
    """An exported .onnx: metadata checked, then the graph's input and output shapes
    compared with it, so a mismatch is one line here rather than a runtime failure."""
    where = str(path)
    meta = read_onnx_meta(path)
    if "model_config" in meta:
        config = parse_config(meta["model_config"], where)
        num_classes, in_channels = config.num_classes, config.in_channels
    else:
        classes = meta.get("classes")
        num_classes, in_channels = (len(classes) if isinstance(classes, list) else 0), None
    classes, pre = parse_meta(meta, num_classes, in_channels, where)
    model = OnnxModel(path, threads)
    inp, out = model.session.get_inputs()[0].shape, model.session.get_outputs()[0].shape
    want_in = [pre.channels, pre.size, pre.size]
    if len(inp) != 4 or any(isinstance(d, int) and d != w for d, w in zip(inp[1:], want_in)):
        raise CheckpointError(
            f"{where}: the graph takes input {inp}, its metadata describes "
            f"[N, {', '.join(map(str, want_in))}] images"
        )
    if len(out) != 2 or (isinstance(out[1], int) and out[1] != len(classes)):
        raise CheckpointError(
            f"{where}: the graph outputs {out}, its metadata names {len(classes)} classes"
        )
    return LoadedModel(model, classes, pre, meta, Path(path), "onnx")


def load_model_file(path: str | Path) -> LoadedModel:
    """Load .safetensors, a training checkpoint or an exported .onnx into a LoadedModel."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a model file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        model, meta = load_weights(path)
        classes, pre = parse_meta(meta, model.config.num_classes, None, str(path))
        return LoadedModel(model, classes, pre, meta, path, "safetensors")
    if suffix in CHECKPOINT_SUFFIXES:
        return load_training_checkpoint(path)
    if suffix == ".onnx":
        return load_onnx(path)
    raise CheckpointError(
        f"unknown model file type {suffix or '(none)'!r} for {path}: expected .safetensors, "
        f"{', '.join(CHECKPOINT_SUFFIXES)} (training checkpoint) or .onnx"
    )


def load_pretrained(path: str | Path) -> LoadedModel:
    """Weights to start training from (``train --init``): our .safetensors or training
    checkpoint, or a third-party state dict converted on the fly — akamaster's CIFAR
    checkpoints (classifier ``linear``) and torchvision-layout ImageNet ResNets."""
    from resnetlab.interop.akamaster import akamaster_preprocessing, convert_akamaster
    from resnetlab.interop.torchvision_format import convert_torchvision, imagenet_preprocessing

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--init weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise CheckpointError(f"{path} is an ONNX graph; --init needs PyTorch weights")
    if suffix == ".safetensors":
        return load_model_file(path)
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return load_training_checkpoint(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    keys = [str(k).removeprefix("module.") for k in state] if isinstance(state, dict) else []
    if any(k.startswith("linear.") for k in keys):
        model = convert_akamaster(obj, None, str(path))
        pre, origin = akamaster_preprocessing(), "akamaster"
    else:
        model = convert_torchvision(obj, None, str(path))
        pre, origin = imagenet_preprocessing(), "torchvision-format"
    n = model.config.num_classes
    classes = [f"class_{i}" for i in range(n)]
    return LoadedModel(model, classes, pre, {"source": origin}, path, origin)
