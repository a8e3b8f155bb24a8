"""The training loop: data -> model -> SGD steps -> metrics and checkpoints.

Everything that defines a run is in its TrainConfig; everything that changes during
it (weights, optimizer state, iteration, the paper warm-up's end) is in the
checkpoint, and the data order is a function of (seed, epoch, batch), so a resumed
run continues bit for bit where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import resnetlab
from resnetlab.errors import ResnetlabError
from resnetlab.models import ResNet, model_config
from resnetlab.training import speed
from resnetlab.training.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_atomic
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    max_replica_difference,
    shutdown,
)
from resnetlab.training.evaluate import EvalResult, evaluate, flip_averaged
from resnetlab.training.metrics import MetricsLog, plot_curves, read_metrics
from resnetlab.training.schedule import learning_rate, paper_warmup_should_end

EVAL_BATCH = 500


class TrainingDiverged(ResnetlabError):
    pass


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    finished: bool
    test: EvalResult | None = None
    val: EvalResult | None = None
    checkpoint: Path | None = None
    choices: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResnetlabError("--device cuda asked for, but no CUDA device is available")
    return dev


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and exits after the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if sys.modules["threading"].current_thread() is sys.modules["threading"].main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, resume: bool = False, bundle: Any = None) -> TrainResult:
    """Train (or resume) the run described by ``cfg`` into ``cfg.out``."""
    from resnetlab.data import make_loader, open_dataset

    cfg.validate()
    device = resolve_device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif dist_info.enabled and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist_info.world_size))
    run_dir = Path(cfg.out)
    ckpt_dir = run_dir / "checkpoints"
    log = _Logger(cfg, dist_info)

    if bundle is None:
        log.info(f"loading data: {cfg.data}")
        bundle = open_dataset(
            cfg.data,
            data_dir=cfg.data_dir,
            val_size=cfg.val_size,
            seed=cfg.seed,
            strict=cfg.strict_data,
        )
    pre = bundle.preprocessing(cfg.normalize)
    mcfg = model_config(
        cfg.model,
        num_classes=len(bundle.classes),
        in_channels=bundle.in_channels,
        shortcut=cfg.shortcut,
        zero_init_residual=cfg.zero_init_residual or None,
    )
    torch.manual_seed(cfg.seed)
    model = ResNet(mcfg).to(device)
    choices = speed.choose(cfg, model, device, bundle.image_size, bundle.in_channels, log.info)
    if choices["channels_last"]:
        speed.set_memory_format(model, True)

    def loader(split: Any, train_mode: bool) -> Any:
        return make_loader(
            split,
            cfg.batch_size if train_mode else EVAL_BATCH,
            train=train_mode,
            preprocessing=pre,
            device=device,
            seed=cfg.seed,
            augment=cfg.augment if train_mode else False,
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            channels_last=choices["channels_last"],
            strict=cfg.strict_data,
        )

    train_loader = loader(bundle.train, True)
    val_loader = loader(bundle.val, False) if bundle.val is not None else None
    test_loader = loader(bundle.test, False) if bundle.test is not None else None
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ResnetlabError(
            f"the training split has fewer images than one batch ({cfg.batch_size})"
        )

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    iteration, warmup_done_at, best_val = 0, None, math.inf
    if resume:
        path = ckpt_dir / "last.pt"
        ckpt = load_checkpoint(path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        iteration = int(ckpt["iteration"])
        warmup_done_at = ckpt.get("warmup_done_at")
        best_val = float(ckpt.get("best_val_error", math.inf))
        torch.set_rng_state(ckpt["rng"]["torch"])
        log.info(f"resumed from {path} at iteration {iteration}")

    meta = {
        "classes": list(bundle.classes),
        "preprocessing": pre.to_dict(),
        "recipe": cfg.to_dict(),
        "data": bundle.name,
    }
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_run_config(run_dir, cfg, mcfg.to_dict(), bundle, pre.to_dict(), choices, dist_info)
    metrics = (
        MetricsLog(run_dir, resume_from=iteration if resume else None)
        if dist_info.is_main
        else None
    )

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if choices["compile"]:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    autocast = speed.autocast_context(device, choices["amp"])
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    accum = cfg.accum_steps

    def eval_model(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(x)

    predict = flip_averaged(eval_model) if cfg.tta_flip else eval_model

    def run_eval(which: Any) -> EvalResult | None:
        if which is None:
            return None
        model.eval()
        result = evaluate(predict, which.epoch(0), dist_info)
        model.train()
        return result

    def save(name: str, extra: dict[str, Any] | None = None) -> Path:
        path = ckpt_dir / name
        state_tensors = model.state_dict().values()
        if not all(bool(torch.isfinite(t).all()) for t in state_tensors if t.is_floating_point()):
            raise TrainingDiverged(
                f"weights became non-finite by iteration {iteration}; stopped, last good "
                f"checkpoint kept in {ckpt_dir} (lower --lr or add warm-up)"
            )
        if dist_info.is_main:
            state = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "model_config": mcfg.to_dict(),
                "model": model.state_dict(),
                "meta": {**meta, "metrics": extra or {}},
                "optimizer": optimizer.state_dict(),
                "iteration": iteration,
                "warmup_done_at": warmup_done_at,
                "best_val_error": best_val,
                "rng": {"torch": torch.get_rng_state()},
            }
            save_atomic(state, path)
        return path

    end = cfg.iters
    stop_at = min(cfg.stop_at, end) if cfg.stop_at > 0 else end
    eval_every = cfg.eval_every or max(1, end // max(1, cfg.eval_points))
    ckpt_every = cfg.checkpoint_every or eval_every
    sync_every = 1 if device.type == "cpu" else 20  # a host sync costs little on the CPU
    window = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, errors, images
    interval = [0.0, 0.0, 0.0]  # the same since the last metrics row, on the host
    recent_err = 1.0
    images_seen = images_at_rate = images_at_row = 0
    ips = 0.0
    t_rate = t_row = time.perf_counter()

    def batch_stream(first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from iteration ``first`` on, across epochs (data order is (seed, epoch))."""
        it = first
        while True:
            epoch, start = divmod(it, steps_per_epoch)
            for batch in train_loader.epoch(epoch, start_batch=start):
                yield batch
                it += 1

    model.train()
    log.start(iteration, stop_at)
    stop = _StopFlag()
    try:
        with stop:
            batches = batch_stream(iteration) if iteration < stop_at else iter(())
            for x, y in batches:
                lr = learning_rate(cfg, iteration, warmup_done_at)
                train_step(
                    train_model,
                    optimizer,
                    criterion,
                    x,
                    y,
                    lr,
                    accum=accum,
                    autocast=autocast,
                    stats=window,
                    ddp=dist_info.enabled,
                )
                iteration += 1
                images_seen += x.shape[0] * dist_info.world_size
                last = iteration >= stop_at or stop.signum is not None
                row_due = last or iteration % eval_every == 0
                if iteration % sync_every and not row_due:
                    continue
                w = window.tolist()
                window.zero_()
                interval = [a + b for a, b in zip(interval, w)]
                if not math.isfinite(w[0]):
                    raise TrainingDiverged(
                        f"loss became {w[0] / max(w[2], 1):.4g} at iteration {iteration}; "
                        f"stopped, last good checkpoint kept in {ckpt_dir} "
                        "(lower --lr or add warm-up)"
                    )
                recent_err = 0.8 * recent_err + 0.2 * w[1] / max(w[2], 1)
                if warmup_done_at is None and paper_warmup_should_end(cfg, iteration, recent_err):
                    warmup_done_at = iteration
                    log.info(f"paper warm-up ended at iteration {iteration}")
                now = time.perf_counter()
                if now - t_rate > 2.0 or ips == 0.0:  # rate over the last ~2 s
                    ips = (images_seen - images_at_rate) / max(now - t_rate, 1e-9)
                    t_rate, images_at_rate = now, images_seen
                log.progress(iteration, w[0] / max(w[2], 1), w[1] / max(w[2], 1), lr, ips)
                if not row_due:
                    continue
                tr, interval = interval, [0.0, 0.0, 0.0]
                val = run_eval(val_loader)
                test = run_eval(test_loader)
                now = time.perf_counter()
                row = {
                    "iteration": iteration,
                    "epoch": iteration / steps_per_epoch,
                    "lr": lr,
                    "train_loss": tr[0] / tr[2] if tr[2] else None,
                    "train_error": tr[1] / tr[2] if tr[2] else None,
                    "val_error": val.error if val else None,
                    "test_error": test.error if test else None,
                    "images_per_s": (images_seen - images_at_row) / max(now - t_row, 1e-9),
                }
                t_row, images_at_row = now, images_seen
                if metrics is not None:
                    metrics.write(row)
                log.eval_line(row)
                if val is not None and val.error < best_val:
                    best_val = val.error
                    save("best.pt", row)
                if last or iteration % ckpt_every == 0:
                    save("last.pt", row)
                if last:
                    break
    finally:
        log.close()
        if metrics is not None:
            metrics.close()

    finished = iteration >= end
    if dist_info.enabled:
        diff = max_replica_difference(list(model.parameters()), dist_info)
        state = "identical" if diff == 0 else f"DIFFERENT (max difference {diff:.3g})"
        log.info(f"weights {state} on all {dist_info.world_size} ranks")
    result = TrainResult(run_dir, iteration, finished, choices=choices)
    if stop.signum is not None:
        log.info(
            f"stopped by signal {stop.signum} at iteration {iteration}; checkpoint saved, "
            f"continue with: resnetlab train --out {run_dir} --resume"
        )
    if finished:
        best_path = ckpt_dir / "best.pt"
        if val_loader is not None and best_path.exists():
            model.load_state_dict(load_checkpoint(best_path)["model"])
            result.checkpoint = best_path
        else:
            result.checkpoint = ckpt_dir / "last.pt"
        result.val = run_eval(val_loader)
        result.test = run_eval(test_loader)
        if dist_info.is_main:
            _write_results(run_dir, result)
            plot_curves(
                {cfg.model: read_metrics(run_dir / "metrics.csv")},
                run_dir / "curves.png",
                title=f"{cfg.model} on {bundle.name}",
            )
            _export_weights(run_dir, model, meta, result)
    barrier(dist_info)
    shutdown(dist_info)
    return result


