"""``resnetlab bench``: data, training and inference throughput, each against a baseline.

Each topic lives in its own module exposing ``register(subparsers)``; they are
imported only when named on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

TOPICS: dict[str, str] = {
    "data": "resnetlab.benchmarks.data",
    "train": "resnetlab.benchmarks.train",
    "infer": "resnetlab.benchmarks.infer",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks: data | train | infer")
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
