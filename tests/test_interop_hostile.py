"""Hostile or damaged metadata in a model file: one ``error:`` line, fast, nothing built.

Each case edits a valid file (our .safetensors, a training checkpoint .pt, or an .onnx's
metadata) the way a damaged or malicious file could, then runs ``predict`` on it. Every
one must end in exit status 2 and exactly one ``error:`` line within seconds: the
metadata is validated, and the tensors compared with a model on the meta device, before
any model is built for real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli
from onnx import TensorProto, helper
from PIL import Image
from safetensors.torch import save_file

from resnetlab.cli import main
from resnetlab.data.preprocess import Preprocessing
from resnetlab.interop.weights import META_KEY, read_weights, save_weights
from resnetlab.models import create_model

PRE = Preprocessing(size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
CLASSES = [f"k{i}" for i in range(10)]
FAST_S = 3.0  # a refusal must not build the model; a built resnet20 would still be faster
Edit = Callable[[dict[str, Any], dict[str, torch.Tensor]], Any]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A valid .safetensors, training checkpoint and .onnx, and an image to predict."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = create_model("resnet20")
    weights = save_weights(root / "good.safetensors", model, classes=CLASSES, preprocessing=PRE)
    _, meta = read_weights(weights)
    torch.save(_checkpoint(meta, dict(model.state_dict())), root / "good.pt")
    _onnx(root / "good.onnx", json.dumps({"classes": CLASSES, "preprocessing": PRE.to_dict()}))
    image = root / "cat.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(image)
    return {
        "safetensors": weights,
        "pt": root / "good.pt",
        "onnx": root / "good.onnx",
        "image": image,
    }


def _checkpoint(meta: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "resnetlab-checkpoint",
        "format_version": 1,
        "model_config": meta["model_config"],
        "model": state,
        "meta": {"classes": meta["classes"], "preprocessing": meta["preprocessing"]},
    }


def _onnx(path: Path, meta_json: str, size: int = 32, classes: int = 10) -> Path:
    """A tiny real graph (mean pool -> linear) with our metadata: fast to build and run."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, classes], [0.1] * (3 * classes))
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta_json
    onnx.save(proto, str(path))
    return path


def _predict_refuses(
    image: Path, model_file: Path, capsys: pytest.CaptureFixture[str], match: str
) -> None:
    t0 = time.perf_counter()
    status = main(["predict", str(image), "--checkpoint", str(model_file)])
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert match in err, err
    assert out == ""
    assert elapsed < FAST_S, f"{elapsed:.1f} s: was the model built?"


def _cfg(**kw: Any) -> Edit:
    return lambda meta, _: meta["model_config"].update(kw)


def _pre(**kw: Any) -> Edit:
    return lambda meta, _: meta["preprocessing"].update(kw)


def _set(key: str, value: Any) -> Edit:
    return lambda meta, _: meta.__setitem__(key, value)


def _del_mean(meta: dict[str, Any], _: object) -> None:
    del meta["preprocessing"]["mean"]


def _tensor(name: str, value: torch.Tensor) -> Edit:
    return lambda _, tensors: tensors.__setitem__(name, value)


SAFETENSORS_EDITS: dict[str, tuple[Edit, str]] = {
    "huge block count": (_cfg(layers=[300_000, 3, 3]), "at most 1000 blocks"),
    "many stages": (_cfg(layers=[3] * 50), "layers must be 1 to 8"),
    "extra stage": (_cfg(layers=[3, 3, 3, 3]), "missing tensors of blocks layer4.0..2"),
    "negative width": (_cfg(width=-16), "width must be in 1..8192"),
    "width as string": (_cfg(width="16"), "'width' must be an integer"),
    "num_classes a float": (_cfg(num_classes=10.0), "'num_classes' must be an integer"),
    "num_classes huge": (_cfg(num_classes=10**12), "num_classes must be in 1..100000"),
    "zero_init_residual a string": (_cfg(zero_init_residual="yes"), "true or false"),
    "unknown block type": (_cfg(block="triple"), "block must be one of"),
    "unknown shortcut": (_cfg(shortcut="D"), "shortcut must be one of"),
    "unknown config key": (_cfg(dropout=0.5), "unknown model config keys"),
    "nested garbage": (_cfg(layers=[[3], {"x": [1, {"y": None}]}, 3]), "list of integers"),
    "config is a list": (_set("model_config", [1, 2, 3]), "model config must be an object"),
    "config lacks layers": (lambda m, _: m["model_config"].pop("layers"), "lacks 'layers'"),
    "classes mismatch": (_set("classes", CLASSES[:9]), "9 classes for 10 outputs"),
    "classes not strings": (_set("classes", list(range(10))), "list of strings"),
    "classes a dict": (_set("classes", {"a": 1}), "list of strings"),
    "preprocessing lacks mean": (_del_mean, "preprocessing lacks 'mean'"),
    "mean of wrong length": (_pre(mean=[0.5, 0.5]), "mean must be 3 number(s)"),
    "mean image of wrong size": (_pre(mean=[[[0.5] * 8] * 8] * 3), "3x32x32 mean image"),
    "zero std": (_pre(std=[0.25, 0.0, 0.25]), "std must be 3 positive"),
    "NaN mean": (_pre(mean=[float("nan")] * 3), "mean must be"),
    "size as string": (_pre(size="32"), "size must be an integer"),
    "unknown mode": (_pre(mode="CMYK"), "mode must be 'RGB' or 'L'"),
    "grey preprocessing for an RGB model": (
        _pre(mode="L", mean=[0.5], std=[0.25]),
        "1-channel images (L) but the model takes 3",
    ),
    "preprocessing a string": (_set("preprocessing", "imagenet"), "must be an object"),
    "format_version a string": (_set("format_version", "1"), "format_version must be"),
    "tensor of wrong shape": (_tensor("conv1.weight", torch.zeros(16, 3, 5, 5)), "shape mismatch"),
    "integer tensor for a float": (
        _tensor("bn1.running_mean", torch.zeros(16, dtype=torch.int64)),
        "wrong dtype",
    ),
    "absurd tensor name": (_tensor("layer" + "9" * 5000 + ".0.w", torch.zeros(1)), "unexpected"),
}


