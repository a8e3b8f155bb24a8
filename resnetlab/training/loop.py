"""The training loop: set up, then step / maybe evaluate / maybe checkpoint / maybe stop.

What a run is lives in its TrainConfig (config.py), where it stands in its TrainState
(state.py), how it is set up in setup.py, and where its files go in run_folder.py. This
file is only the loop, so it reads in a few minutes.
"""

from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnetlab.errors import TrainingDiverged
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import barrier, max_replica_difference, shutdown
from resnetlab.training.evaluate import EvalResult
from resnetlab.training.outputs import export_weights, plot_run_curves, write_results
from resnetlab.training.progress import Rate
from resnetlab.training.schedule import learning_rate, paper_warmup_should_end
from resnetlab.training.setup import Run, prepare
from resnetlab.training.step import train_step

__all__ = ["TrainResult", "TrainingDiverged", "train", "train_step"]

EMA_DECAY = 0.8  # running training error that ends the §4.2 warm-up


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    finished: bool
    test: EvalResult | None = None
    val: EvalResult | None = None
    checkpoint: Path | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    stopped_by_signal: int | None = None
    train_seconds: float | None = None  # wall time over all sessions, evaluations included


def train(
    cfg: TrainConfig, resume: bool = False, bundle: Any = None, continue_with: str | None = None
) -> TrainResult:
    """Train (or resume) the run described by ``cfg`` into the folder ``cfg.out``.

    ``continue_with``: what a stopped run tells the user to run; by default the
    ``train --resume`` line, but a run started by ``reproduce`` resumes through that
    command, which checks the run's settings against its report's."""
    run = prepare(cfg, resume, bundle)
    try:
        signum = fit(run)
        result = finish(run, signum, continue_with)
    finally:
        run.progress.close()
        if run.metrics is not None:
            run.metrics.close()
        run.folder.release()
    barrier(run.dist)
    shutdown(run.dist)
    return result


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and exits at the next sync point.
    A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def fit(run: Run) -> int | None:
    """Step until the run's end, its --stop-at, or a stop signal (on any rank).
    Returns the signal that stopped it, if one did."""
    cfg, state, dist = run.cfg, run.state, run.dist
    end = cfg.iters
    stop_at = min(cfg.stop_at, end) if cfg.stop_at else end
    eval_every = cfg.eval_every or max(1, end // cfg.eval_points)
    ckpt_every = cfg.checkpoint_every or eval_every
    # Host syncs (and, under DDP, one all-reduce of the window and the stop flag) happen
    # at fixed iterations, so a resumed run syncs where an uninterrupted one does.
    sync_every = 1 if run.device.type == "cpu" else 20
    window = torch.zeros(4, dtype=torch.float64, device=run.device)  # loss, errors, n, stop
    rate = Rate(state.images_seen)
    run.train_mode()
    run.progress.start(state.iteration, stop_at)
    with StopFlag() as stop:
        for x, y in run.batches() if state.iteration < stop_at else ():
            lr = learning_rate(cfg, state.iteration, state.warmup_done_at)
            train_step(run.train_model, state.optimizer, run.criterion, x, y, lr,
                       accum=cfg.accum_steps, autocast=run.autocast, stats=window[:3],
                       ddp=dist.enabled)  # fmt: skip
            state.iteration += 1
            state.images_seen += x.shape[0] * dist.world_size
            it = state.iteration
            if state.lookahead is not None and state.lookahead.due(it, end):
                state.lookahead.update(state.model, it, end)
            row_due = it % eval_every == 0 or it >= end  # never extra rows at a stop
            if it % sync_every and not row_due and it < stop_at:
                continue
            window[3] = 1.0 if stop.signum is not None else 0.0
            w = _gather(window, run)
            window.zero_()
            _account(run, w, on_boundary=it % sync_every == 0)
            rate.update(state.images_seen)
            run.progress.step(it, w[0] / max(w[2], 1), w[1] / max(w[2], 1), lr, rate.ips)
            stopping = it >= stop_at or w[3] > 0
            row, improved = _evaluate_and_log(run, lr, rate) if row_due else (None, False)
            if it % ckpt_every == 0 or stopping:
                run.save(run.folder.last, row)
            if improved:
                run.save(run.folder.best, row)  # after last.pt: a crash between keeps both usable
            if stopping:
                # a signal that reached another process stops this one too
                return (stop.signum or int(signal.SIGTERM)) if w[3] > 0 else None
    return None


def _gather(window: torch.Tensor, run: Run) -> list[float]:
    """The window summed over all processes (stop flag > 0 if any process was signalled)."""
    if run.dist.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(window)
    return [float(v) for v in window.tolist()]


def _account(run: Run, w: list[float], on_boundary: bool) -> None:
    """Add a window to the metrics interval; at fixed boundaries, update the running
    training error and end the §4.2 warm-up when it is below 80%."""
    state = run.state
    if not math.isfinite(w[0]):
        raise TrainingDiverged(
            f"loss became {w[0] / max(w[2], 1):.4g} at iteration {state.iteration}; stopped, "
            f"last good checkpoint kept in {run.folder.checkpoints} (lower --lr or add warm-up)"
        )
    for i in range(3):
        state.interval[i] += w[i]
        state.pending[i] += w[i]
    if on_boundary and state.pending[2] > 0:
        err = state.pending[1] / state.pending[2]
        state.train_error_ema = EMA_DECAY * state.train_error_ema + (1 - EMA_DECAY) * err
        state.pending = [0.0, 0.0, 0.0]
        if state.warmup_done_at is None and paper_warmup_should_end(
            run.cfg, state.iteration, state.train_error_ema
        ):
            state.warmup_done_at = state.iteration
            run.progress.info(f"paper warm-up ended at iteration {state.iteration}")


def _evaluate_and_log(run: Run, lr: float, rate: Rate) -> tuple[dict[str, Any], bool]:
    """Evaluate and write a metrics row; returns it and whether validation improved."""
    state = run.state
    tr, state.interval = state.interval, [0.0, 0.0, 0.0]
    val = run.evaluate(run.val_loader)
    test = run.evaluate(run.test_loader)
    row = {
        "iteration": state.iteration,
        "epoch": state.iteration / state.steps_per_epoch,
        "lr": lr,
        "train_loss": tr[0] / tr[2] if tr[2] else None,
        "train_error": tr[1] / tr[2] if tr[2] else None,
        "val_error": val.error if val else None,
        "test_error": test.error if test else None,
        "images_per_s": rate.row_rate(state.images_seen),
    }
    if run.metrics is not None:
        run.metrics.write(row)
    run.progress.eval_line(row)
    improved = val is not None and val.error < state.best_val_error
    if improved:
        state.best_val_error = val.error  # type: ignore[union-attr]
    return row, improved


def finish(run: Run, signum: int | None, continue_with: str | None = None) -> TrainResult:
    """After the loop: on a finished run, the best checkpoint's final evaluation, results,
    curves and portable weights; otherwise how to continue."""
    cfg, state, folder = run.cfg, run.state, run.folder
    finished = state.iteration >= cfg.iters
    if run.dist.enabled:
        diff = max_replica_difference(list(run.model.parameters()), run.dist)
        same = "identical" if diff == 0 else f"DIFFERENT (max difference {diff:.3g})"
        run.progress.info(f"weights {same} on all {run.dist.world_size} ranks")
    result = TrainResult(folder.path, state.iteration, finished, choices=state.choices,
                         stopped_by_signal=signum)  # fmt: skip
    if not finished:
        why = f"stopped by signal {signum}" if signum else "stopped (--stop-at)"
        run.progress.info(
            f"{why} at iteration {state.iteration} of {cfg.iters}; checkpoint saved, "
            f"continue with: {continue_with or f'resnetlab train --out {folder.path} --resume'}"
        )
        return result
    result.checkpoint = folder.last
    if run.val_loader is not None and folder.best.exists():
        from resnetlab.training.checkpoint import load_checkpoint

        run.model.load_state_dict(load_checkpoint(folder.best)["model"])
        result.checkpoint = folder.best
    result.val = run.evaluate(run.val_loader)
    result.test = run.evaluate(run.test_loader)
    result.train_seconds = run.elapsed()
    if run.dist.is_main:
        write_results(folder, result)
        name = cfg.model + (f" (shortcut {cfg.shortcut})" if cfg.shortcut else "")
        plot_run_curves(folder, name, f"{name} on {run.bundle.name}")
        export_weights(folder, run.model, run.meta, result.test)
    return result
