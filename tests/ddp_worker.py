"""A torchrun worker for the scale-out tests: ``resnetlab train`` with a fault injected.

``FAULT=kill:RANK:BATCH`` makes process RANK SIGKILL itself when it reaches global batch
BATCH, ``FAULT=term:RANK:BATCH`` sends it SIGTERM; only on the group's first start
(``TORCHELASTIC_RESTART_COUNT`` 0), so a restarted group runs clean. Not part of the
package: faults are injected from outside, the trainer has no test hooks.
"""

import os
import signal
import sys

import resnetlab.data as data
from resnetlab.cli import main

fault = os.environ.get("FAULT", "")
if fault and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    kind, rank, at = fault.split(":")
    if os.environ.get("RANK") == rank:
        real = data.make_loader
        sig = signal.SIGKILL if kind == "kill" else signal.SIGTERM

        class Faulty:
            def __init__(self, inner):  # type: ignore[no-untyped-def]
                self.inner = inner

            def __len__(self) -> int:
                return len(self.inner)

            def epoch(self, e, start_batch=0):  # type: ignore[no-untyped-def]
                for i, b in enumerate(self.inner.epoch(e, start_batch=start_batch)):
                    if e * len(self.inner) + start_batch + i == int(at):
                        os.kill(os.getpid(), sig)
                    yield b

        def make_loader(split, bs, **kw):  # type: ignore[no-untyped-def]
            inner = real(split, bs, **kw)
            return Faulty(inner) if kw.get("train") else inner

        data.make_loader = make_loader

sys.exit(main(sys.argv[1:]))
