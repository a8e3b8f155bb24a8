"""Test-time flip and shift averaging: the hand computation, and the same figure from
training's final evaluation and from `eval` on the saved weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import run_cli, tiny_config

from resnetlab.models import create_model
from resnetlab.training.evaluate import flip_averaged, shift_averaged, tta_predictor
from resnetlab.training.loop import train


def test_shift_averaging_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        got = tta_predictor(model, flip=True, shift=1)(x)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [x, padded[..., 0:8, 0:8], padded[..., 2:10, 2:10]]  # still, up-left, down-right

        def mirrored(v: torch.Tensor) -> torch.Tensor:
            return 0.5 * (model(v) + model(torch.flip(v, dims=[3])))

        want = 0.5 * mirrored(views[0]) + 0.25 * (mirrored(views[1]) + mirrored(views[2]))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # the moved copies are the image moved by one pixel: row 0 of "down-right" is row 1
    torch.testing.assert_close(views[2][..., 0, 0], x[..., 1, 1])
    assert shift_averaged(model, 0) is model
    assert flip_averaged(model) is not model


def test_training_and_eval_report_the_same_accuracy_with_flip_and_shift(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(tiny_config(tiny_dataset, out, iters=4, tta_flip=True, tta_shift=2, val_size=0))
    results = json.loads((out / "results.json").read_text())
    done = run_cli(
        "eval", "--checkpoint", str(out / "model.safetensors"), "--data", str(tiny_dataset),
        "--tta-flip", "--tta-shift", "2", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["n"] == results["test"]["n"]
    assert abs(got["top1_acc"] - results["test"]["top1_acc"]) < 1e-9
    plain = run_cli(
        "eval", "--checkpoint", str(out / "model.safetensors"), "--data", str(tiny_dataset),
        "--tta-shift", "9",
    )  # fmt: skip
    assert plain.returncode == 2 and "--tta-shift must be 0..8" in plain.stderr