def train_step(
    train_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    *,
    accum: int = 1,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    stats: torch.Tensor | None = None,
    ddp: bool = False,
) -> None:
    """One SGD step on a (global or per-rank) batch, in ``accum`` micro-batches.

    ``stats`` (float64 [3], on the device) accumulates loss sum, errors and images
    without a host sync; under DDP, gradients are all-reduced only on the last micro-batch.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    for i, (xc, yc) in enumerate(zip(x.chunk(accum), y.chunk(accum))):
        sync_ctx = _no_sync(train_model) if ddp and i < accum - 1 else contextlib.nullcontext()
        with sync_ctx, autocast or contextlib.nullcontext():
            out = train_model(xc)
            loss = criterion(out.float(), yc)
        (loss / accum).backward()
        if stats is not None:
            with torch.no_grad():
                stats[0] += loss.detach() * yc.numel()
                stats[1] += (out.argmax(1) != yc).sum()
                stats[2] += yc.numel()
    optimizer.step()


def _no_sync(module: nn.Module) -> contextlib.AbstractContextManager[Any]:
    target = getattr(module, "_orig_mod", module)
    return target.no_sync()  # type: ignore[operator]


def _write_run_config(
    run_dir: Path,
    cfg: TrainConfig,
    model_cfg: dict[str, Any],
    bundle: Any,
    pre: dict[str, Any],
    choices: dict[str, Any],
    dist_info: DistInfo,
) -> None:
    pre_summary = {k: v for k, v in pre.items() if k != "mean"}
    doc = {
        "train": cfg.to_dict(),
        "model": model_cfg,
        "data": {
            "name": bundle.name,
            "classes": list(bundle.classes),
            "train_images": len(bundle.train.labels) if hasattr(bundle.train, "labels") else None,
            "val_images": len(bundle.val.labels)
            if bundle.val is not None and hasattr(bundle.val, "labels")
            else None,
            "test_images": len(bundle.test.labels)
            if bundle.test is not None and hasattr(bundle.test, "labels")
            else None,
            "preprocessing": pre_summary,
        },
        "environment": {
            "resnetlab": resnetlab.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "world_size": dist_info.world_size,
            "choices": choices,
        },
    }
    (run_dir / "config.json").write_text(json.dumps(doc, indent=2) + "\n")


def _write_results(run_dir: Path, result: TrainResult) -> None:
    doc: dict[str, Any] = {"iteration": result.iteration, "checkpoint": str(result.checkpoint)}
    for name in ("val", "test"):
        r = getattr(result, name)
        if r is not None:
            doc[name] = {"top1_acc": r.top1_acc, "top5_acc": r.top5_acc, "loss": r.loss, "n": r.n}
    (run_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")


def _export_weights(
    run_dir: Path, model: ResNet, meta: dict[str, Any], result: TrainResult
) -> None:
    """Final weights in our portable format (safetensors + metadata), if available."""
    try:
        from resnetlab.interop.weights import save_weights
    except ImportError:
        return
    metrics = {"test_top1_acc": result.test.top1_acc} if result.test else {}
    save_weights(
        run_dir / "model.safetensors",
        speed.set_memory_format(model, False),  # type: ignore[arg-type]
        classes=meta["classes"],
        preprocessing=meta["preprocessing"],
        recipe=meta["recipe"],
        metrics=metrics,
        source=f"resnetlab train ({run_dir})",
    )


class _Logger:
    """A progress bar on a terminal, plain lines otherwise; silent on ranks other than 0."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo) -> None:
        self.enabled = dist_info.is_main
        self.log_every = cfg.log_every
        self.bar: Any = None
        self.use_bar = self.enabled and cfg.log_every == 0 and sys.stderr.isatty()
        self.total = cfg.iters

    def info(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def start(self, iteration: int, stop_at: int) -> None:
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=stop_at, initial=iteration, unit="it", dynamic_ncols=True)
        self.last = iteration

    def progress(self, it: int, loss: float, err: float, lr: float, ips: float) -> None:
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
        elif self.log_every and it % self.log_every == 0:
            print(
                f"iter {it}/{self.total} lr {lr:.4g} loss {loss:.4f} err {100 * err:.2f}% "
                f"{ips:.0f} img/s",
                flush=True,
            )
        self.last = it

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
