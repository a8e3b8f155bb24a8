"""What OpenMP reads once, when torch loads: set by the ``resnetlab`` command first.

libgomp reads ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS`` when the library loads, so a
setting made after ``import torch`` does nothing. ``resnetlab``'s entry point calls
``set_openmp_defaults`` before any module that imports torch; a value the user set is
kept. Workers that resnetlab starts itself get theirs from ``training/launch.py``.

The default wait policy is PASSIVE (threads sleep at a barrier instead of spinning):
measured on a 2-core VM (BENCHMARKS.md, "Process layout"), it costs a one-process,
two-thread run little on a quiet machine and keeps it from collapsing when another
CPU-bound job shares the cores.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import MutableMapping
from typing import Any

OPENMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DEFAULT_WAIT_POLICY = "PASSIVE"

_set_here: set[str] = set()


def set_openmp_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the defaults the user has not set; returns what was set (nothing once torch
    is loaded, since it would not take effect)."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    made: dict[str, str] = {}
    if "OMP_WAIT_POLICY" not in env:
        env["OMP_WAIT_POLICY"] = made["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    if environ is None:
        _set_here.update(made)
    return made


def user_environment() -> dict[str, str]:
    """This process's environment without the defaults the entry point added: what a
    program the user started themselves would see (``bench train``'s baseline)."""
    return {k: v for k, v in os.environ.items() if k not in _set_here}


def openmp_settings() -> dict[str, str | None]:
    """The OpenMP environment of this process, and who set each value (for config.json)."""
    out: dict[str, str | None] = {k: os.environ.get(k) for k in OPENMP_VARS}
    out["set_by"] = (
        "resnetlab (entry point)"
        if _set_here
        else "resnetlab (worker launch)"
        if os.environ.get("RESNETLAB_LAUNCHED") == "1"
        else "environment"
    )
    return out


def cpu_info() -> dict[str, Any]:
    """The CPU a run or benchmark ran on: model name, the instruction set torch
    dispatches to, the cores this process may use (``platform.machine()`` says only
    x86_64, and the VMs here differ: AVX2 or AVX-512)."""
    import torch

    from resnetlab.training.launch import cpu_cores

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    isa = None
    with contextlib.suppress(AttributeError, RuntimeError):
        isa = torch.backends.cpu.get_cpu_capability()
    return {"model": name, "isa": isa, "cores": cpu_cores()}
