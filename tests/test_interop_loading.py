"""Safe loading: malicious pickles are refused with nothing executed; every file kind loads."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch

from resnetlab.cli import main
from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.loading import load_model_file
from resnetlab.interop.safe_load import safe_torch_load
from resnetlab.models import create_model


class _CreatesFile:
    """Unpickling this calls open(path, "w"): it would create the file if executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    zipped, raw = tmp_path / "evil.pt", tmp_path / "evil.pth"
    torch.save({"model": _CreatesFile(marker)}, zipped)
    with raw.open("wb") as f:
        pickle.dump({"model": _CreatesFile(marker)}, f, protocol=2)
    assert not marker.exists()  # writing the files did not run the payload
    for path in (zipped, raw):
        with pytest.raises(CheckpointError, match="refusing to load") as err:
            safe_torch_load(path)
        assert "\n" not in str(err.value)
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_model_file(path)
        assert not marker.exists()
    # the same through the CLI: one line, exit status 2
    assert main(["export", "--checkpoint", str(zipped), "--format", "onnx"]) == 2
    assert not marker.exists()


def _training_checkpoint(path: Path, prefix: str = "") -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model("resnet20").eval()
    pre = Preprocessing(size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {
            "format": "resnetlab-checkpoint",
            "format_version": 1,
            "model_config": model.config.to_dict(),
            "model": {prefix + k: v for k, v in model.state_dict().items()},
            "meta": {
                "classes": [f"k{i}" for i in range(10)],
                "preprocessing": pre.to_dict(),
                "recipe": {"lr": 0.1},
                "metrics": {"top1": 12.5},
            },
            "optimizer": opt.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "iteration": 7,
        },
        path,
    )
    return model


@pytest.mark.parametrize("prefix", ["", "_orig_mod."])
def test_training_checkpoint_loads_with_its_metadata(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "last.pt"
    model = _training_checkpoint(path, prefix)
    lm = load_model_file(path)
    assert lm.kind == "checkpoint" and lm.classes[0] == "k0"
    assert lm.preprocessing.mean == [0.5, 0.5, 0.5] and lm.meta["metrics"] == {"top1": 12.5}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(lm(x), model(x).detach(), rtol=0, atol=0)


def test_clear_errors_for_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model_file(tmp_path / "nope.safetensors")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"123")
    with pytest.raises(CheckpointError, match="unknown model file type"):
        load_model_file(odd)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": create_model("resnet20").state_dict()}, foreign)
    with pytest.raises(CheckpointError, match=r"not a resnetlab training checkpoint.*import"):
        load_model_file(foreign)
    trunc = tmp_path / "trunc.pt"
    _training_checkpoint(trunc)
    trunc.write_bytes(trunc.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model_file(trunc)
    noise = tmp_path / "noise.pt"  # bytes that are no pickle: corrupt, not "could run code"
    noise.write_bytes(bytes([0x9C]) + bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*byte 156 is not pickle"):
        load_model_file(noise)
    inst = tmp_path / "inst.pt"  # a real pickle opcode the weights-only unpickler refuses (INST)
    inst.write_bytes(b"(S'pwned'\nios\nsystem\n.")
    with pytest.raises(CheckpointError, match=r"refusing to load.*could run code"):
        load_model_file(inst)
    bad_onnx = tmp_path / "m.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage")
    with pytest.raises(CheckpointError):
        load_model_file(bad_onnx)


def test_torchscript_archives_are_not_loaded_as_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.randn(1, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_model_file(path)
