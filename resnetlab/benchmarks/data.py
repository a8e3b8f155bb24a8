"""``resnetlab bench data``: how fast data gets in (decode, cache) and out (augmented batches).

The first decode runs into a fresh temporary cache folder, so it measures real
decoding even when the user's cache is warm; the cached figure re-opens that folder.
Throughput is the training loader (§4.2 augmentation + per-pixel mean) at batch 128,
against a per-image Python loop doing the same crop/flip as the baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from typing import Any

import torch


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser("data", help="dataset decode time and augmented batches per second")
    p.add_argument(
        "--data", required=True, help="cifar10 | cifar100 | fashion-mnist | class-folder root"
    )
    p.add_argument("--data-dir", default=None, help="archives folder for named datasets")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=5.0, help="time spent measuring throughput")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
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

    check_args(
        positive={"--seconds": args.seconds, "--batch-size": args.batch_size}, device=args.device
    )
    r = measure(
        args.data,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
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
