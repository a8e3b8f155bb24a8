"""bench train runs end to end at a tiny size and prints one valid JSON line (not timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from resnetlab.training import launch


@pytest.mark.slow  # 36 s of measuring; a benchmark command end to end
def test_bench_train_json(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESNETLAB_PROCS")  # ours in the trainer's default layout
    done = run_cli(
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
        "--compete",
        "busy",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["ours"]["images_per_s"] > 0 and r["baseline"]["images_per_s"] > 0
    cores = launch.cpu_cores()
    assert r["layout"] == (
        f"{cores} process(es) x 1 thread(s)" if cores > 1 else "1 process(es) x 1 thread(s)"
    )
    beside = r["ours_with_competitor"]
    assert beside["competitor"] == "busy" and beside["images_per_s"] > 0
    assert r["competitor_kept_fraction"] == beside["images_per_s"] / r["ours"]["images_per_s"]
    assert r["speedup"] == r["ours"]["images_per_s"] / r["baseline"]["images_per_s"]
    assert r["matmul_gflops"] > 0 and r["ours_fraction_of_cap"] > 0
    # the cap uses the faster of the two GEMM libraries, both reported
    assert r["matmul_gflops"] == max(r["matmul_gflops_mm"], r["matmul_gflops_onednn"])
    # 3 x 2 x multiply-adds of resnet20 at 8x8 (1/16 of 40.55M at 32x32)
    expected = 6 * 40.55e6 / 16 / 1e9
    assert abs(r["gflop_per_image"] - expected) / expected < 0.01


def test_bench_train_needs_image_files() -> None:
    done = run_cli("bench", "train", "--data", "/nonexistent/x", timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:")
