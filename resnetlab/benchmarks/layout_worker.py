"""One worker of ``bench layout``/``bench train``: the trainer's step on in-memory data.

Started by ``training/launch.py`` with the rendezvous variables and its thread count in
the environment; argv[1] is a JSON spec (model, global batch, seconds, data). Rank 0
prints one JSON line: the group's images/s over a fixed number of steps, sized from
the warm-up so that every rank runs the same steps (a collective per step under DDP).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from typing import Any

import torch
from torch import nn


def _data(spec: dict[str, Any]) -> tuple[Any, Any, int, int]:
    from resnetlab.data import InMemorySplit, Preprocessing, open_dataset

    if spec.get("data"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = open_dataset(spec["data"], val_size=0)
        if not bundle.in_memory:
            raise SystemExit(f"{spec['data']}: not an in-memory dataset")
        return bundle.train, bundle.preprocessing("channel"), bundle.image_size, len(bundle.classes)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (10_000,), generator=gen)
    split = InMemorySplit(images, labels, [str(i) for i in range(10)])
    pre = Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], size=32)
    return split, pre, 32, 10


def main(spec: dict[str, Any]) -> dict[str, Any]:
    from resnetlab.data import make_loader
    from resnetlab.models import create_model
    from resnetlab.training import speed
    from resnetlab.training.config import TrainConfig
    from resnetlab.training.distributed import (
        barrier,
        broadcast_object,
        init_distributed,
        shutdown,
    )
    from resnetlab.training.setup import agreed_speed_choices, wrap_for_training
    from resnetlab.training.step import train_step

    info = init_distributed("cpu")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    split, pre, size, classes = _data(spec)
    torch.manual_seed(0)
    model = create_model(spec["model"], num_classes=classes)
    cfg = TrainConfig(
        model=spec["model"],
        iters=10_000,
        batch_size=spec["batch_size"],
        compile=spec.get("compile", "auto"),
    )
    cpu = torch.device("cpu")
    choices = agreed_speed_choices(cfg, model, cpu, size, 3, info, lambda _: None)
    speed.set_memory_format(model, choices["channels_last"])
    train_model = wrap_for_training(model, choices, info, cpu)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = make_loader(
        split,
        spec["batch_size"],
        train=True,
        preprocessing=pre,
        rank=info.rank,
        world_size=info.world_size,
        channels_last=choices["channels_last"],
    )
    criterion = nn.CrossEntropyLoss()

    def batches() -> Any:
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    it = batches()

    def step() -> None:
        x, y = next(it)
        train_step(train_model, opt, criterion, x, y, 0.05, ddp=info.enabled)

    for _ in range(2):
        step()
    barrier(info)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    per_step = (time.perf_counter() - t0) / 3
    steps = broadcast_object(max(3, int(spec["seconds"] / per_step)), info)
    barrier(info)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    barrier(info)
    elapsed = time.perf_counter() - t0
    shutdown(info)
    return {
        "images_per_s": steps * spec["batch_size"] / elapsed,
        "steps": steps,
        "seconds": elapsed,
        "processes": info.world_size,
        "threads": torch.get_num_threads(),
        "channels_last": choices["channels_last"],
        "compile": choices["compile"],
        "malloc_tuning": choices["malloc_tuning"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "rank": info.rank,
    }


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    if result["rank"] == 0:
        print(json.dumps(result), flush=True)
