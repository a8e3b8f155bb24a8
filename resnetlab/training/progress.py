"""What a run prints: a progress bar on a terminal, plain lines everywhere else.

Plain lines come every ``--log-every`` iterations, or, when that is unset and the output
is a pipe, a file or a batch job's log, after the first step and then every
``PLAIN_INTERVAL_S`` seconds, so a run is never silent for its whole length.
Ranks other than 0 print nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any

PLAIN_INTERVAL_S = 30.0


class Progress:
    def __init__(self, total: int, log_every: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.total = total
        self.log_every = log_every
        self.use_bar = enabled and log_every == 0 and sys.stderr.isatty()
        self.bar: Any = None
        self.last = 0
        self.next_plain = 0.0

    def info(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def start(self, iteration: int, stop_at: int) -> None:
        self.last = iteration
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=stop_at, initial=iteration, unit="it", dynamic_ncols=True)

    def step(self, it: int, loss: float, err: float, lr: float, ips: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(it - self.last)
            self.bar.set_postfix(
                loss=f"{loss:.3f}",
                err=f"{100 * err:.1f}%",
                lr=f"{lr:.3g}",
                ips=f"{ips:.0f}",
                refresh=False,
            )
        elif self._plain_due(it):
            print(
                f"iter {it}/{self.total} lr {lr:.4g} loss {loss:.4f} err {100 * err:.2f}% "
                f"{ips:.0f} img/s",
                flush=True,
            )
        self.last = it

    def _plain_due(self, it: int) -> bool:
        if self.log_every:
            return it % self.log_every == 0
        now = time.monotonic()
        if now < self.next_plain:
            return False
        self.next_plain = now + PLAIN_INTERVAL_S
        return True

    def eval_line(self, row: dict[str, Any]) -> None:
        parts = [f"iter {row['iteration']}", f"epoch {row['epoch']:.2f}"]
        for key in ("train_error", "val_error", "test_error"):
            if row.get(key) is not None:
                parts.append(f"{key.replace('_error', '')} err {100 * row[key]:.2f}%")
        parts.append(f"{row['images_per_s']:.0f} img/s")
        self.info(" | ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Rate:
    """Images per second over the last ~2 s (progress) and since the last metrics row."""

    def __init__(self, images: int) -> None:
        self.t = self.t_row = time.perf_counter()
        self.images = self.images_row = images
        self.ips = 0.0

    def update(self, images: int) -> None:
        now = time.perf_counter()
        if now - self.t > 2.0 or self.ips == 0.0:
            self.ips = (images - self.images) / max(now - self.t, 1e-9)
            self.t, self.images = now, images

    def row_rate(self, images: int) -> float:
        now = time.perf_counter()
        ips = (images - self.images_row) / max(now - self.t_row, 1e-9)
        self.t_row, self.images_row = now, images
        return ips
