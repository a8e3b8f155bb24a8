"""``resnetlab bench train``: end-to-end training throughput, ours against the usual loop.

Both sides train the same architecture from our builder with SGD (lr 0.1, momentum
0.9, wd 1e-4) on real data, measured in one run:

* baseline — how most people write it: a torch DataLoader over image files with
  per-sample Pillow decode and numpy pad/crop/flip/normalise, an eager NCHW model;
* ours — the trainer's pipeline: images decoded once into memory, whole-batch
  augmentation with tensor ops, the trainer's own ``train_step``, and the speed
  settings the trainer would choose (channels_last measured, torch.compile).

Achieved FLOP/s count 3 x 2 x multiply-adds per image (forward + backward) and are
compared with the fp32 matmul rate this command measures on the same machine (the
faster of MKL's and oneDNN's GEMM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from resnetlab.benchmarks import check_batches, competitor
from resnetlab.benchmarks.layout import measure_layout
from resnetlab.errors import DataError, ResnetlabError


def _sustained_gflops(op: Callable[[], object], flop: float, seconds: float) -> float:
    op()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        op()
        reps += 1
    return flop * reps / (time.perf_counter() - t0) / 1e9


def matmul_rates(n: int = 2048, seconds: float = 2.0) -> dict[str, float]:
    """Sustained fp32 matmul rates (GFLOP/s) of PyTorch's two CPU GEMM libraries.

    ``torch.mm`` goes to MKL (or OpenBLAS); convolutions go to oneDNN, whose GEMM we
    reach as a 1x1 convolution over a channels-last [1, n/2, 64, 64] input (M = 4096,
    K = N = n/2). They can differ by 2x: on an AMD Zen 5 VM MKL's sgemm ran at
    218-231 GFLOP/s and this oneDNN GEMM at 497-502 (BENCHMARKS.md). The machine's
    matmul rate is the higher of the two, so that the cap is not flattered by a slow
    library.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = _sustained_gflops(lambda: torch.mm(a, b), 2 * n**3, seconds / 2)
    k = n // 2
    x = torch.randn(1, k, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(k, k, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        onednn = _sustained_gflops(
            lambda: torch.nn.functional.conv2d(x, w), 2 * 4096 * k * k, seconds / 2
        )
    return {"mm": mm, "onednn": onednn, "best": max(mm, onednn)}


class _FileDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """The common per-sample pipeline: decode with Pillow, pad/crop/flip with numpy."""

    def __init__(self, files: list[tuple[Path, int]], mean: np.ndarray, std: np.ndarray) -> None:
        self.files, self.mean, self.std = files, mean, std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        with Image.open(path) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        h, w = x.shape[:2]
        x = np.pad(x, ((4, 4), (4, 4), (0, 0)))
        dy, dx = np.random.randint(0, 9, size=2)
        x = x[dy : dy + h, dx : dx + w]
        if np.random.rand() < 0.5:
            x = x[:, ::-1]
        x = (x - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), label


def _folder_files(root: Path) -> list[tuple[Path, int]]:
    split = root / "train"
    if not split.is_dir():
        raise DataError(f"bench train needs a class-folder dataset with train/: {root}")
    classes = sorted(d.name for d in split.iterdir() if d.is_dir())
    files = [(p, c) for c, name in enumerate(classes) for p in sorted((split / name).iterdir())]
    if not files:
        raise DataError(f"no images under {split}")
    return files


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def _timed_steps(step: Any, batches: Any, seconds: float, warmup: int) -> tuple[float, int, float]:
    """(images/s after warm-up, timed steps, warm-up seconds)."""
    t_start = time.perf_counter()
    for _ in range(warmup):
        step(*next(batches))
    warm_s = time.perf_counter() - t_start
    images, steps, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 2:
        x, y = next(batches)
        step(x, y)
        images += x.shape[0]
        steps += 1
    return images / (time.perf_counter() - t0), steps, warm_s


def _cycle(loader: Any) -> Any:
    while True:
        yield from loader


def _layout(data: str, procs: int, threads: int, batch_size: int, bundle: Any) -> tuple[int, int]:
    """The trainer's process layout for this data and batch (``launch.resolve_layout``),
    unless ``--procs``/``--threads`` say otherwise."""
    from resnetlab.training import launch
    from resnetlab.training.config import TrainConfig

    cfg = TrainConfig(data=data, device="cpu", batch_size=batch_size, threads=threads, procs=procs)
    procs = launch.resolve_layout(cfg, bundle)[0].procs
    return procs, threads or max(1, launch.cpu_cores() // procs)


def measure(
    model_name: str,
    data: str,
    *,
    batch_size: int,
    seconds: float,
    workers: int,
    procs: int = 0,
    threads: int = 0,
    compile_mode: str = "auto",
    compete: str = "none",
    skip_baseline: bool = False,
) -> dict[str, Any]:
    """Baseline (a fresh process with the user's environment, quiet) and ours (fresh workers in ``procs`` x
    ``threads``; 0: the trainer's own layout), ours again beside a ``compete`` job."""
    from resnetlab.data import open_dataset
    from resnetlab.models import count_mult_adds, create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = open_dataset(data, val_size=0)
    check_batches(len(bundle.train), batch_size, data)
    pre = bundle.preprocessing("channel")
    size, channels = bundle.image_size, bundle.in_channels
    kw = dict(num_classes=len(bundle.classes), in_channels=channels)
    procs, threads = _layout(data, procs, threads, batch_size, bundle)
    report: dict[str, Any] = {
        "model": model_name,
        "data": bundle.name,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "layout": f"{procs} process(es) x {threads} thread(s)",
        "machine": platform.processor() or platform.machine(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }

    if not skip_baseline:
        if bundle.in_memory and not Path(data).is_dir():
            raise DataError("the baseline reads image files: give --data a class-folder path")
        report["baseline"] = _baseline_in_fresh_process(
            dict(
                model=model_name,
                data=data,
                batch_size=batch_size,
                seconds=seconds,
                workers=workers,
                mean=list(pre.mean),
                std=list(pre.std),
                **kw,
            )
        )

    # ours: the trainer's loader, settings and step in the trainer's process layout, run
    # as fresh worker processes (so that the OpenMP settings are made before torch loads)
    for condition in ["quiet"] + ([compete] if compete != "none" else []):
        with competitor.running("none" if condition == "quiet" else condition):
            res = measure_layout(
                model_name,
                procs,
                threads,
                "-" if threads == 1 else "PASSIVE",
                batch_size=batch_size,
                seconds=seconds,
                data=data,
                compile_mode=compile_mode,
            )
        entry = {
            "images_per_s": res["images_per_s"],
            "steps": res["steps"],
            "processes": procs,
            "threads_per_process": threads,
            "channels_last": res["channels_last"],
            "compile": res["compile"],
            "malloc_tuning": res["malloc_tuning"],
        }
        if condition == "quiet":
            report["ours"] = entry
        else:
            report["ours_with_competitor"] = {**entry, "competitor": condition}
            report["competitor_kept_fraction"] = (
                res["images_per_s"] / report["ours"]["images_per_s"]
            )

    ours_ips = report["ours"]["images_per_s"]
    if "baseline" in report:
        report["speedup"] = ours_ips / report["baseline"]["images_per_s"]

    gflop_per_image = 3 * 2 * count_mult_adds(create_model(model_name, **kw).config, size) / 1e9
    rates = matmul_rates()
    peak = rates["best"]
    report.update(
        gflop_per_image=gflop_per_image,
        matmul_gflops=peak,
        matmul_gflops_mm=rates["mm"],
        matmul_gflops_onednn=rates["onednn"],
        cap_images_per_s=peak / gflop_per_image,
        ours_fraction_of_cap=ours_ips * gflop_per_image / peak,
    )
    return report


def _baseline_in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """The baseline, run the way its user would: a fresh Python process with the user's
    environment (none of the OpenMP settings ``resnetlab`` makes for itself) and
    PyTorch's default threads."""
    from resnetlab.runtime import user_environment

    env = user_environment()
    done = subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ResnetlabError(f"the baseline failed (exit status {done.returncode}): {tail}")
    return {**json.loads(lines[-1]), "omp_wait_policy": env.get("OMP_WAIT_POLICY")}


def baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """The common loop: a DataLoader over the image files, per-sample Pillow + numpy
    augmentation, the eager NCHW model, the trainer's step (``_baseline_in_fresh_process``)."""
    from resnetlab.models import create_model
    from resnetlab.training.step import train_step

    torch.manual_seed(0)
    model = create_model(spec["model"], num_classes=spec["num_classes"],
                         in_channels=spec["in_channels"])  # fmt: skip
    opt = _sgd(model)
    criterion = nn.CrossEntropyLoss()
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 1, -1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 1, -1)
    workers = spec["workers"]
    dl = torch.utils.data.DataLoader(
        _FileDataset(_folder_files(Path(spec["data"])), mean, std),
        batch_size=spec["batch_size"],
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    ips, steps, _ = _timed_steps(
        lambda x, y: train_step(model, opt, criterion, x, y, 0.1),
        _cycle(dl),
        spec["seconds"],
        warmup=2,
    )
    return {"images_per_s": ips, "steps": steps, "workers": workers,
            "threads": torch.get_num_threads()}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args

    check_args(
        model=args.model,
        positive={"--seconds": args.seconds, "--batch-size": args.batch_size},
        non_negative={
            "--workers": args.workers,
            "--threads": args.threads,
            "--procs": args.procs,
        },
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.procs and args.batch_size % args.procs:
        raise ResnetlabError(f"--batch-size {args.batch_size} does not split over {args.procs}")
    r = measure(
        args.model,
        args.data,
        batch_size=args.batch_size,
        seconds=args.seconds,
        workers=args.workers,
        procs=args.procs,
        threads=args.threads,
        compile_mode=args.compile,
        compete=args.compete,
        skip_baseline=args.skip_baseline,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']} on {r['data']}, batch {r['batch_size']}, ours in {r['layout']}")
    o = r["ours"]
    print(
        f"  ours      {o['images_per_s']:8.1f} img/s  (channels_last {o['channels_last']}, "
        f"compile {o['compile']})"
    )
    if "ours_with_competitor" in r:
        c = r["ours_with_competitor"]
        print(
            f"  ours beside a {c['competitor']} job {c['images_per_s']:8.1f} img/s = "
            f"{100 * r['competitor_kept_fraction']:.0f}% of quiet"
        )
    if "baseline" in r:
        print(
            f"  baseline  {r['baseline']['images_per_s']:8.1f} img/s  (DataLoader, "
            f"{r['baseline']['workers']} workers, per-sample Pillow + numpy, eager NCHW)"
        )
        print(f"  speedup   {r['speedup']:8.2f}x")
    print(
        f"  matmul rate {r['matmul_gflops']:.1f} GFLOP/s (torch.mm {r['matmul_gflops_mm']:.0f}, "
        f"oneDNN {r['matmul_gflops_onednn']:.0f}) -> cap {r['cap_images_per_s']:.0f} img/s "
        f"at {r['gflop_per_image']:.3f} GFLOP/image; ours reaches "
        f"{100 * r['ours_fraction_of_cap']:.1f}% of it"
    )
    return 0


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser("train", help="training img/s: our trainer vs the common DataLoader loop")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", required=True, help="class-folder dataset (e.g. cifar10-jpeg)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=60.0, help="timed seconds per side")
    p.add_argument("--workers", type=int, default=0, help="baseline DataLoader workers")
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="as the trainer: auto = its own choice for the device",
    )
    p.add_argument("--threads", type=int, default=0, help="threads per process of ours")
    p.add_argument(
        "--procs", type=int, default=0, help="processes of ours (default: the trainer's layout)"
    )
    p.add_argument(
        "--compete",
        choices=competitor.KINDS,
        default="none",
        help="measure ours again beside a busy loop or a second PyTorch job",
    )
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=run)


if __name__ == "__main__":  # the baseline's own process (``_baseline_in_fresh_process``)
    print(json.dumps(baseline(json.loads(sys.argv[1]))), flush=True)
