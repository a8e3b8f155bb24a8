"""Export: ONNX (checked with ONNX Runtime within 1e-4) and TorchScript, metadata carried along."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from resnetlab.benchmarks.infer import calibrated_model
from resnetlab.cli import main
from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.export import export_onnx, export_torchscript, onnx_max_abs_diff
from resnetlab.interop.loading import OnnxModel, load_model_file
from resnetlab.interop.weights import META_KEY, save_weights
from resnetlab.models import ResNet


def _weights(tmp_path: Path, name: str = "resnet20", size: int = 32) -> tuple[Path, ResNet]:
    model = calibrated_model(name, size)
    assert isinstance(model, ResNet)
    n = model.config.num_classes
    path = tmp_path / f"{name}.safetensors"
    save_weights(
        path,
        model,
        classes=[f"k{i}" for i in range(n)],
        preprocessing=Preprocessing(size=size, mean=[0.4] * 3, std=[0.2] * 3),
    )
    return path, model


def test_onnx_export_cli_dynamic_batch_matches_pytorch_and_predicts(tmp_path: Path) -> None:
    path, model = _weights(tmp_path)
    out = tmp_path / "r20.onnx"
    args = ["export", "--checkpoint", str(path), "--format", "onnx", "--dynamic-batch"]
    assert main([*args, "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[META_KEY])
    assert meta["classes"][3] == "k3" and meta["model_config"]["name"] == "resnet20"
    lm = load_model_file(out)
    assert lm.kind == "onnx" and lm.preprocessing.mean == [0.4] * 3 and lm.classes[0] == "k0"
    for n in (1, 5):  # dynamic batch: any size
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        assert (lm(x) - expected).abs().max() <= 1e-4
        assert lm(x).shape == (n, 10)


def test_onnx_resnet50_matches_pytorch_within_1e_4(tmp_path: Path) -> None:
    model = calibrated_model("resnet50", 64)
    out = export_onnx(model, tmp_path / "r50.onnx", image_size=64, batch_size=2)
    x = torch.randn(3, 3, 64, 64)  # 3 on a fixed batch of 2: fed in padded chunks
    assert onnx_max_abs_diff(out, model, x) <= 1e-4
    assert OnnxModel(out).fixed_batch == 2


def test_onnx_without_our_metadata_is_refused_by_loader(tmp_path: Path) -> None:
    model = calibrated_model("resnet20", 32)
    out = export_onnx(model, tmp_path / "bare.onnx")
    with pytest.raises(CheckpointError, match="no resnetlab metadata"):
        load_model_file(out)


def test_torchscript_export_carries_metadata_and_matches(tmp_path: Path) -> None:
    path, model = _weights(tmp_path)
    assert main(["export", "--checkpoint", str(path), "--format", "torchscript"]) == 0
    out = tmp_path / "resnet20.torchscript.pt"
    files = {"resnetlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["resnetlab.json"])["classes"][9] == "k9"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=1e-5)
    direct = export_torchscript(model, tmp_path / "direct.pt", meta={"a": 1}, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        files = {"resnetlab.json": ""}
        torch.jit.load(str(direct), _extra_files=files)
    assert json.loads(files["resnetlab.json"]) == {"a": 1}
