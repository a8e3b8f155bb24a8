"""Fine-tuning (``train --init``): third-party weights in, head replaced or kept, frozen
stages untouched, the pretrained part at its own learning rate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_config

import resnetlab.training.loop as loop_module
from resnetlab.interop.loading import load_pretrained
from resnetlab.models import create_model
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.loop import train


def _akamaster_file(path: Path, num_classes: int = 10) -> torch.nn.Module:
    """A ResNet-20 saved the way akamaster's project saves it (DataParallel, 'linear')."""
    torch.manual_seed(3)
    model = create_model("resnet20", zero_pad="both", num_classes=num_classes)
    state = {
        "module." + k.replace("fc.", "linear."): v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state, "best_prec1": 91.7}, path)
    return model


def _torchvision_resnet50_file(path: Path, num_classes: int) -> torch.nn.Module:
    """A torchvision-layout ResNet-50 state dict (v1.5: stride in the 3x3 conv)."""
    torch.manual_seed(4)
    model = create_model("resnet50", stride_in="3x3", num_classes=num_classes)
    with torch.no_grad():  # trained-looking BN statistics, so a wrong load would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), path)
    return model


def test_akamaster_weights_fine_tune_to_fewer_classes(tiny_dataset: Path, tmp_path: Path) -> None:
    src = _akamaster_file(tmp_path / "resnet20.th")
    out = tmp_path / "ft"
    done = run_cli(
        "train", "--data", str(tiny_dataset), "--recipe", "finetune", "--init",
        str(tmp_path / "resnet20.th"), "--iters", "3", "--batch-size", "12", "--threads", "1",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "classifier replaced (10 -> 3 classes)" in done.stdout
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["model_config"]["zero_pad"] == "both"  # the file's architecture, kept
    assert ckpt["meta"]["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    # trained from the file's weights, not from scratch: the stem moved only a little
    moved = (ckpt["model"]["conv1.weight"] - src.state_dict()["conv1.weight"]).abs().max()
    assert 0 < moved < 0.05
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["init"].endswith("resnet20.th") and cfg["recipe"] == "finetune"


def test_torchvision_resnet50_trains_further_from_its_exact_weights(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "resnet50.pth"
    source = _torchvision_resnet50_file(path, num_classes=3)
    loaded = load_pretrained(path)
    assert loaded.torch_model.config.stride_in == "3x3"
    first: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_step = loop_module.train_step

    def spy(model, opt, crit, x, y, lr, **kw):  # type: ignore[no-untyped-def]
        if not first:
            with torch.no_grad():
                reference = copy.deepcopy(source).train()
                first.append((model(x).detach(), reference(x)))
        return real_step(model, opt, crit, x, y, lr, **kw)

    monkeypatch.setattr(loop_module, "train_step", spy)
    cfg = tiny_config(tiny_dataset, tmp_path / "r50", model="resnet50", init=str(path),
                      stride_in="3x3", iters=2, eval_every=2, lr=0.01)  # fmt: skip
    result = train(cfg)
    assert result.finished
    ours, theirs = first[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_freeze_and_backbone_lr_scale(tiny_dataset: Path, tmp_path: Path) -> None:
    src = _akamaster_file(tmp_path / "r20.th", num_classes=3)
    cfg = tiny_config(tiny_dataset, tmp_path / "frozen", init=str(tmp_path / "r20.th"),
                      freeze=1, iters=3, eval_every=3, lr=0.05)  # fmt: skip
    train(cfg)
    after = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "last.pt")["model"]
    before = src.state_dict()
    for k in after:
        frozen = k.startswith(("conv1.", "bn1.", "layer1."))
        if k.endswith("num_batches_tracked") or not after[k].is_floating_point():
            continue
        assert torch.equal(after[k], before[k]) == frozen, k  # BN statistics included
    cfg = tiny_config(tiny_dataset, tmp_path / "headonly", init=str(tmp_path / "r20.th"),
                      backbone_lr_scale=0.0, weight_decay=0.0, iters=3, eval_every=3)  # fmt: skip
    train(cfg)
    after = load_checkpoint(tmp_path / "headonly" / "checkpoints" / "last.pt")["model"]
    assert torch.equal(after["layer3.2.conv2.weight"], before["layer3.2.conv2.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_init_that_does_not_fit_is_one_line(tiny_dataset: Path, tmp_path: Path) -> None:
    _akamaster_file(tmp_path / "r20.th")
    base = ["train", "--data", str(tiny_dataset), "--iters", "2", "--out", str(tmp_path / "o")]
    wrong = run_cli(*base, "--init", str(tmp_path / "r20.th"), "--model", "resnet56")
    assert wrong.returncode == 2 and "not a resnet56" in wrong.stderr, wrong.stderr
    pad = run_cli(*base, "--init", str(tmp_path / "r20.th"), "--zero-pad", "end")
    assert pad.returncode == 2 and "contradicts the --init weights" in pad.stderr
    missing = run_cli(*base, "--init", str(tmp_path / "nope.th"))
    assert missing.returncode == 2 and "--init weights not found" in missing.stderr
    for done in (wrong, pad, missing):
        assert done.stderr.count("\n") == 1 and not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.shared
def test_real_akamaster_checkpoint_fine_tunes_to_a_five_class_subset(tmp_path: Path) -> None:
    """The public ResNet-20 (10 CIFAR classes) on 5 classes of the real JPEG CIFAR-10:
    head replaced, body loaded, a few steps trained."""
    import shutil

    from data_fixtures import shared_dir

    shared = shared_dir()
    ckpt = shared / "checkpoints/akamaster-resnet20-12fca82f.th" if shared else None
    if ckpt is None or not ckpt.exists():
        pytest.skip("needs ../shared (akamaster checkpoint and cifar10-jpeg)")
    subset = tmp_path / "five"
    for split, n in (("train", 30), ("test", 10)):
        for cls in ("airplane", "bird", "cat", "ship", "truck"):
            src = sorted((shared / "data/cifar10-jpeg" / split / cls).iterdir())[:n]
            (subset / split / cls).mkdir(parents=True)
            for f in src:
                shutil.copy(f, subset / split / cls / f.name)
    out = tmp_path / "ft5"
    done = run_cli(
        "train", "--recipe", "finetune", "--init", str(ckpt), "--data", str(subset),
        "--iters", "4", "--batch-size", "30", "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "classifier replaced (10 -> 5 classes)" in done.stdout
    assert json.loads((out / "results.json").read_text())["test"]["n"] == 50
    head = load_checkpoint(out / "checkpoints" / "last.pt")["model"]["fc.weight"]
    assert head.shape == (5, 64)
