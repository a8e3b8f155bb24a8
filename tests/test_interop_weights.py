"""Our .safetensors weights format: round trip, metadata, and refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnetlab.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.loading import load_model_file
from resnetlab.interop.weights import META_KEY, load_weights, make_meta, save_weights
from resnetlab.models import create_model

CLASSES = [f"c{i}" for i in range(10)]
PRE = Preprocessing(mode="RGB", size=32, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


def _saved(
    tmp_path: Path, name: str = "resnet20", **overrides: object
) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(name, **overrides)  # type: ignore[arg-type]
    with torch.no_grad():  # non-default BN statistics, so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 1.5)  # type: ignore[union-attr]
    path = tmp_path / "w.safetensors"
    save_weights(
        path,
        model,
        classes=CLASSES,
        preprocessing=PRE,
        recipe={"name": "paper"},
        metrics={"top1": 91.2},
        source="unit test",
    )
    return path, model.eval()


def test_round_trip_rebuilds_same_model_and_metadata(tmp_path: Path) -> None:
    path, model = _saved(tmp_path, zero_pad="both")
    loaded, meta = load_weights(path)
    assert not loaded.training
    assert loaded.config == model.config and loaded.config.zero_pad == "both"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert meta["format"] == "resnetlab-weights" and meta["format_version"] == 1
    assert meta["classes"] == CLASSES and meta["model_config"]["name"] == "resnet20"
    assert Preprocessing.from_dict(meta["preprocessing"]) == PRE
    assert meta["recipe"] == {"name": "paper"} and meta["metrics"] == {"top1": 91.2}
    assert meta["resnetlab_version"] and meta["source"] == "unit test"
    lm = load_model_file(path)
    assert lm.classes == CLASSES and lm.preprocessing == PRE and lm.kind == "safetensors"
    torch.testing.assert_close(lm(x), model(x).detach(), rtol=0, atol=0)


def _rewrite(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, object]) -> Path:
    out = path.with_name("edited.safetensors")
    save_file(tensors, str(out), metadata={META_KEY: json.dumps(meta)})
    return out


def _contents(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    from resnetlab.interop.weights import read_weights

    return read_weights(path)


def test_metadata_that_does_not_match_tensors_is_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    tensors, meta = _contents(path)
    other = create_model("resnet32")  # config says resnet32, tensors are resnet20's
    bad_cfg = dict(meta, model_config=other.config.to_dict())
    with pytest.raises(CheckpointError, match="missing tensor"):
        load_weights(_rewrite(path, tensors, bad_cfg))
    extra = dict(tensors, **{"layer4.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        load_weights(_rewrite(path, extra, meta))
    shaped = dict(tensors, **{"fc.weight": torch.zeros(100, 64), "fc.bias": torch.zeros(100)})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_weights(_rewrite(path, shaped, meta))
    with pytest.raises(CheckpointError, match="classes"):
        load_weights(_rewrite(path, tensors, dict(meta, classes=["a", "b"])))
    with pytest.raises(CheckpointError, match="format"):
        load_weights(_rewrite(path, tensors, dict(meta, format="something-else")))


def test_truncated_corrupt_or_foreign_files_give_one_line_errors(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    for name, content in {
        "truncated.safetensors": data[: len(data) // 2],
        "header_only.safetensors": data[:40],
        "garbage.safetensors": b"\x00\x01not a safetensors file" * 10,
        "empty.safetensors": b"",
    }.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            load_weights(bad)
        assert "\n" not in str(err.value)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="no resnetlab metadata"):
        load_weights(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


def test_make_meta_refuses_wrong_number_of_classes() -> None:
    with pytest.raises(CheckpointError, match="3 class names"):
        make_meta(create_model("resnet20"), classes=["a", "b", "c"], preprocessing=PRE)
