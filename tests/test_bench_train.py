"""bench train runs end to end at a tiny size and prints one valid JSON line (not timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_bench_train_json(tiny_dataset: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "resnetlab",
        "bench",
        "train",
        "--data",
        str(tiny_dataset),
        "--batch-size",
        "12",
        "--seconds",
        "0.2",
        "--compile",
        "off",
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["ours"]["images_per_s"] > 0 and r["baseline"]["images_per_s"] > 0
    assert r["speedup"] == r["ours"]["images_per_s"] / r["baseline"]["images_per_s"]
    assert r["matmul_gflops"] > 0 and r["ours_fraction_of_cap"] > 0
    # 3 x 2 x multiply-adds of resnet20 at 8x8 (1/16 of 40.55M at 32x32)
    expected = 6 * 40.55e6 / 16 / 1e9
    assert abs(r["gflop_per_image"] - expected) / expected < 0.01


def test_bench_train_needs_image_files() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "resnetlab", "bench", "train", "--data", "/nonexistent/x"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:")
