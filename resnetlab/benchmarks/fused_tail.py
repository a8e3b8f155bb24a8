"""``resnetlab bench fused-tail``: is fusing a block's memory-bound tail worth it?

The tail of a basic block in training, ``relu(bn2(conv2(..)) + shortcut)``, is three
passes over memory in eager PyTorch (batch norm, addition, ReLU) and three more in the
backward pass. Two fused versions replace it in every block of the model, and the
trainer's whole step (``train_step``, channels_last, fixed batch, same weights) is timed
against the eager model in alternating rounds, after checking that outputs and all
gradients match the eager model's within 1e-5:

* ``function``: a custom autograd function: native batch norm, then the addition and
  ReLU in place on its output; backward masks the gradient once and calls the native
  batch-norm backward (one tensor fewer per block, forward and backward);
* ``compiled``: ``torch.compile`` (inductor) of the tail alone, the convolutions eager.

The model code keeps the eager tail unless this measures a fused one faster
(BENCHMARKS.md, "Fusing the block tail").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.models.blocks import BasicBlock, keep_grad_channels_last


class _BNAddReLU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        shortcut: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        momentum: float,
        eps: float,
    ) -> torch.Tensor:
        y, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        y.add_(shortcut).relu_()
        ctx.eps = eps
        ctx.save_for_backward(x, weight, mean, invstd, y)
        return y

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        x, weight, mean, invstd, y = ctx.saved_tensors
        g = grads[0].masked_fill(y <= 0, 0.0)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, invstd, True, ctx.eps, [True, True, True]
        )
        return gx, g, gw, gb, None, None, None, None


def _tail_function(x: torch.Tensor, sc: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    out: torch.Tensor = _BNAddReLU.apply(  # type: ignore[no-untyped-call]
        x, sc, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps
    )
    return out


def _tail_eager(x: torch.Tensor, sc: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.relu(bn(x) + sc)


def _patched_forward(tail: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        sc = x if self.downsample is None else self.downsample(x)
        return keep_grad_channels_last(tail(self.conv2(out), sc, self.bn2))

    return forward


def _fused(model: nn.Module, kind: str) -> nn.Module:
    tail: Callable[..., torch.Tensor] = _tail_function
    if kind == "compiled":
        tail = torch.compile(_tail_eager, dynamic=False)
    for m in model.modules():
        if isinstance(m, BasicBlock) and m.residual:
            m.forward = types.MethodType(_patched_forward(tail), m)  # type: ignore[method-assign]
    return model


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def measure(model_name: str, batch: int, seconds: float, rounds: int) -> dict[str, Any]:
    from resnetlab.models import create_model
    from resnetlab.training.step import train_step

    torch.manual_seed(0)
    base = create_model(model_name).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for m in base.modules():  # trained-like: the residual branch's last BN scaled down
        if isinstance(m, BasicBlock):
            nn.init.constant_(m.bn2.weight, 0.3)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    models = {"eager": base, "function": _fused(_copy(base), "function")}
    models["compiled"] = _fused(_copy(base), "compiled")

    # numerics: one forward/backward each from the same weights
    ref_out = None
    check: dict[str, float] = {}
    for name, m in models.items():
        m.zero_grad(set_to_none=True)
        out = m(x)
        F.cross_entropy(out, y).backward()
        grads = torch.cat([p.grad.reshape(-1) for p in m.parameters()])  # type: ignore[union-attr]
        if ref_out is None:
            ref_out, ref_grads = out.detach(), grads
        else:
            check[name] = max(
                float((out.detach() - ref_out).abs().max()),
                float((grads - ref_grads).abs().max()),
            )
    criterion = nn.CrossEntropyLoss()
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for n, m in models.items()}
    times: dict[str, list[float]] = {n: [] for n in models}
    for name, m in models.items():  # warm-up (compile happens here)
        for _ in range(3):
            train_step(m, opts[name], criterion, x, y, 1e-3)
    for _ in range(rounds):
        for name, m in models.items():
            steps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                train_step(m, opts[name], criterion, x, y, 1e-3)
                steps += 1
            times[name].append((time.perf_counter() - t0) / steps)
    step_ms = {n: 1e3 * statistics.median(t) for n, t in times.items()}
    return {
        "model": model_name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "step_ms": step_ms,
        "speedup": {n: step_ms["eager"] / v for n, v in step_ms.items()},
        "max_abs_diff": check,
    }


def run(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args

    check_args(model=args.model, positive={"--seconds": args.seconds})
    r = measure(args.model, args.batch_size, args.seconds, args.rounds)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']}, batch {r['batch']}, {r['threads']} threads, channels_last")
    for name, ms in r["step_ms"].items():
        diff = r["max_abs_diff"].get(name)
        print(
            f"  {name:9s} {ms:8.1f} ms/step  {r['speedup'][name]:.3f}x"
            + (f"  max |diff| {diff:.1e}" if diff is not None else "")
        )
    return 0


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser("fused-tail", help="training step: fused BN+add+ReLU vs eager")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
