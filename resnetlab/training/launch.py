"""One process per CPU core, started by resnetlab itself (no torchrun line to write).

On a 2-core CPU, two DDP processes of one thread each train faster than one process
with two threads, and do not collapse when another job shares the cores: a process
with one thread never spin-waits at an OpenMP barrier for a thread that the OS has
descheduled (BENCHMARKS.md, "Process layout"). Each process normalises BN over its
own B/W images, the paper's own setting for CIFAR (batch 128 over two GPUs, §4.2).

This module owns the environment of such workers: the rendezvous variables torchrun
would set, and the settings that only take effect before torch is imported
(``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``). The workers are ``sys.executable`` running
the same command line, so everything else (resume, stop signals, checkpoints) is the
torchrun code path.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig

# Set in every worker this module starts: a worker never launches workers of its own.
LAUNCHED_ENV = "RESNETLAB_LAUNCHED"

# The default of --procs, for a machine or a test suite that wants another one.
PROCS_ENV = "RESNETLAB_PROCS"

# How long the other workers get to stop by themselves after one of them failed.
GRACE_S = 30.0


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(
    base: Mapping[str, str],
    rank: int,
    world_size: int,
    port: int,
    threads: int,
    wait_policy: str | None = "PASSIVE",
) -> dict[str, str]:
    """What torchrun would give worker ``rank``, plus its thread count fixed before
    torch starts. With one thread there is no OpenMP team, so no wait policy to choose;
    with more, ``wait_policy`` unless the environment sets one (None: libgomp's own)."""
    env = dict(base)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS=str(threads),
        **{LAUNCHED_ENV: "1"},
    )
    if wait_policy is not None:
        env.setdefault("OMP_WAIT_POLICY", wait_policy)
    return env


def launched() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def in_process_group() -> bool:
    """Started by torchrun or by this module: the layout is already made."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _in_memory(cfg: TrainConfig, bundle: Any) -> bool:
    """Whether the training images will live in memory (small images), without reading
    the dataset: large images are streamed, and their decode workers use the cores."""
    if bundle is not None:
        return bool(bundle.in_memory)
    from resnetlab.data.datasets import NAMED
    from resnetlab.data.folder import SMALL_MAX, probe_size

    if cfg.data in NAMED:
        return True
    train = Path(cfg.data) / "train"
    files: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        for d in sorted(p for p in train.iterdir() if p.is_dir())[:4]:
            files += [(f"{d.name}/{f.name}", 0) for f in sorted(d.iterdir())[:4] if f.is_file()]
    if not files:
        return True  # the dataset's own checks will name the problem
    try:
        h, w = probe_size(train, files)
    except ResnetlabError:
        return True
    return max(h, w) <= SMALL_MAX


def resolve_layout(cfg: TrainConfig, bundle: Any = None) -> tuple[TrainConfig, str]:
    """``cfg`` with ``procs`` decided, and a sentence saying why.

    auto (``procs`` 0): one process per core on a CPU with at least two cores, when the
    batch splits evenly over them and the images are in memory; one process otherwise
    (CUDA: one device per process is torchrun's job; streamed large images: the decode
    workers need the cores; ``--threads``: the user asked for threads).
    """
    if in_process_group():
        return dataclasses.replace(cfg, procs=int(os.environ["WORLD_SIZE"])), ""
    from resnetlab.data.loader import check_global_batch
    from resnetlab.training.setup import resolve_device

    if not cfg.procs and os.environ.get(PROCS_ENV):
        value = os.environ[PROCS_ENV]
        if not value.isdigit() or not 0 <= int(value) <= 1024:
            raise ResnetlabError(f"${PROCS_ENV} must be a number of processes, got {value!r}")
        cfg = dataclasses.replace(cfg, procs=int(value))
    device = resolve_device(cfg.device)
    if device.type != "cpu":
        if cfg.procs > 1:
            raise ResnetlabError(
                "--procs starts CPU processes; for several GPUs use "
                "torchrun --nproc-per-node N -m resnetlab train ..."
            )
        return dataclasses.replace(cfg, procs=1), ""
    if cfg.procs:
        if cfg.procs > 1:
            check_global_batch(cfg.batch_size, cfg.procs)
        return cfg, f"{cfg.procs} process(es), as configured (--procs {cfg.procs})"
    cores = cpu_cores()
    reason = ""
    if cores < 2:
        reason = "one core"
    elif cfg.threads:
        reason = f"--threads {cfg.threads} asks for one process with threads"
    elif cfg.batch_size % cores or (cfg.batch_size // cores) % cfg.accum_steps:
        reason = f"batch {cfg.batch_size} does not split over {cores} cores"
    elif not _in_memory(cfg, bundle):
        reason = "large images are streamed, and their decode workers use the cores"
    if reason:
        return dataclasses.replace(cfg, procs=1), f"one process ({reason})"
    return dataclasses.replace(cfg, procs=cores), f"one process per core ({cores})"


def describe(cfg: TrainConfig) -> str:
    per = cfg.batch_size // (cfg.procs * cfg.accum_steps)
    return (
        f"{cfg.procs} processes x 1 thread, DDP over gloo; each normalises BN over its own "
        f"{per} images of every batch of {cfg.batch_size} (the paper's CIFAR runs: 128 over "
        "two GPUs, §4.2); --procs 1 for one process with all cores as threads"
    )


def die_with_parent() -> None:
    """Worker side of fork: get SIGTERM if the launching process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def train_workers(cfg: TrainConfig, resume: bool, continue_with: str | None = None) -> int:
    """Train ``cfg`` in ``cfg.procs`` worker processes (``resnetlab.training.worker``).

    The command line was checked here already; the workers get the final config, and
    ``continue_with`` (see ``loop.train``)."""
    args = [json.dumps(cfg.to_dict()), "resume" if resume else "new"]
    if continue_with:
        args.append(continue_with)
    command = python_command("resnetlab.training.worker", args)
    return run_workers(command, cfg.procs, threads=1)


