"""A competing CPU-bound job, started and stopped by a benchmark.

Two kinds, as a user's machine has them:

* ``busy``: one single-threaded Python busy loop (the easy case);
* ``torch``: a second PyTorch training job with PyTorch's defaults (all cores as
  OpenMP threads, the default wait policy), like a user's second experiment: ResNet-20,
  eager NCHW, batch 128 of random images, forever. The hard case: its threads and ours
  spin-wait for each other at every barrier when both use all cores.

The competitor's environment drops the OpenMP and resnetlab settings of ours, so that it
runs as a plain PyTorch job would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

KINDS = ("none", "busy", "torch")

_BUSY = "while True:\n    pass\n"
_TORCH = """
import torch
from resnetlab import create_model
model = create_model("resnet20")
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
print("ready", flush=True)
while True:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
"""
_OURS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RESNETLAB_LAUNCHED")


def machine() -> str:
    """CPU model, instruction set and core count, for reports."""
    from resnetlab.runtime import cpu_info

    c = cpu_info()
    return f"{c['model']} ({c['isa'] or 'unknown ISA'}), {c['cores']} cores"


@contextlib.contextmanager
def running(kind: str) -> Iterator[subprocess.Popen[str] | None]:
    """Run the competitor for the duration of the block (``none``: nothing)."""
    if kind == "none":
        yield None
        return
    if kind not in KINDS:
        raise ValueError(f"unknown competitor {kind!r}")
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    code = _BUSY if kind == "busy" else _TORCH
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if kind == "torch":
            assert proc.stdout is not None
            proc.stdout.readline()  # started: imports done, first step next
        time.sleep(2.0)  # let it reach its steady state
        if proc.poll() is not None:
            raise RuntimeError(f"the {kind} competitor exited with {proc.returncode}")
        yield proc
    finally:
        proc.kill()
        proc.wait()
