"""``resnetlab bench infer``: eager NCHW baseline vs our inference paths, same inputs, same run.

Paths, each checked against the baseline's logits (max abs diff <= 1e-4) before timing:

* ``eager_nchw``      the common way: model.eval(), NCHW, inference_mode (the baseline)
* ``folded_cl``       BN folded into the convs (models/fuse.py), channels_last, eager
* ``folded_cl_compile`` the same under torch.compile (inductor, weights frozen); its compile
  time is reported as ``setup_s`` since it pays only for long-running inference
* ``onnxruntime``     the folded model exported to ONNX, run by ONNX Runtime (all graph
  optimisations) with the same thread count

Paths are measured in interleaved rounds so that a background load on a shared machine
hits all of them alike; warm-up calls are excluded. Random weights would leave BN's
running statistics at (0, 1) and make activations grow with depth, so they are
calibrated on a random batch first, and each residual branch's last BN scale is set to
0.3 as in trained ResNets; the timing of dense fp32 convolutions does not depend on the
values, but the equality check then means what it does for real weights.

On a machine shared with other processes, libgomp's default active spin-wait makes
multi-threaded PyTorch collapse (measured: resnet20 batch 2, 2 threads, 735 ms vs 5 ms
with ``OMP_WAIT_POLICY=PASSIVE``), which would flatter every non-PyTorch path; the
policy is recorded in the report and a note is printed when it is unset.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.errors import ResnetlabError

TOLERANCE = 1e-4
MAX_BATCH, MAX_IMAGE_SIZE = 4096, 4096
ALL_PATHS = ("eager_nchw", "folded_cl", "folded_cl_compile", "onnxruntime")


def calibrated_model(name: str, image_size: int, seed: int = 0) -> nn.Module:
    """A preset with realistic BN statistics (see module docstring); eval mode."""
    from resnetlab.models import create_model

    torch.manual_seed(seed)
    model = create_model(name)
    with torch.no_grad():
        for block in model.blocks():
            block.last_bn().weight.fill_(0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: stats of exactly this batch
        model.train()
        model(torch.randn(8, model.config.in_channels, image_size, image_size))
    return model.eval()


def _timed(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seconds: float
) -> list[float]:
    """Per-call wall times (s) of ``fn(x)`` for about ``seconds`` (at least one call)."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return times


def export_folded_onnx(model: nn.Module, image_size: int, workdir: Path) -> tuple[Path, float]:
    """The folded model as ONNX with a dynamic batch (one export serves every batch size)."""
    from resnetlab.interop.export import export_onnx
    from resnetlab.models.fuse import fuse_bn

    t0 = time.perf_counter()
    path = export_onnx(
        fuse_bn(model), workdir / "folded.onnx", image_size=image_size, dynamic_batch=True
    )
    return path, time.perf_counter() - t0


