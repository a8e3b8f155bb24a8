"""Setting a run up: folder, processes, data, model, TrainState (fresh or resumed).

``prepare`` does everything before the first step, in the order that finds user errors
cheapest first (config, then the run folder, then data), and returns a ``Run``: what the
loop in loop.py needs and nothing it has to rebuild.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import ResnetlabError, TrainingDiverged
from resnetlab.models import ResNet, ResNetConfig, model_config
from resnetlab.training import speed, step
from resnetlab.training.checkpoint import load_checkpoint, save_checkpoint
from resnetlab.training.config import TrainConfig
from resnetlab.training.distributed import DistInfo, broadcast_object, init_distributed
from resnetlab.training.evaluate import EvalResult, evaluate, tta_predictor
from resnetlab.training.finetune import (
    adopt_normalisation,
    frozen_modules,
    init_config,
    load_init,
    param_groups,
    set_train_mode,
)
from resnetlab.training.lookahead import Lookahead
from resnetlab.training.metrics import MetricsLog
from resnetlab.training.outputs import write_run_config
from resnetlab.training.progress import Progress
from resnetlab.training.run_folder import RunFolder
from resnetlab.training.state import TrainState

EVAL_BATCH = 500


@dataclass
class Run:
    """A prepared run: configuration, where it writes, and the objects it trains with."""

    cfg: TrainConfig
    folder: RunFolder
    dist: DistInfo
    device: torch.device
    bundle: Any
    state: TrainState
    train_loader: Any
    val_loader: Any
    test_loader: Any
    meta: dict[str, Any]
    model_config: dict[str, Any]
    train_model: nn.Module
    autocast: contextlib.AbstractContextManager[Any]
    criterion: nn.Module
    progress: Progress
    metrics: MetricsLog | None = None
    frozen: list[nn.Module] = field(default_factory=list)
    # this session's start, and the run's wall time before it (from its checkpoint)
    session_start: float = field(default_factory=time.monotonic)
    seconds_before: float = 0.0

    def elapsed(self) -> float:
        """The run's wall time so far, over all its sessions."""
        return self.seconds_before + time.monotonic() - self.session_start

    @property
    def model(self) -> nn.Module:
        return self.state.model

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches from the state's iteration on, across epochs."""
        steps = self.state.steps_per_epoch
        epoch, start = divmod(self.state.iteration, steps)
        while True:
            yield from self.train_loader.epoch(epoch, start_batch=start)
            epoch, start = epoch + 1, 0

    def evaluate(self, loader: Any) -> EvalResult | None:
        if loader is None:
            return None
        model = self.model

        def logits(x: torch.Tensor) -> torch.Tensor:
            with self.autocast:
                return model(x)

        model.eval()
        if self.dist.enabled:  # every rank scores the saved model: rank 0's BN statistics
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        views = tta_predictor(logits, self.cfg.tta_flip, self.cfg.tta_shift)
        result = evaluate(views, loader.epoch(0), self.dist, self.device)
        self.train_mode()
        return result

    def train_mode(self) -> None:
        set_train_mode(self.model, self.frozen)

    def save(self, path: Path, row: dict[str, Any] | None = None) -> None:
        """The whole TrainState; rank 0 writes, every rank checks the weights are finite."""
        for t in self.model.state_dict().values():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TrainingDiverged(
                    f"weights became non-finite by iteration {self.state.iteration}; stopped, "
                    f"last good checkpoint kept in {self.folder.checkpoints} "
                    "(lower --lr or add warm-up)"
                )
        self.state.train_seconds = self.elapsed()
        if self.dist.is_main:
            meta = {**self.meta, "metrics": row or {}}
            save_checkpoint(path, self.state.state_dict(), self.model_config, meta)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResnetlabError("--device cuda asked for, but no CUDA device is available")
    return dev


