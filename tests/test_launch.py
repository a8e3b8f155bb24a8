"""`train` starts one process per core by itself (training/launch.py).

The launched workers must be the torchrun code path exactly (same weights as one process
with --accum-steps 2), record their layout, pass a stop signal on, and resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config

from resnetlab.errors import ResnetlabError
from resnetlab.training import launch
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.config import TrainConfig
from resnetlab.training.loop import train

ENV = {
    **{k: v for k, v in os.environ.items() if k != launch.PROCS_ENV},
    "PYTHONPATH": str(REPO),
    "MPLBACKEND": "Agg",
}


def _args(data: Path, out: Path, *extra: str, iters: int = 4) -> list[str]:
    return [
        sys.executable, "-m", "resnetlab", "train", "--data", str(data), "--iters", str(iters),
        "--batch-size", "24", "--val-size", "6", "--eval-every", "2", "--channels-last", "off",
        "--log-every", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return dict(load_checkpoint(out / "checkpoints" / "last.pt")["model"])


def test_procs_2_is_the_ddp_path_and_records_its_layout(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    done = subprocess.run(
        _args(tiny_dataset, out, "--procs", "2"), capture_output=True, text=True, env=ENV,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "process layout: 2 process(es), as configured (--procs 2): 2 processes x 1 thread" in (
        done.stdout
    )
    assert done.stdout.count("test accuracy:") == 1  # rank 0 reports, once
    doc = json.loads((out / "config.json").read_text())
    env = doc["environment"]
    assert (env["world_size"], env["launcher"], env["threads"]) == (2, "resnetlab", 1)
    assert env["batch_norm"] == "per process, over 12 images"
    assert env["openmp"]["OMP_NUM_THREADS"] == "1"
    assert doc["train"]["procs"] == 2
    single = tmp_path / "single"
    train(tiny_config(tiny_dataset, single, iters=4, batch_size=24, eval_every=2, accum_steps=2))
    for k, v in _weights(out).items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, _weights(single)[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_stop_signal_reaches_every_worker_and_the_run_resumes(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stopped"
    args = _args(tiny_dataset, out, "--procs", "2", iters=400)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # wait for training to be under way
        if line.startswith("iter") or "it/s" in line or "img/s" in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 3, stderr[-3000:]
    stopped_at = int(load_checkpoint(out / "checkpoints" / "last.pt")["iteration"])
    assert 0 < stopped_at < 400
    assert "interrupted" not in stderr  # one signal each: a clean stop, not an abort
    end = str(stopped_at + 2)
    resume = [sys.executable, "-m", "resnetlab", "train", "--resume", "--out", str(out),
              "--iters", end]  # fmt: skip
    resumed = subprocess.run(resume, capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 process(es), as configured (--procs 2)" in resumed.stdout  # the run's own layout
    assert int(load_checkpoint(out / "checkpoints" / "last.pt")["iteration"]) == int(end)


def test_bad_layouts_are_one_line_errors_before_any_worker_starts(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    for extra, message in (
        (["--procs", "5"], "error: the global batch size 24 is not divisible by world size 5"),
        (["--procs", "-1"], "error: procs must be 0 (auto) .. 1024"),
    ):
        out = tmp_path / "bad"
        done = subprocess.run(_args(tiny_dataset, out, *extra), capture_output=True, text=True,
                              env=ENV, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), done.stderr
        assert not out.exists()
    bad_env = subprocess.run(
        _args(tiny_dataset, tmp_path / "env"), capture_output=True, text=True,
        env={**ENV, launch.PROCS_ENV: "two"}, timeout=120,
    )  # fmt: skip
    assert bad_env.returncode == 2
    assert "$RESNETLAB_PROCS must be a number of processes, got 'two'" in bad_env.stderr


@pytest.mark.parametrize(
    ("cores", "changes", "procs", "reason"),
    [
        (2, {}, 2, "one process per core (2)"),
        (4, {}, 4, "one process per core (4)"),
        (1, {}, 1, "one core"),
        (2, {"threads": 2}, 1, "--threads 2 asks for one process"),
        (2, {"batch_size": 25}, 1, "batch 25 does not split over 2 cores"),
        (2, {"procs": 3, "batch_size": 24}, 3, "3 process(es), as configured"),
    ],
)
def test_auto_layout(
    cores: int,
    changes: dict[str, int],
    procs: int,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(launch.PROCS_ENV, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launch, "cpu_cores", lambda: cores)
    cfg = dataclasses.replace(TrainConfig(data="cifar10", device="cpu"), **changes)
    resolved, why = launch.resolve_layout(cfg)
    assert resolved.procs == procs
    assert reason in why


def test_large_images_stay_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import write_tiny_folder_dataset

    monkeypatch.delenv(launch.PROCS_ENV, raising=False)
    monkeypatch.setattr(launch, "cpu_cores", lambda: 2)
    big = write_tiny_folder_dataset(tmp_path / "big", n_train=2, n_test=1, size=96)
    small = write_tiny_folder_dataset(tmp_path / "small", n_train=2, n_test=1, size=8)
    cfg = TrainConfig(device="cpu", batch_size=24)
    assert launch.resolve_layout(dataclasses.replace(cfg, data=str(big)))[0].procs == 1
    assert launch.resolve_layout(dataclasses.replace(cfg, data=str(small)))[0].procs == 2


def test_a_config_from_before_procs_keeps_its_recorded_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    train = {k: v for k, v in TrainConfig().to_dict().items() if k != "procs"}
    path.write_text(json.dumps({"train": train, "environment": {"world_size": 1}}))
    assert TrainConfig.load(path).procs == 1
    path.write_text(json.dumps({"train": train, "environment": {"world_size": 4}}))
    assert TrainConfig.load(path).procs == 4


def test_gpu_processes_are_torchruns_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(
        "resnetlab.training.setup.resolve_device", lambda name: torch.device("cuda", 0)
    )
    with pytest.raises(ResnetlabError, match="torchrun --nproc-per-node"):
        launch.resolve_layout(TrainConfig(procs=2))
    assert launch.resolve_layout(TrainConfig())[0].procs == 1
