"""Scale-out on the CPU (gloo): any world size, several nodes, and faults under torchrun.

Every run here is a real ``torchrun`` launch of ``resnetlab train`` on a tiny dataset the
test writes; faults (a killed or signalled worker) are injected by tests/ddp_worker.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_config

from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.loop import train

WORKER = REPO / "tests" / "ddp_worker.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--iters", "4", "--batch-size", "24", "--val-size", "6",
        "--eval-every", "2", "--threads", "1", "--channels-last", "off", "--compile", "off",
        "--log-every", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(
    nproc: int, args: list[str], *launcher: str, fault: str = "", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if not launcher:
        launcher = ("--standalone",)
    return subprocess.run(
        [*cmd, *launcher, str(WORKER), *args],
        capture_output=True,
        text=True,
        env={**ENV, "FAULT": fault},
        timeout=timeout,
    )


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def _assert_params_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k, v in a.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, b[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("world", [3, pytest.param(8, marks=pytest.mark.slow)])  # 8: 39 s
def test_any_world_size_equals_one_process_with_accumulation(
    world: int, tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / f"w{world}"
    done = _torchrun(world, _train_args(tiny_dataset, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"weights identical on all {world} ranks" in done.stdout
    env = json.loads((out / "config.json").read_text())["environment"]
    assert (env["world_size"], env["backend"]) == (world, "gloo")
    assert env["batch_norm"] == f"per process, over {24 // world} images"
    results = json.loads((out / "results.json").read_text())
    assert (results["val"]["n"], results["test"]["n"]) == (6, 24)  # every image once
    single = tmp_path / "single"
    train(tiny_config(tiny_dataset, single, iters=4, batch_size=24, eval_every=2,
                      accum_steps=world))  # fmt: skip
    _assert_params_close(_weights(out), _weights(single))


def test_batch_that_does_not_split_names_the_sizes_that_do(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    args = _train_args(tiny_dataset, tmp_path / "odd")
    args[args.index("--batch-size") + 1] = "20"
    done = _torchrun(3, args)
    assert done.returncode != 0
    assert "error: the global batch size 20 is not divisible by world size 3" in done.stderr
    assert "18, 21" in done.stderr
    assert "resnetlab/" not in done.stderr  # torchrun reports the failed launch, we do not


_EVAL = """
import json, os, sys, torch
from resnetlab.data.common import InMemorySplit
from resnetlab.data import make_loader
from resnetlab.data.preprocess import Preprocessing
from resnetlab.models import create_model
from resnetlab.training.distributed import barrier, init_distributed, shutdown
from resnetlab.training.evaluate import evaluate
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
split = InMemorySplit(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=g),
                      torch.randint(0, 3, (10,), generator=g), ["a", "b", "c"])
pre = Preprocessing(mode="RGB", size=8, resize=None, mean=[0.5] * 3, std=[0.25] * 3)
model = create_model("resnet20", num_classes=3).eval()
info = init_distributed("cpu")
loader = make_loader(split, 4, train=False, preprocessing=pre,
                     rank=info.rank, world_size=info.world_size)
r = evaluate(lambda x: model(x), loader.epoch(0), info)
if info.rank == 0:
    print("RESULT", json.dumps([r.n, r.top1_acc, r.top5_acc, round(r.loss, 5)]))
# as the trainer ends (loop.py): a rank that exits while a peer still talks to it can
# take the peer down with SIGABRT inside gloo (seen once in a fresh-clone .ci/run)
barrier(info)
shutdown(info)
"""


def test_evaluation_counts_every_image_once_over_three_processes(tmp_path: Path) -> None:
    script = tmp_path / "eval_worker.py"
    script.write_text(_EVAL)
    one = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV)
    three = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         str(script)], capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0 and three.returncode == 0, one.stderr + three.stderr[-2000:]
    res = [json.loads(o.stdout.split("RESULT", 1)[1]) for o in (one, three)]
    assert res[0][0] == res[1][0] == 10
    assert res[0] == pytest.approx(res[1], abs=1e-4)


@pytest.mark.slow  # 45 s; one node's equality to accumulation: the world-size test
def test_two_nodes_of_two_processes_equal_four_on_one_node(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    endpoint = f"127.0.0.1:{_free_port()}"
    args = _train_args(tiny_dataset, tmp_path / "2x2")
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "twonodes",
                "--nproc-per-node",
                "2",
                str(WORKER),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for rank in (0, 1)
    ]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "weights identical on all 4 ranks" in outs[0][0] + outs[1][0]
    four = _torchrun(4, _train_args(tiny_dataset, tmp_path / "1x4"))
    assert four.returncode == 0, four.stderr[-2000:]
    a, b = _weights(tmp_path / "2x2"), _weights(tmp_path / "1x4")
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.slow  # 33 s; torchrun's own restarts
def test_restarted_group_resumes_by_itself_and_matches_an_uninterrupted_run(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    clean = _torchrun(2, _train_args(tiny_dataset, tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-2000:]
    # rank 1 is SIGKILLed during batch 3, after the checkpoint at iteration 2
    out = tmp_path / "restarted"
    done = _torchrun(2, _train_args(tiny_dataset, out), "--standalone", "--max-restarts", "1",
                     fault="kill:1:2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "restart 1 of this torchrun job: resuming" in done.stdout
    assert "resumed from" in done.stdout and (out / "results.json").exists()
    a, b = _weights(out), _weights(tmp_path / "clean")
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_dead_worker_without_restarts_ends_the_launch_quickly(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    done = _torchrun(2, _train_args(tiny_dataset, tmp_path / "dead"), fault="kill:1:2",
                     timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert time.monotonic() - t0 < 60


@pytest.mark.slow  # 37 s; our launcher's path: test_launch
def test_sigterm_to_one_rank_stops_all_at_one_iteration_and_resumes_exactly(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    clean = _torchrun(2, _train_args(tiny_dataset, tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-2000:]
    out = tmp_path / "term"
    t0 = time.monotonic()
    stopped = _torchrun(2, _train_args(tiny_dataset, out), fault="term:1:0", timeout=120)
    assert time.monotonic() - t0 < 60
    assert stopped.returncode != 0  # exit 3: stopped, not finished
    assert f"stopped by signal {int(signal.SIGTERM)} at iteration 1 of 4" in stopped.stdout
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 1
    resumed = _torchrun(2, [*_train_args(tiny_dataset, out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(out), _weights(tmp_path / "clean")
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    rows = [r.split(",")[:7] for r in (out / "metrics.csv").read_text().splitlines()]
    ref = [r.split(",")[:7] for r in (tmp_path / "clean/metrics.csv").read_text().splitlines()]
    assert rows == ref
