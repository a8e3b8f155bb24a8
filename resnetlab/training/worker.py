"""A training worker started by ``launch.train_workers``: argv is the final config (JSON),
``resume`` or ``new``, and optionally what a stopped run says to run to continue. The launching command checked the command line; a worker
reports its own errors (rank 0 only, one line) and results the way ``train`` does."""

from __future__ import annotations

import json
import os
import sys

from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig


def main(argv: list[str]) -> int:
    from resnetlab.training.loop import train
    from resnetlab.training.train_command import report

    cfg = TrainConfig.from_dict(json.loads(argv[0]))
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        continue_with = argv[2] if len(argv) > 2 else None
        result = train(cfg, resume=argv[1] == "resume", continue_with=continue_with)
    except ResnetlabError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if main_rank:
            print("interrupted", file=sys.stderr)
        return 130
    if main_rank:
        report(result)
    return 3 if result.stopped_by_signal else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
