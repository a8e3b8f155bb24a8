"""Importers: akamaster CIFAR checkpoints (every depth) and torchvision-format ImageNet weights.

The akamaster side is checked against an independent re-statement of that project's
forward pass (zeros padded on both sides of the channels), so a converter that put the
zero channels at the end, or mapped a key wrongly, would fail on outputs, not only on names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.cli import main
from resnetlab.errors import CheckpointError
from resnetlab.interop.akamaster import (
    CIFAR10_CLASSES,
    convert_akamaster,
    import_akamaster,
    infer_depth,
)
from resnetlab.interop.loading import load_model_file
from resnetlab.interop.torchvision_format import import_torchvision
from resnetlab.models import create_model
from resnetlab.models.fuse import fuse_bn


def shared_dir() -> Path | None:
    """RESNETLAB_SHARED, else <repo>/../shared, else /work/shared (None when absent)."""
    repo = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("RESNETLAB_SHARED"), repo.parent / "shared", "/work/shared"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


# --- an akamaster-style network, written from that project's documented conventions ---
class _AkaBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = stride != 1 or in_planes != planes
        self.planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        q = self.planes // 4
        sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, q, q)) if self.pad else x
        return F.relu(out + sc)


class _AkaResNet(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, inp = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for j in range(n):
                blocks.append(_AkaBlock(inp, planes, stride if j == 0 else 1))
                inp = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)
        return self.linear(out)


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 0.6)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]


def _aka_checkpoint(n: int, seed: int = 0) -> tuple[_AkaResNet, dict[str, object]]:
    torch.manual_seed(seed)
    ref = _AkaResNet(n).eval()
    _randomize_bn(ref)
    # akamaster: DataParallel prefix, no num_batches_tracked (older torch), best_prec1
    state = {
        "module." + k: v
        for k, v in ref.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    return ref, {"best_prec1": 91.5, "state_dict": state}


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_akamaster_conversion_matches_reference_outputs(depth: int) -> None:
    ref, ckpt = _aka_checkpoint((depth - 2) // 6)
    model = convert_akamaster(ckpt, f"resnet{depth}")
    assert model.config.zero_pad == "both" and model.config.shortcut == "A"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)
    wrong = create_model(f"resnet{depth}", zero_pad="end").eval()  # the plausible mistake
    wrong.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (wrong(x) - ref(x)).abs().max() > 1e-3


def test_akamaster_depth_1202_is_recognised_from_keys() -> None:
    keys = {f"module.layer{s}.{i}.conv1.weight" for s in (1, 2, 3) for i in range(200)}
    assert infer_depth({re.sub(r"^module\.", "", k): torch.zeros(1) for k in keys}) == 1202


def test_akamaster_model_mismatch_and_cli(tmp_path: Path) -> None:
    _, ckpt = _aka_checkpoint(3)
    path = tmp_path / "resnet20-aka.th"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"holds a resnet20.*not resnet32"):
        import_akamaster(path, "resnet32")
    assert main(["import", "akamaster", str(path), "--model", "resnet32"]) == 2
    assert main(["import", "akamaster", str(path), "--model", "resnet20"]) == 0
    lm = load_model_file(tmp_path / "resnet20-aka.safetensors")
    assert lm.classes == CIFAR10_CLASSES
    assert lm.preprocessing.mean == [0.485, 0.456, 0.406] and lm.preprocessing.size == 32
    assert lm.meta["source"].startswith("akamaster/pytorch_resnet_cifar10 resnet20-aka.th sha256:")
    assert lm.meta["metrics"]["reported_top1_cifar10_test"] == 91.5


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_torchvision_state_dict_loads_strictly_with_identical_outputs(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    src = create_model(name, stride_in="3x3").eval()
    _randomize_bn(src)
    path = tmp_path / f"{name}.pth"
    # as torchvision saves: a plain OrderedDict of tensors, num_batches_tracked included
    torch.save(dict(src.state_dict()), path)
    classes = tmp_path / "names.txt"
    classes.write_text("\n".join(f"name{i}" for i in range(1000)) + "\n")
    out = import_torchvision(path, name, classes_file=classes)
    lm = load_model_file(out)
    assert lm.model.config.stride_in == "3x3"  # type: ignore[union-attr]
    assert (
        lm.classes[999] == "name999"
        and lm.preprocessing.resize == 256
        and lm.preprocessing.size == 224
    )
    x = torch.randn(1, 3, 32, 32)  # small input: layer4 runs on 1x1 maps
    with torch.no_grad():
        torch.testing.assert_close(lm(x), src(x), rtol=0, atol=0)


def test_torchvision_import_refuses_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    state = dict(create_model("resnet18", stride_in="3x3").state_dict())
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="holds a resnet18"):
        import_torchvision(path, "resnet34")
    del state["layer1.0.bn1.running_var"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing tensor.*layer1\.0\.bn1\.running_var"):
        import_torchvision(path)
    # default class names and the CLI
    torch.save(dict(create_model("resnet18", stride_in="3x3").state_dict()), path)
    assert main(["import", "torchvision", str(path), "--model", "resnet18"]) == 0
    assert load_model_file(tmp_path / "r18.safetensors").classes[:2] == ["class_0", "class_1"]


@pytest.mark.shared
def test_akamaster_resnet20_reproduces_reference_accuracy(tmp_path: Path) -> None:
    shared = shared_dir()
    ckpt = shared / "checkpoints/akamaster-resnet20-12fca82f.th" if shared else None
    test_dir = shared / "data/cifar10-jpeg/test" if shared else None
    if ckpt is None or test_dir is None or not ckpt.is_file() or not test_dir.is_dir():
        pytest.skip("needs ../shared (akamaster checkpoint and cifar10-jpeg/test); not found")
    out = import_akamaster(ckpt, "resnet20", tmp_path / "aka.safetensors")
    lm = load_model_file(out)
    classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    assert classes == lm.classes
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((test_dir / c).glob("*.jpg"))]
    assert len(files) == 10_000
    images = torch.stack([lm.preprocessing.load(f) for f, _ in files])
    labels = torch.tensor([i for _, i in files])
    # BN folded + channels_last only for speed: equal to the imported model within 1e-5
    # (test_interop_fuse.py); the conversion under test is lm.model's weights
    fast = fuse_bn(lm.torch_model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    correct = 0
    for i in range(0, len(files), 1000):
        batch = lm.preprocessing.normalize(images[i : i + 1000])
        with torch.inference_mode():
            logits = fast(batch.contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1) == labels[i : i + 1000]).sum())
    assert abs(100 * correct / len(files) - 81.03) <= 0.1
