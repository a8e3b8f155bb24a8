"""``resnetlab bench data``: how fast data gets in (decode, cache) and out (augmented batches).

``--data``: the first decode runs into a fresh temporary cache folder, so it measures
real decoding even when the user's cache is warm; the cached figure re-opens that
folder. Throughput is the training loader (§4.2 augmentation + per-pixel mean) at
batch 128, against a per-image Python loop doing the same crop/flip as the baseline.

``--large``: training batches of 224x224 crops from real photographs (the set that
``benchmarks.photos`` builds once), our streaming loader against the pipeline most
ImageNet code runs (``photos.CommonPipeline``), in one run, the same DataLoader
worker count and batch size, both ending in normalised float [N,3,224,224] batches
on the device; only the data pipeline is timed (no model), after a warm-up, over a
fixed number of batches of one epoch, in alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from resnetlab.benchmarks.photos import DEFAULT_COUNT, SHORTER
from resnetlab.errors import DataError, ResnetlabError

Batch = tuple[torch.Tensor, torch.Tensor]


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser("data", help="dataset decode time and augmented batches per second")
    p.add_argument("--data", help="cifar10 | cifar100 | fashion-mnist | class-folder root")
    p.add_argument(
        "--data-dir",
        default=None,
        help="archives folder for named datasets; with --large, where the photo set is built"
        " (default $RESNETLAB_DATA or ~/.cache/resnetlab)",
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="default 128 (--data), 64 (--large)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="time spent measuring throughput")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    g = p.add_argument_group("large images (--large)")
    g.add_argument(
        "--large",
        action="store_true",
        help="photos at ImageNet size: our loader vs the common DataLoader pipeline"
        " (builds the set once; needs scikit-image: pip install 'resnetlab[bench]')",
    )
    g.add_argument(
        "--large-images",
        type=int,
        default=DEFAULT_COUNT,
        help=f"photos in the set (default {DEFAULT_COUNT}; another count is built beside it)",
    )
    g.add_argument(
        "--large-sides",
        type=int,
        nargs=2,
        default=list(SHORTER),
        metavar=("MIN", "MAX"),
        help=f"shorter side of the photos, px (default {SHORTER[0]} {SHORTER[1]}, ImageNet's;"
        " other sizes are built beside it)",
    )
    g.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers, both sides (default: cores)"
    )
    g.add_argument("--warmup", type=int, default=3, help="untimed batches per round")
    g.add_argument(
        "--batches", type=int, default=0, help="timed batches per round (default: rest of an epoch)"
    )
    g.add_argument("--rounds", type=int, default=3, help="alternating rounds per pipeline")
    p.set_defaults(func=run)


def _baseline(images: torch.Tensor, batch: int, seconds: float) -> float:
    """Images/s of a naive per-image pad/crop/flip loop (what the batched gather replaces)."""
    g = torch.Generator().manual_seed(0)
    n, done, t0 = len(images), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(0, n, (batch,), generator=g)
        out = []
        for i in idx.tolist():
            x = torch.nn.functional.pad(images[i], (4, 4, 4, 4))
            dy, dx = torch.randint(0, 9, (2,), generator=g).tolist()
            x = x[:, dy : dy + images.shape[2], dx : dx + images.shape[3]]
            if torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(-1)
            out.append(x)
        torch.stack(out).float()
        done += batch
    return done / (time.perf_counter() - t0)


def measure(
    data: str, *, data_dir: str | None, batch_size: int, seconds: float, device: str
) -> dict[str, Any]:
    from resnetlab.data import NAMED, make_loader, open_dataset

    with tempfile.TemporaryDirectory(prefix="resnetlab-bench-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        named = data.strip().lower() in NAMED  # archives: keep the user's data dir
        cache = data_dir if data_dir is not None or named else tmp
        t0 = time.perf_counter()
        bundle = open_dataset(data, data_dir=cache)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        bundle = open_dataset(data, data_dir=cache)
        cached = time.perf_counter() - t0
    n_images = sum(len(s) for s in (bundle.train, bundle.val, bundle.test) if s is not None)
    from resnetlab.benchmarks import check_batches

    check_batches(len(bundle.train), batch_size, data)
    pre = bundle.preprocessing("pixel")
    loader = make_loader(
        bundle.train, batch_size, train=True, preprocessing=pre, device=device, seed=0
    )
    images, batches, epoch = 0, 0, 0
    it = loader.epoch(0)
    next(it)  # warm-up (device copy, allocator)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for x, _ in it:
            images += x.shape[0]
            batches += 1
            if time.perf_counter() - t0 >= seconds:
                break
        else:
            epoch += 1
            it = loader.epoch(epoch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "data": data,
        "images": n_images,
        "in_memory": bundle.in_memory,
        "decode_first_s": round(first, 3),
        "decode_cached_s": round(cached, 3),
        "batch_size": batch_size,
        "batches_per_s": round(batches / elapsed, 1),
        "images_per_s": round(images / elapsed, 1),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    if bundle.in_memory:
        from resnetlab.data import InMemorySplit

        assert isinstance(bundle.train, InMemorySplit)
        result["baseline_images_per_s"] = round(
            _baseline(bundle.train.images, batch_size, min(seconds, 2.0)), 1
        )
    return result


def run(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args

    if args.large == bool(args.data):
        raise ResnetlabError("give --data DATASET or --large (the photo benchmark), not both")
    check_args(
        positive={"--seconds": args.seconds, "--batch-size": args.batch_size}, device=args.device
    )
    if args.large:
        return _run_large(args)
    r = measure(
        args.data,
        data_dir=args.data_dir,
        batch_size=args.batch_size or 128,
        seconds=args.seconds,
        device=args.device,
    )
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['data']}: {r['images']} images, in memory: {r['in_memory']}")
        print(f"  decode: first {r['decode_first_s']:.2f} s, cached {r['decode_cached_s']:.2f} s")
        print(
            f"  augmented batches of {r['batch_size']}: {r['batches_per_s']:.1f}/s = {r['images_per_s']:.0f} images/s"
        )
        if "baseline_images_per_s" in r:
            print(f"  baseline (per-image loop): {r['baseline_images_per_s']:.0f} images/s")
    return 0


# ---------------------------------------------------------------- large images


def _timed(batches: Iterator[Batch], warmup: int, n: int, device: str) -> tuple[float, Batch]:
    """(images/s over ``n`` batches after ``warmup`` untimed ones, the first batch)."""
    first = next(batches)
    for _ in range(warmup - 1):
        next(batches)
    _sync(device)
    images, t0 = 0, time.perf_counter()
    for _ in range(n):
        x, _ = next(batches)
        images += x.shape[0]
    _sync(device)
    return images / (time.perf_counter() - t0), first


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _describe(x: torch.Tensor) -> dict[str, Any]:
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype).removeprefix("torch."),
        "mean": round(float(x.float().mean()), 3),
        "std": round(float(x.float().std()), 3),
    }


def measure_large(
    *,
    data_dir: str | Path | None,
    count: int,
    shorter: tuple[int, int] = SHORTER,
    batch_size: int,
    workers: int,
    warmup: int,
    batches: int,
    rounds: int,
    device: str = "cpu",
    size: int = 224,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Our streaming loader (random-resized crop, and §3.4's scale augmentation) against
    ``photos.common_loader`` on the photo set; see the module docstring."""
    from resnetlab.benchmarks.photos import build_large_set, common_loader, reduced_share
    from resnetlab.data import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, StreamingLoader
    from resnetlab.data.common import default_data_dir
    from resnetlab.data.folder import folder_split, scan_split

    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    t0 = time.perf_counter()
    root, built = build_large_set(ddir, count, shorter=shorter, log=log)
    build_s = time.perf_counter() - t0
    split = folder_split(scan_split(root / "train"))
    per_epoch = len(split) // batch_size
    n = batches or per_epoch - warmup
    if warmup < 1 or n < 1 or warmup + n > per_epoch:
        raise DataError(
            f"{len(split)} photos make {per_epoch} batches of {batch_size}: too few for"
            f" {warmup} warm-up + {n} timed batches in one epoch; use fewer --batches or"
            " --warmup, a smaller --batch-size or more --large-images"
        )
    pre = Preprocessing(
        size=size, resize=round(size * 256 / 224), mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)
    )
    dev = torch.device(device)

    def baseline(r: int) -> Iterator[Batch]:
        for x, y in common_loader(split.samples, batch_size, workers, seed=r):
            yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)

    def ours(kind: str) -> Callable[[int], Iterator[Batch]]:
        loader = StreamingLoader(
            split,
            batch_size,
            train=True,
            preprocessing=pre,
            device=dev,
            augment=kind,  # type: ignore[arg-type]
            workers=workers,
        )
        return loader.epoch

    pipelines: dict[str, Callable[[int], Iterator[Batch]]] = {
        "baseline": baseline,
        "ours": ours("rrc"),
        "ours_scale": ours("scale"),
    }
    rates: dict[str, list[float]] = {k: [] for k in pipelines}
    first: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        for name, epoch in pipelines.items():
            it = epoch(r)
            ips, x0 = _timed(it, warmup, n, device)
            del it  # ends the epoch's workers before the next pipeline starts
            rates[name].append(ips)
            first.setdefault(name, _describe(x0[0]))
            if log:
                log(f"round {r + 1}/{rounds}: {name} {ips:.1f} images/s")
    if first["ours"]["shape"] != first["baseline"]["shape"]:
        raise DataError(f"batch shapes differ: {first}")
    # images/s over all rounds: the same images per round, so the harmonic mean
    mean = {k: len(v) / sum(1 / x for x in v) for k, v in rates.items()}
    return {
        "set": str(root),
        "photos": len(split),
        "shorter_side": list(shorter),
        "built_now": built,
        "build_s": round(build_s, 1),
        "batch_size": batch_size,
        "workers": workers,
        "image_size": size,
        "warmup_batches": warmup,
        "timed_batches": n,
        "rounds": rounds,
        "device": device,
        "cpus": _cores(),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        **{
            k: {"images_per_s": round(mean[k], 1), "rounds": [round(x, 1) for x in v], **first[k]}
            for k, v in rates.items()
        },
        "ratio": round(mean["ours"] / mean["baseline"], 3),
        "ratio_scale": round(mean["ours_scale"] / mean["baseline"], 3),
        "reduced_decode_share": {
            "rrc": round(reduced_share(split.samples, "rrc", size), 3),
            "scale": round(reduced_share(split.samples, "scale", size), 3),
        },
    }


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _run_large(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args
    from resnetlab.data.loader import default_workers

    workers = default_workers() if args.workers is None else args.workers
    check_args(
        positive={"--large-images": args.large_images, "--rounds": args.rounds},
        non_negative={"--workers": workers, "--warmup": args.warmup, "--batches": args.batches},
    )
    log = None if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    r = measure_large(
        data_dir=args.data_dir,
        count=args.large_images,
        shorter=(args.large_sides[0], args.large_sides[1]),
        batch_size=args.batch_size or 64,
        workers=workers,
        warmup=args.warmup,
        batches=args.batches,
        rounds=args.rounds,
        device=args.device,
        log=log,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['photos']} photos (shorter side {r['shorter_side'][0]}-{r['shorter_side'][1]} px)"
        f" in {r['set']} ({'built now' if r['built_now'] else 'cached'}),"
        f" batch {r['batch_size']}, {r['workers']} workers, {r['cpus']} cores,"
        f" {r['timed_batches']} timed batches x {r['rounds']} rounds"
    )
    share = r["reduced_decode_share"]
    rows = [
        ("baseline", "common DataLoader: full decode, PIL crop+resize, flip, float, normalise"),
        ("ours", f"ours, random-resized crop ({100 * share['rrc']:.0f}% decoded reduced)"),
        ("ours_scale", f"ours, §3.4 scale + PCA ({100 * share['scale']:.0f}% decoded reduced)"),
    ]
    for key, what in rows:
        rounds = ", ".join(f"{x:.0f}" for x in r[key]["rounds"])
        print(f"  {r[key]['images_per_s']:8.1f} img/s  {what}  [{rounds}]")
    print(f"  ratio ours/baseline {r['ratio']:.2f}x (scale augmentation: {r['ratio_scale']:.2f}x)")
    return 0