@pytest.mark.parametrize("case", list(SAFETENSORS_EDITS))
def test_hostile_safetensors_metadata(
    case: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, match = SAFETENSORS_EDITS[case]
    tensors, meta = read_weights(files["safetensors"])
    edit(meta, tensors)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={META_KEY: json.dumps(meta)})
    _predict_refuses(files["image"], bad, capsys, match)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("[1, 2, 3]", "metadata format is not"),  # JSON, but not an object
        ("{not json", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nested beyond the parser
    ],
    ids=["array", "broken", "deeply nested"],
)
def test_safetensors_metadata_that_is_no_json_object(
    header: str, match: str, files: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    tensors, _ = read_weights(files["safetensors"])
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={META_KEY: header})
    _predict_refuses(files["image"], bad, capsys, match)


PT_EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "huge block count": (
        lambda c: c["model_config"].update(layers=[300_000, 300_000, 300_000]),
        "at most 1000 blocks",
    ),
    "meta is a list": (lambda c: c.__setitem__("meta", [1, 2]), "'meta' is not a dict"),
    "format_version a string": (lambda c: c.__setitem__("format_version", "1"), "format_version"),
    "config a string": (lambda c: c.__setitem__("model_config", "resnet20"), "must be an object"),
    "non-string state keys": (lambda c: c["model"].__setitem__(7, torch.zeros(1)), "state dict"),
    "mean of wrong length": (
        lambda c: c["meta"]["preprocessing"].update(mean=[0.1] * 4),
        "mean must be 3 number(s)",
    ),
    "classes mismatch": (lambda c: c["meta"].update(classes=["a"]), "1 classes for 10 outputs"),
    "tensor missing": (lambda c: c["model"].pop("fc.bias"), "missing tensor"),
}


@pytest.mark.parametrize("case", list(PT_EDITS))
def test_hostile_training_checkpoint(
    case: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, match = PT_EDITS[case]
    ckpt = torch.load(files["pt"], weights_only=True)
    edit(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    _predict_refuses(files["image"], bad, capsys, match)


ONNX_META: dict[str, tuple[dict[str, Any], str]] = {
    "huge block count": (
        {"model_config": {"block": "basic", "layers": [300_000] * 3, "stem": "cifar"}},
        "at most 1000 blocks",
    ),
    "classes vs graph outputs": ({"classes": CLASSES[:5]}, "the graph outputs"),
    "size vs graph input": ({"preprocessing": dict(PRE.to_dict(), size=64)}, "the graph takes"),
    "grey vs graph input": (
        {"preprocessing": dict(PRE.to_dict(), mode="L", mean=[0.5], std=[0.2])},
        "the graph takes",
    ),
    "classes not strings": ({"classes": [None] * 10}, "list of strings"),
}


@pytest.mark.parametrize("case", list(ONNX_META))
def test_hostile_onnx_metadata(
    case: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, match = ONNX_META[case]
    meta = {"classes": CLASSES, "preprocessing": PRE.to_dict(), **change}
    bad = _onnx(tmp_path / "bad.onnx", json.dumps(meta))
    _predict_refuses(files["image"], bad, capsys, match)


@pytest.mark.parametrize("kind", ["safetensors", "pt", "onnx"])
def test_unedited_files_predict(
    kind: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline every hostile case starts from is accepted (so each refusal is the edit's)."""
    assert main(["predict", str(files["image"]), "--checkpoint", str(files[kind]), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["top"][0]["class"] in CLASSES and len(line["top"]) == 5


@pytest.mark.timeout(90)
def test_huge_block_count_refused_quickly_by_the_cli(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """The headline case end to end: without the bounds, this builds 900,000 blocks."""
    tensors, meta = read_weights(files["safetensors"])
    meta["model_config"]["layers"] = [300_000, 300_000, 300_000]
    bad = tmp_path / "big.safetensors"
    save_file(tensors, str(bad), metadata={META_KEY: json.dumps(meta)})
    t0 = time.perf_counter()
    done = run_cli("predict", str(files["image"]), "--checkpoint", str(bad), timeout=60)
    assert time.perf_counter() - t0 < 30
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: invalid model config (layers: at most 1000 blocks per stage, got 300000)"
    ]