def run_workers(
    command: Sequence[str],
    world_size: int,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
    *,
    wait_policy: str | None = "PASSIVE",
    rank0_stdout: IO[str] | None = None,
) -> int:
    """Run ``command`` as ``world_size`` workers and wait for all of them.

    SIGINT/SIGTERM are passed on to every worker (each stops at the same iteration and
    writes one checkpoint, as under torchrun). If a worker fails, the others get
    ``GRACE_S`` to notice (their collectives fail) before they are killed. Returns the
    first non-zero exit status, or 0. ``wait_policy``: see ``worker_env``;
    ``rank0_stdout``: where rank 0's standard output goes (the others' is then dropped),
    for workers that report on it.
    """
    port = free_port()
    base = dict(os.environ if env is None else env)
    if rank0_stdout is None:
        outputs: list[Any] = [None] * world_size
    else:
        outputs = [rank0_stdout] + [subprocess.DEVNULL] * (world_size - 1)
    # own session: a Ctrl-C in the terminal reaches the workers once, through forward()
    procs = [
        subprocess.Popen(
            list(command),
            env=worker_env(base, r, world_size, port, threads, wait_policy),
            stdout=outputs[r],
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        for r in range(world_size)
    ]

    with signals_forwarded(lambda: procs):
        failed_at: float | None = None
        while any(p.poll() is None for p in procs):
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    codes = [p.returncode for p in procs]
    return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)


@contextlib.contextmanager
def signals_forwarded(
    children: Callable[[], Iterable[subprocess.Popen[Any]]],
    on_signal: Callable[[int], None] | None = None,
) -> Iterator[None]:
    """While inside: SIGINT/SIGTERM go on to the live ``children()`` (started in their
    own session, so a terminal's Ctrl-C reaches them once, through here), after
    ``on_signal``. On leaving: the previous handlers are back and any child still alive
    is killed, so none outlives its launcher."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal(signum)
        for p in children():
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in children():
            if p.poll() is None:
                p.kill()
                p.wait()


def python_command(module: str, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]