def prepare(cfg: TrainConfig, resume: bool, bundle: Any) -> Run:
    """Everything before the first step. The run folder is locked by rank 0 on return."""
    from resnetlab.data import make_loader
    from resnetlab.data.loader import check_global_batch

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

    check_global_batch(cfg.batch_size, dist_info.world_size)  # before any data is read
    if cfg.sync_bn and device.type != "cuda":
        raise ResnetlabError(
            "--sync-bn needs CUDA (SyncBatchNorm runs on NCCL); on the CPU each process "
            "normalises over its own B/W images"
        )
    folder = RunFolder(cfg.out)
    progress = Progress(cfg.iters, cfg.log_every, enabled=dist_info.is_main)
    claim: tuple[Path | None, str | None] = (None, None)
    if dist_info.is_main:
        try:  # rank 0 decides; every rank raises the same one-line error
            folder.acquire()
            claim = (_claim(folder, resume, progress.info), None)
        except ResnetlabError as e:
            folder.release(discard_if_empty=True)
            claim = (None, str(e))
    checkpoint_path, refusal = broadcast_object(claim, dist_info)
    if refusal is not None:
        raise ResnetlabError(refusal)
    try:
        ckpt = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
        if ckpt is not None and int(ckpt["iteration"]) > cfg.iters:
            raise ResnetlabError(
                f"{folder.path} is at iteration {ckpt['iteration']}; a length of {cfg.iters} "
                "iterations would end before it (give a larger --iters)"
            )
        pretrained = None
        if cfg.init and ckpt is None:  # a resumed run's weights are in its checkpoint
            from resnetlab.interop.loading import load_pretrained

            pretrained = load_pretrained(cfg.init)
        if bundle is None:
            progress.info(f"loading data: {cfg.data}")
            bundle = _open_data(cfg, dist_info)
        for note in getattr(bundle, "notes", []):
            progress.info(note)
        if ckpt is not None:  # what the run was set up with, --init's choices included
            pre = Preprocessing.from_dict(ckpt["meta"]["preprocessing"])
            mcfg = ResNetConfig.from_dict(ckpt["model_config"])
        elif pretrained is not None:
            pre = adopt_normalisation(bundle.preprocessing(cfg.normalize), pretrained.preprocessing)
            mcfg = init_config(
                cfg, pretrained.torch_model.config, len(bundle.classes), bundle.in_channels
            )
        else:
            pre = bundle.preprocessing(cfg.normalize)
            mcfg = model_config(
                cfg.model,
                num_classes=len(bundle.classes),
                in_channels=bundle.in_channels,
                shortcut=cfg.shortcut,
                zero_init_residual=cfg.zero_init_residual or None,
                stride_in=cfg.stride_in,
                width=cfg.width,
                zero_pad=cfg.zero_pad,
            )
        torch.manual_seed(cfg.seed)
        model = ResNet(mcfg).to(device)
        if pretrained is not None:
            load_init(model, pretrained.torch_model, progress.info)
        elif ckpt is None and cfg.stem_init == "pca":  # a resumed run has its weights
            _pca_stem(model, bundle.train, pre, progress.info)

        # speed settings: chosen once (by rank 0), recorded in the state, reused on resume
        choices = (ckpt or {}).get("choices")
        if choices:
            progress.info(f"speed settings of this run: {_describe(choices)}")
        else:
            choices = agreed_speed_choices(cfg, model, device, bundle.image_size,
                                           bundle.in_channels, dist_info, progress.info)  # fmt: skip
        speed.apply(model, device, choices)

        def loader(split: Any, train: bool) -> Any:
            if split is None:
                return None
            return make_loader(
                split,
                cfg.batch_size if train else EVAL_BATCH,
                train=train,
                preprocessing=pre,
                device=device,
                seed=cfg.seed,
                augment=cfg.augment if train else False,
                pad=cfg.pad,
                flip="alternate" if cfg.flip == "alternate" else True,
                train_crop=cfg.train_crop,  # type: ignore[arg-type]  # validated: scale | rrc
                rank=dist_info.rank,
                world_size=dist_info.world_size,
                channels_last=choices["channels_last"],
                strict=cfg.strict_data,
            )

        train_loader = loader(bundle.train, True)
        _note_unused_small_image_augmentation(cfg, bundle.train, progress.info)
        if len(train_loader) == 0:
            raise ResnetlabError(
                f"the training split has fewer images than one batch ({cfg.batch_size}); "
                "lower --batch-size"
            )
        frozen = frozen_modules(model, cfg.freeze)
        optimizer = torch.optim.SGD(
            param_groups(model, frozen, cfg.backbone_lr_scale, cfg.norm_weight_decay),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
        lookahead = Lookahead(model, cfg.lookahead) if cfg.lookahead else None
        state = TrainState(model, optimizer, len(train_loader), choices=choices,
                           lookahead=lookahead)  # fmt: skip
        if ckpt is not None:
            state.load_state_dict(ckpt)
            progress.info(f"resumed from {checkpoint_path} at iteration {state.iteration}")

        meta = {
            "classes": list(bundle.classes),
            "preprocessing": pre.to_dict(),
            "recipe": cfg.to_dict(),
            "data": bundle.name,
        }
        metrics = None
        if dist_info.is_main:
            write_run_config(folder, cfg, mcfg.to_dict(), bundle, pre.to_dict(), choices,
                             dist_info, device)  # fmt: skip
            metrics = MetricsLog(folder, resume_from=state.iteration if ckpt else None)
    except BaseException:
        folder.release(discard_if_empty=True)
        raise

    train_model = wrap_for_training(model, choices, dist_info, device, sync_bn=cfg.sync_bn)
    return Run(
        cfg=cfg,
        folder=folder,
        dist=dist_info,
        device=device,
        bundle=bundle,
        state=state,
        train_loader=train_loader,
        val_loader=loader(bundle.val, False),
        test_loader=loader(bundle.test, False),
        meta=meta,
        model_config=mcfg.to_dict(),
        train_model=train_model,
        autocast=speed.autocast_context(device, choices["amp"]),
        criterion=step.ScaledCrossEntropy(cfg.logit_scale, cfg.label_smoothing),
        progress=progress,
        metrics=metrics,
        frozen=frozen,
        seconds_before=state.train_seconds,
    )


def agreed_speed_choices(
    cfg: TrainConfig,
    model: nn.Module,
    device: torch.device,
    image_size: int,
    in_channels: int,
    dist_info: Any,
    log: Any,
) -> dict[str, Any]:
    """The speed settings (``speed.choose``), measured by rank 0 and sent to every rank,
    so that all processes run the same memory format, compile and precision."""
    choices = None
    if dist_info.is_main:
        choices = speed.choose(cfg, model, device, image_size, in_channels, log)
    choices = broadcast_object(choices, dist_info)
    assert choices is not None
    return dict(choices)


def wrap_for_training(
    model: nn.Module,
    choices: dict[str, Any],
    dist_info: Any,
    device: torch.device,
    *,
    sync_bn: bool = False,
) -> nn.Module:
    """What the step runs: ``model`` under DDP (with SyncBatchNorm if asked) when there
    are several processes, compiled when the choices say so; parameters stay shared."""
    train_model: nn.Module = model
    if sync_bn and dist_info.enabled:
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if choices["compile"]:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    return train_model


def _note_unused_small_image_augmentation(
    cfg: TrainConfig, train: Any, log: Callable[[str], None]
) -> None:
    """--pad and --flip shape §4.2's augmentation of small in-memory images; streamed
    large images take --train-crop's instead. Say so when they were set and go unused."""
    from resnetlab.data.common import InMemorySplit

    unused = [f"--pad {cfg.pad}"] if cfg.pad != 4 else []
    unused += [f"--flip {cfg.flip}"] if cfg.flip != "random" else []
    if unused and cfg.augment and not isinstance(train, InMemorySplit):
        log(
            f"note: {' and '.join(unused)} apply to small in-memory images only; these "
            f"large images are streamed and augmented by --train-crop {cfg.train_crop}"
        )


def _pca_stem(model: ResNet, train: Any, pre: Preprocessing, log: Callable[[str], None]) -> None:
    """--stem-init pca: the stem's filters along the training patches' principal axes
    (stem_init.py); every rank computes the same filters from the same images."""
    from resnetlab.data.common import InMemorySplit
    from resnetlab.training.stem_init import pca_stem_

    if not isinstance(train, InMemorySplit):
        raise ResnetlabError(
            "--stem-init pca needs an in-memory (small-image) dataset; this one is streamed"
        )
    k = model.conv1.kernel_size[0]
    try:
        used = pca_stem_(model.conv1, train.images, pre)
    except ValueError as e:  # e.g. a stem wider than twice its patch dimension
        raise ResnetlabError(f"--stem-init pca: {e}") from None
    log(
        f"stem: {model.conv1.out_channels} filters on +/- the {used} leading principal "
        f"components of the training images' {k}x{k} patches, at He's norm"
    )


def _open_data(cfg: TrainConfig, dist_info: Any) -> Any:
    """The dataset, opened by rank 0 first: it decodes and caches the images once, and
    the other ranks then load its cache instead of decoding the same files at once."""
    from resnetlab.data import open_dataset

    def open_it() -> Any:
        return open_dataset(
            cfg.data,
            data_dir=cfg.data_dir,
            val_size=cfg.val_size,
            seed=cfg.seed,
            strict=cfg.strict_data,
            image_size=cfg.image_size or None,
        )

    bundle, refusal = None, None
    if dist_info.is_main:
        try:
            bundle = open_it()
        except ResnetlabError as e:
            refusal = str(e)
    refusal = broadcast_object(refusal, dist_info)  # the other ranks wait here
    if refusal is not None:
        raise ResnetlabError(refusal)
    return bundle if bundle is not None else open_it()


def _claim(folder: RunFolder, resume: bool, log: Callable[[str], None]) -> Path | None:
    """The checkpoint to start from (None: from scratch), after checking the folder suits
    the request. A folder whose first checkpoint was never completed (killed early) holds
    nothing to lose: it is started afresh either way."""
    path = folder.checkpoint_to_resume()
    if path is None:
        if folder.config.exists():
            log(f"{folder.path} holds no completed checkpoint; starting it from the beginning")
            folder.discard_unstarted()
        return None
    if not resume:
        raise ResnetlabError(
            f"{folder.path} already holds a run; continue it with --resume or choose another --out"
        )
    if path != folder.last:
        log(f"{folder.last.name} is missing (interrupted write); resuming from {path.name}")
    return path


def _describe(choices: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in choices.items())
