"""``resnetlab bench``: data, training and inference throughput, each against a baseline.

Each topic lives in its own module exposing ``register(subparsers)``; they are
imported only when named on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from resnetlab.errors import ResnetlabError

TOPICS: dict[str, str] = {
    "data": "resnetlab.benchmarks.data",
    "train": "resnetlab.benchmarks.train",
    "infer": "resnetlab.benchmarks.infer",
    "layout": "resnetlab.benchmarks.layout",
    "fused-tail": "resnetlab.benchmarks.fused_tail",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks: data | train | infer | layout | fused-tail")
    topics = p.add_subparsers(dest="topic", metavar="TOPIC")
    topics.required = True
    argv = sys.argv[1:]
    named = next((t for t in TOPICS if t in argv), None)
    for topic, module in TOPICS.items():
        if named in (None, topic):
            try:
                importlib.import_module(module).register(topics)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
        else:
            topics.add_parser(topic, help=f"see 'resnetlab bench {topic} --help'")


def check_args(
    *,
    model: str | None = None,
    positive: dict[str, float | None] | None = None,
    non_negative: dict[str, int | None] | None = None,
    device: str | None = None,
) -> None:
    """Refuse bad flags before a benchmark loads data or builds a model: a benchmark
    that starts on them fails minutes later with a traceback, or never ends."""
    if model is not None:
        from resnetlab.models import PRESETS

        if model not in PRESETS:
            raise ResnetlabError(f"unknown model {model!r}; see 'resnetlab models'")
    for flag, value in (positive or {}).items():
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ResnetlabError(f"{flag} must be > 0, got {value}")
    for flag, value in (non_negative or {}).items():
        if value is not None and value < 0:
            raise ResnetlabError(f"{flag} must be >= 0, got {value}")
    if device is not None:
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ResnetlabError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ResnetlabError(f"--device {device}: CUDA is not available here")
        if kind not in ("cpu", "cuda"):
            raise ResnetlabError(f"unsupported device {device!r}: use cpu, cuda or cuda:N")


def check_batches(n_images: int, batch_size: int, where: str) -> None:
    """A training split smaller than one batch yields no batch at all (drop_last)."""
    if n_images < batch_size:
        from resnetlab.errors import DataError

        raise DataError(
            f"{where}: the training split has {n_images} images, fewer than one batch of "
            f"{batch_size}; give a smaller --batch-size"
        )
