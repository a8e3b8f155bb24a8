"""``resnetlab export``: deployable ONNX or TorchScript files that carry our metadata.

The exported file keeps classes and preprocessing (ONNX ``metadata_props`` or a
TorchScript extra file), so ``predict`` can run an .onnx directly. Every ONNX export
is checked against PyTorch with ONNX Runtime before the command reports success.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.atomic import check_writable, write_atomic
from resnetlab.errors import CheckpointError
from resnetlab.interop.weights import META_KEY

ONNX_TOLERANCE = 1e-4
TORCHSCRIPT_META_FILE = "resnetlab.json"


def _example_input(
    model: nn.Module, meta: dict[str, Any] | None, image_size: int | None, batch: int
) -> torch.Tensor:
    config = getattr(model, "config", None)
    if image_size is None:
        pre = (meta or {}).get("preprocessing") or {}
        image_size = int(pre.get("size") or (config.native_size if config else 224))
    channels = config.in_channels if config else 3
    return torch.randn(batch, channels, image_size, image_size)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    image_size: int | None = None,
    dynamic_batch: bool = False,
    batch_size: int = 1,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Export ``model`` (eval mode) to ONNX with the dynamo exporter; ``meta`` goes in metadata_props.

    Without ``dynamic_batch`` the input batch is fixed at ``batch_size`` (fastest for
    ONNX Runtime); with it the first dimension is symbolic ("batch"). The file appears
    under ``path`` only once written in full and, if given, ``verify(tmp_path)`` passed.
    """
    model = model.eval()
    x = _example_input(model, meta, image_size, 2 if dynamic_batch else batch_size)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=dynamic_shapes,
                verbose=False,
                optimize=True,
            )
    except Exception as e:  # an exporter failure is a bug report, but say which model
        raise RuntimeError(f"ONNX export failed: {e}") from e
    assert program is not None
    proto = program.model_proto
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name = "resnetlab"
    data = proto.SerializeToString()
    return write_atomic(path, lambda f: f.write(data), verify)


def onnx_max_abs_diff(path: str | Path, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| on input ``x``: the export's correctness check."""
    from resnetlab.interop.loading import OnnxModel

    with torch.inference_mode():
        expected = model.eval()(x)
    got = OnnxModel(path)(x)
    return float((got - expected).abs().max())


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    image_size: int | None = None,
    batch_size: int = 1,
) -> Path:
    """Trace ``model`` (eval mode) to TorchScript; ``meta`` is stored as extra file resnetlab.json.

    Tracing is exact for ResNets (no data-dependent control flow); the traced graph
    accepts any batch size and image size the network itself accepts.
    """
    model = model.eval()
    x = _example_input(model, meta, image_size, batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,), check_trace=True)
        extra = {TORCHSCRIPT_META_FILE: json.dumps(meta or {})}
        buffer = io.BytesIO()  # serialised here, so that a write error is a Python OSError
        torch.jit.save(traced, buffer, _extra_files=extra)
    return write_atomic(path, lambda f: f.write(buffer.getbuffer()))


def default_out(checkpoint: Path, fmt: str) -> Path:
    return checkpoint.with_name(checkpoint.stem + (".onnx" if fmt == "onnx" else ".torchscript.pt"))


MAX_BATCH = 4096  # as the dynamic batch dimension's bound


def check_export_args(checkpoint: str | Path, out: str | Path, batch_size: int) -> None:
    """Refuse bad flags before the model is loaded or traced."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise CheckpointError(f"--batch-size must be in 1..{MAX_BATCH}, got {batch_size}")
    check_writable(out)
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise CheckpointError(f"--out {out} is the input checkpoint; choose another file")


def export_file(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    dynamic_batch: bool = False,
    batch_size: int = 1,
) -> tuple[Path, float | None]:
    """Export a .safetensors or training checkpoint; returns (path, ONNX max abs diff or None).

    An ONNX file is checked with ONNX Runtime before it is renamed into place, so a
    file under the final name has always passed the check."""
    from resnetlab.interop.loading import load_model_file

    if fmt not in ("onnx", "torchscript"):
        raise CheckpointError(f"unknown export format {fmt!r}; choose onnx or torchscript")
    path = Path(out) if out else default_out(Path(checkpoint), fmt)
    check_export_args(checkpoint, path, batch_size)
    loaded = load_model_file(checkpoint)
    model = loaded.torch_model
    meta = dict(loaded.meta)
    meta.update(
        model_config=model.config.to_dict(),
        classes=loaded.classes,
        preprocessing=loaded.preprocessing.to_dict(),
    )
    meta.setdefault("format", "resnetlab-weights")
    meta.setdefault("format_version", 1)
    meta["exported_from"] = Path(checkpoint).name
    if fmt == "torchscript":
        return export_torchscript(model, path, meta=meta, batch_size=batch_size), None
    n = 3 if dynamic_batch else batch_size  # check a batch size other than the example's
    x = _example_input(model, meta, None, n)
    diffs = []

    def check(tmp: Path) -> None:
        diffs.append(onnx_max_abs_diff(tmp, model, x))
        if diffs[-1] > ONNX_TOLERANCE:
            raise RuntimeError(
                f"ONNX Runtime output differs from PyTorch by {diffs[-1]:.2e} (> 1e-4)"
            )

    export_onnx(
        model, path, meta=meta, dynamic_batch=dynamic_batch, batch_size=batch_size, verify=check
    )
    return path, diffs[-1]


def run(args: argparse.Namespace) -> int:
    path, diff = export_file(
        args.checkpoint,
        args.format,
        args.out,
        dynamic_batch=args.dynamic_batch,
        batch_size=args.batch_size,
    )
    check = f" (ONNX Runtime vs PyTorch max abs diff {diff:.1e})" if diff is not None else ""
    print(f"wrote {path}{check}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="export weights to ONNX or TorchScript (metadata included)",
        description="Export a .safetensors file or training checkpoint to ONNX (checked against "
        "PyTorch with ONNX Runtime, within 1e-4) or TorchScript (traced).",
    )
    p.add_argument("--checkpoint", required=True, help=".safetensors or training checkpoint (.pt)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX: symbolic batch dimension")
    p.add_argument("--batch-size", type=int, default=1, help="fixed batch size (default 1)")
    p.add_argument(
        "--out", help="output file (default: next to the input, .onnx / .torchscript.pt)"
    )
    p.set_defaults(func=run)
