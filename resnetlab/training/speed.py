"""Choosing the fastest settings for the device: measured where cheap, logged always.

* memory format: a few timed forward+backward steps in NCHW and channels_last;
* torch.compile: on CUDA for runs long enough to repay it; off on CPU, where eager
  channels_last measured faster (BENCHMARKS.md);
* mixed precision: bf16 autocast on CUDA (fp32 on CPU, where bf16 is not accelerated);
  ``--amp off`` on CUDA is IEEE fp32, TF32 off, so its numbers are the CPU's precision;
* malloc: on CPU, glibc keeps freed activation memory instead of re-faulting it in
  every step (``allocator.py``).
Each is forced with its flag (``--channels-last on|off``, ``--compile on|off``, ``--amp``,
``--malloc-tuning on|off``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.training import allocator
from resnetlab.training.config import TrainConfig

# On CPU, torch.compile does not pay for ResNets: measured on a 2-core x86 machine
# (BENCHMARKS.md), ResNet-20 trains at ~450 img/s eager channels_last vs ~396 compiled,
# after a ~30 s compile. `--compile on` still forces it.
COMPILE_MIN_ITERS_CUDA = 2_000
PROBE_MIN_IMAGES = 50_000


def choose(
    cfg: TrainConfig,
    model: nn.Module,
    device: torch.device,
    image_size: int,
    in_channels: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    images = cfg.iters * cfg.batch_size
    choices: dict[str, Any] = {}
    reasons: list[str] = []

    want_malloc = cfg.malloc_tuning == "on" or (
        cfg.malloc_tuning == "auto" and device.type == "cpu"
    )
    choices["malloc_tuning"] = want_malloc and allocator.keep_freed_memory()
    if choices["malloc_tuning"]:
        reasons.append("malloc keeps freed memory (fewer page faults)")
    elif want_malloc:
        reasons.append("malloc tuning unavailable (not glibc)")

    if cfg.amp == "auto":
        choices["amp"] = "bf16" if device.type == "cuda" else "off"
    else:
        choices["amp"] = cfg.amp
    if device.type == "cuda":
        off = choices["amp"] == "off"
        reasons.append("fp32 without TF32" if off else "TF32 allowed outside autocast")

    if cfg.channels_last != "auto":
        choices["channels_last"] = cfg.channels_last == "on"
        reasons.append("channels_last forced")
    elif device.type == "cuda":
        choices["channels_last"] = True
        reasons.append("channels_last: CUDA convolutions prefer NHWC")
    elif images < PROBE_MIN_IMAGES:
        choices["channels_last"] = False
        reasons.append("channels_last off: run too short to measure")
    else:
        t_nchw, t_nhwc = _probe_memory_format(
            model, device, image_size, in_channels, batch=min(cfg.batch_size, 128)
        )
        choices["channels_last"] = t_nhwc < t_nchw
        reasons.append(
            f"channels_last {'on' if t_nhwc < t_nchw else 'off'}: "
            f"step {1e3 * t_nhwc:.0f} ms NHWC vs {1e3 * t_nchw:.0f} ms NCHW"
        )

    if cfg.compile != "auto":
        choices["compile"] = cfg.compile == "on"
        reasons.append("compile forced")
    elif device.type == "cuda":
        choices["compile"] = cfg.iters >= COMPILE_MIN_ITERS_CUDA
        reasons.append(f"compile {'on' if choices['compile'] else 'off'}: {cfg.iters} iterations")
    else:
        choices["compile"] = False
        reasons.append("compile off: slower than eager channels_last on CPU (BENCHMARKS.md)")
    choices["threads"] = torch.get_num_threads()
    log(
        f"device {device}, {choices['threads']} threads, amp {choices['amp']}; "
        + "; ".join(reasons)
    )
    return choices


def _probe_memory_format(
    model: nn.Module,
    device: torch.device,
    image_size: int,
    in_channels: int,
    steps: int = 3,
    batch: int = 128,
) -> tuple[float, float]:
    """Median time of a fwd+bwd step at the run's batch size (at most 128) in each memory
    format, weights restored. The batch matters: on a 2-core CPU, ResNet-20 at batch 32
    can measure NCHW faster while batch 128 is ~25% faster in channels_last."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(batch, in_channels, image_size, image_size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    times = []
    for channels_last in (False, True):
        set_memory_format(model, channels_last)
        xf = x.contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        samples = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            F.cross_entropy(model(xf), y).backward()
            if i:
                samples.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        times.append(sorted(samples)[len(samples) // 2])
    set_memory_format(model, False)
    model.load_state_dict(state)
    return times[0], times[1]


def set_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Convert a model's 4-d weights in place (NHWC when ``channels_last``)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=fmt)  # type: ignore[call-overload,no-any-return]


def apply(model: nn.Module, device: torch.device, choices: dict[str, Any]) -> None:
    """Make the choices that live in the process and the model, on every start: a
    resumed run reads its choices from the checkpoint, and needs them made again."""
    if device.type == "cuda":
        set_tf32(choices["amp"] != "off")
    if choices["channels_last"]:
        set_memory_format(model, True)


def set_tf32(allowed: bool) -> None:
    """TF32 for CUDA convolutions and matrix products (cuDNN allows it by default): an
    fp32 run (``--amp off``) turns it off, so a GPU run computes in the precision of
    the CPU runs it may be compared with."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = "tf32" if allowed else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if allowed else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = allowed
        torch.backends.cuda.matmul.allow_tf32 = allowed


def tf32_allowed() -> bool:
    """Whether CUDA convolutions may use TF32 now (what ``set_tf32`` last made)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        return bool(conv.fp32_precision != "ieee")
    return bool(torch.backends.cudnn.allow_tf32)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