def build_paths(
    model: nn.Module,
    x: torch.Tensor,
    names: list[str],
    threads: int,
    onnx_file: tuple[Path, float] | None,
) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]]:
    """name -> (callable taking an NCHW float batch, setup seconds)."""
    from resnetlab.models.fuse import fuse_bn

    paths: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {}
    paths["eager_nchw"] = (model, 0.0)
    t0 = time.perf_counter()
    folded = fuse_bn(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fold_s = time.perf_counter() - t0

    def folded_cl(inp: torch.Tensor) -> torch.Tensor:
        return folded(inp.contiguous(memory_format=torch.channels_last))

    if "folded_cl" in names:
        paths["folded_cl"] = (folded_cl, fold_s)
    if "folded_cl_compile" in names:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: prepacked for oneDNN
        t0 = time.perf_counter()
        compiled = torch.compile(folded)
        compiled(x.contiguous(memory_format=torch.channels_last))  # compile now, not in timing

        def folded_cl_compile(inp: torch.Tensor) -> torch.Tensor:
            return compiled(inp.contiguous(memory_format=torch.channels_last))

        paths["folded_cl_compile"] = (folded_cl_compile, fold_s + time.perf_counter() - t0)
    if "onnxruntime" in names and onnx_file is not None:
        from resnetlab.interop.loading import OnnxModel

        t0 = time.perf_counter()
        session = OnnxModel(onnx_file[0], threads=threads)
        paths["onnxruntime"] = (session, onnx_file[1] + time.perf_counter() - t0)
    return paths


@torch.inference_mode()
def bench_batch(
    model: nn.Module,
    batch_size: int,
    image_size: int,
    seconds: float,
    names: list[str],
    threads: int,
    onnx_file: tuple[Path, float] | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Check and time every path at one batch size; returns the JSON-ready record."""
    x = torch.randn(batch_size, int(model.config.in_channels), image_size, image_size)  # type: ignore[union-attr,arg-type]
    paths = build_paths(model, x, names, threads, onnx_file)
    expected = model(x)
    records: dict[str, dict[str, Any]] = {}
    for name, (fn, setup_s) in paths.items():
        diff = float((fn(x) - expected).abs().max())
        records[name] = {
            "name": name,
            "max_abs_diff": diff,
            "equal": diff <= TOLERANCE,
            "setup_s": round(setup_s, 2),
            "_times": [],
        }
    for fn, _setup in paths.values():
        fn(x)  # warm-up (the check above was the first call), excluded
    for _ in range(rounds):  # interleaved rounds: background load hits every path alike
        for name, (fn, _setup) in paths.items():
            records[name]["_times"] += _timed(fn, x, seconds / rounds)
    for rec in records.values():
        times = rec.pop("_times")
        rec["iterations"] = len(times)
        rec["latency_ms"] = round(1000 * statistics.median(times), 3)
        rec["throughput_ips"] = round(batch_size * len(times) / sum(times), 2)
    base = records["eager_nchw"]
    ok = [r for r in records.values() if r["equal"]]
    best = max(ok, key=lambda r: r["throughput_ips"])
    for rec in records.values():
        rec["speedup"] = round(rec["throughput_ips"] / base["throughput_ips"], 3)
    return {
        "batch_size": batch_size,
        "paths": list(records.values()),
        "best": best["name"],
        "speedup": best["speedup"],
        "latency_speedup": round(base["latency_ms"] / best["latency_ms"], 3),
        "all_equal": all(r["equal"] for r in records.values()),
    }


def run_bench(
    model_name: str,
    batch_sizes: list[int],
    image_size: int | None = None,
    seconds: float = 3.0,
    paths: list[str] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark as one JSON-ready dict."""
    import onnxruntime

    from resnetlab.models import model_config

    if not threads:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        threads = len(usable) if usable else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    size = image_size or model_config(model_name).native_size
    names = list(paths or ALL_PATHS)
    if "eager_nchw" not in names:
        names.insert(0, "eager_nchw")
    model = calibrated_model(model_name, size)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_folded_onnx(model, size, Path(tmp)) if "onnxruntime" in names else None
        results = [
            bench_batch(model, b, size, seconds, names, threads, onnx_file) for b in batch_sizes
        ]
    return {
        "bench": "infer",
        "model": model_name,
        "image_size": size,
        "dtype": "float32",
        "device": "cpu",
        "threads": threads,
        "seconds_per_path": seconds,
        "tolerance": TOLERANCE,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} {report['image_size']}x{report['image_size']} fp32 CPU, "
        f"{report['threads']} threads (torch {report['torch']}, onnxruntime {report['onnxruntime']})"
    ]
    for res in report["results"]:
        lines.append(f"batch {res['batch_size']}:")
        lines.append(
            f"  {'path':<19}{'ms/batch':>10}{'img/s':>10}{'speedup':>9}{'max|diff|':>11}{'setup s':>9}"
        )
        for r in res["paths"]:
            flag = "" if r["equal"] else "  NOT EQUAL"
            lines.append(
                f"  {r['name']:<19}{r['latency_ms']:>10.2f}{r['throughput_ips']:>10.1f}"
                f"{r['speedup']:>8.2f}x{r['max_abs_diff']:>11.1e}{r['setup_s']:>9.1f}{flag}"
            )
        lines.append(f"  best: {res['best']}, {res['speedup']:.2f}x the eager NCHW baseline")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args

    check_args(
        model=args.model,
        positive={"--seconds": args.seconds, "--image-size": args.image_size},
        non_negative={"--threads": args.threads},
    )
    if not all(1 <= b <= MAX_BATCH for b in args.batch_size):
        raise ResnetlabError(
            f"--batch-size values must be in 1..{MAX_BATCH}, got {args.batch_size}"
        )
    if args.image_size is not None and args.image_size > MAX_IMAGE_SIZE:
        raise ResnetlabError(f"--image-size must be at most {MAX_IMAGE_SIZE}")
    if (args.threads or 2) > 1 and "OMP_WAIT_POLICY" not in os.environ:
        print(
            "note: OMP_WAIT_POLICY is unset; on a machine shared with other processes, OpenMP's "
            "spin-waiting can slow multi-threaded PyTorch by orders of magnitude "
            "(run with OMP_WAIT_POLICY=PASSIVE for a fair comparison)",
            file=sys.stderr,
        )
    paths = [p for p in ALL_PATHS if p not in (args.skip or [])]
    report = run_bench(
        args.model, args.batch_size, args.image_size, args.seconds, paths, args.threads
    )
    print(json.dumps(report) if args.json else format_table(report))
    return 0 if all(r["all_equal"] for r in report["results"]) else 1


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser(
        "infer",
        help="inference latency/throughput: eager NCHW vs folded BN, channels_last, compile, ONNX Runtime",
        description="Time the eager NCHW baseline against our inference paths on random input, "
        "after checking each path's logits equal the baseline's within 1e-4. Exit status 1 if "
        "any path is not equal.",
    )
    p.add_argument("--model", required=True, help="preset name, e.g. resnet20 or resnet50")
    p.add_argument("--batch-size", type=int, nargs="+", default=[1, 32], help="default: 1 32")
    p.add_argument("--image-size", type=int, help="input side (default: the model's native size)")
    p.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds per path and batch size"
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: all usable cores)")
    p.add_argument(
        "--skip",
        nargs="+",
        choices=[p for p in ALL_PATHS if p != "eager_nchw"],
        help="paths to leave out",
    )
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    p.set_defaults(func=run)
