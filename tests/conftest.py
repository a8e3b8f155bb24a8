"""Shared fixtures: tiny datasets written by the tests themselves, and ../shared lookup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnetlab.training.config import TrainConfig
from resnetlab.training.recipes import build_config

REPO = Path(__file__).resolve().parents[1]

# `train` runs one process per core by default; the suite's many tiny runs stay in one
# process (inherited by the CLI subprocesses). tests/test_launch.py tests the default.
os.environ.setdefault("RESNETLAB_PROCS", "1")


def write_tiny_folder_dataset(
    root: Path, n_train: int = 24, n_test: int = 8, size: int = 8
) -> Path:
    """Three colour-coded classes (red/green/blue-ish noise) as PNG class folders."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(["blue", "green", "red"]):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
                img[..., 2 - c] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture()
def tiny_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "cache"))
    return write_tiny_folder_dataset(tmp_path / "tiny")


def tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data=str(data),
        iters=8,
        batch_size=12,
        val_size=6,
        eval_every=4,
        compile="off",
        channels_last="off",
        threads=1,
        out=str(out),
    )
    base.update(kw)
    return build_config("paper", "resnet20", base)


def run_cli(
    *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m resnetlab ARGS`` in a fresh process, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "resnetlab", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )
