"""Batches for training and evaluation, deterministic and shardable.

For training the sample order is a function of (seed, epoch) and the augmentation of
(seed, epoch, batch index), so ``epoch(e, start_batch=k)`` replays batches k, k+1, ...
exactly (resume). ``batch_size`` is global: with ``world_size`` W, rank r gets rows
[r*B/W, (r+1)*B/W) of the very batch (and augmentation) one process would get.
Evaluation is ordered and unaugmented; each rank gets one contiguous shard, so over
any number of processes every image is evaluated exactly once.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import default_collate

from resnetlab.data.batch_ring import BatchRing, RingBatches, unwrap
from resnetlab.data.common import DataWarning, FolderSplit, InMemorySplit, derive_seed, generator
from resnetlab.data.images import DECODE_ERRORS, read_image, read_planned_rgb
from resnetlab.data.preprocess import Preprocessing
from resnetlab.data.transforms import (
    MULTISCALE_SIDES,
    TRAIN_CROPS,
    TrainCrop,
    alternating_flips,
    crop_flip,
    crop_flip_params,
    crop_resize,
    eval_view,
    multiscale_views,
    plan_view,
    ten_crop_view,
)
from resnetlab.data.transforms import (
    TRAIN_SCALE as TRAIN_SCALE,  # re-exported: §3.4's range at 224
)
from resnetlab.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]
_AUG_STREAM = 1  # sub-stream tag for augmentation seeds (the shuffle uses none)
_FLIP_STREAM = 2  # each image's first mirroring, for alternating flips


class _Plan:
    """Which global indices each rank reads in each batch of an epoch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world size {world_size})")
        if shuffle:
            check_global_batch(batch_size, world_size)
        self.n, self.batch, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.rank, self.world, self.seed = rank, world_size, seed
        if shuffle:  # global batches, each sliced by rank
            full, rest = divmod(n, batch_size)
            self.length = full + (1 if rest >= world_size and not drop_last else 0)
        else:  # a contiguous shard per rank (every image once), batches of at most B/W
            self.lo, self.hi = rank * n // world_size, (rank + 1) * n // world_size
            self.per = per = max(1, batch_size // world_size)
            self.length = (
                (self.hi - self.lo) // per if drop_last else math.ceil((self.hi - self.lo) / per)
            )

    def order(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(self.n, generator=generator(self.seed, epoch))
        return torch.arange(self.n)

    def batches(self, epoch: int, start_batch: int) -> Iterator[tuple[int, torch.Tensor, int, int]]:
        """(batch index, indices of the global batch, this rank's row range)."""
        if start_batch < 0:
            raise DataError(f"start_batch must be >= 0, got {start_batch}")
        order = self.order(epoch)
        for b in range(start_batch, self.length):
            if self.shuffle:
                idx = order[b * self.batch : (b + 1) * self.batch]
                m = len(idx)
                yield b, idx, self.rank * m // self.world, (self.rank + 1) * m // self.world
            else:
                per = self.per
                idx = order[self.lo + b * per : min(self.hi, self.lo + (b + 1) * per)]
                yield b, idx, 0, len(idx)


def check_global_batch(batch_size: int, world_size: int) -> None:
    """Training batches are split evenly over the processes (so that W processes see
    exactly the images one process would); say which sizes work when they cannot be."""
    if batch_size % world_size:
        raise DataError(
            f"the global batch size {batch_size} is not divisible by world size {world_size} "
            f"(it is split evenly over the processes); batch sizes that split, near it: "
            f"{_near_multiples(batch_size, world_size)}; world sizes that split {batch_size}: "
            f"{_divisors(batch_size)}"
        )


def _near_multiples(batch: int, world: int) -> str:
    lower = batch // world * world
    return ", ".join(str(b) for b in (lower, lower + world) if b > 0)


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0 and d <= 64)


def _affine(
    pre: Preprocessing, c: int, h: int, w: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) with normalized = uint8 * scale + bias, i.e. (x/255 - mean) / std."""
    if pre.channels != c:
        raise DataError(f"preprocessing expects {pre.channels} channel(s) but the data has {c}")
    scale, bias = pre.affine()
    if bias.shape[0] != c or scale.shape[0] != c:
        raise DataError(
            f"preprocessing mean/std have {bias.shape[0]}/{scale.shape[0]} channels, data has {c}"
        )
    if bias.shape[1:] not in ((1, 1), (h, w)):
        raise DataError(f"per-pixel mean is {tuple(bias.shape[1:])}, images are {h}x{w}")
    return scale.to(device), bias.to(device)


@contextlib.contextmanager
def _cpu_threads(device: torch.device, n: int = 1) -> Iterator[None]:
    """Run a batch's ops on at most ``n`` intra-op threads on the CPU: each op touches
    only ~0.4M elements, where thread hand-offs cost more than they save (6x slower
    on a busy 2-core machine). The caller's setting is restored before each yield."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _PlannedLoader:
    """What both loaders share: the batch plan, its length, and epoch-by-epoch iteration."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        train: bool,
        drop_last: bool | None,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        self.plan = _Plan(
            n,
            batch_size,
            shuffle=train,
            drop_last=train if drop_last is None else drop_last,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        self._epoch = 0

    def __len__(self) -> int:
        return self.plan.length

    def __iter__(self) -> Iterator[Batch]:
        """Successive calls iterate epochs 0, 1, 2, ... (prefer ``epoch(e)``)."""
        e, self._epoch = self._epoch, self._epoch + 1
        return self.epoch(e)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        raise NotImplementedError


class InMemoryLoader(_PlannedLoader):
    """Batches from a uint8 tensor on ``device``: one gather for §4.2 pad/crop/flip,
    one fused multiply-add for normalisation."""

    def __init__(
        self,
        split: InMemorySplit,
        batch_size: int,
        *,
        train: bool,
        preprocessing: Preprocessing,
        device: str | torch.device = "cpu",
        seed: int = 0,
        augment: bool | None = None,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        pad: int = 4,
        flip: bool | Literal["alternate"] = True,
    ) -> None:
        self.split, self.train = split, train
        self.device = torch.device(device)
        self.augment = train if augment is None else augment
        self.pad, self.flip, self.seed, self.channels_last = pad, flip, seed, channels_last
        super().__init__(
            len(split),
            batch_size,
            train=train,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        _, c, h, w = split.images.shape
        self.scale, self.bias = _affine(preprocessing, c, h, w, self.device)
        if flip not in (True, False, "alternate"):
            raise DataError(f"flip must be True, False or 'alternate', got {flip!r}")
        self._first_flips: torch.Tensor | None = None
        if flip == "alternate":
            flip_gen = generator(seed, -1, -1, _FLIP_STREAM)  # apart from every batch's stream
            self._first_flips = torch.rand(len(split), generator=flip_gen) < 0.5

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        images, labels = self.split.on_device(self.device)
        for b, idx, lo, hi in self.plan.batches(epoch, start_batch):
            with _cpu_threads(self.device):
                out, y = self._batch(images, labels, epoch, b, idx, lo, hi)
            yield out, y

    def _batch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        epoch: int,
        b: int,
        idx: torch.Tensor,
        lo: int,
        hi: int,
    ) -> Batch:
        rows = idx[lo:hi]
        if self.train:
            rows_dev = rows.to(self.device, non_blocking=True)
            x = images.index_select(0, rows_dev)
            y = labels.index_select(0, rows_dev)
        else:  # eval order is contiguous: slices, no gather
            first, last = int(rows[0]), int(rows[-1]) + 1
            x, y = images[first:last], labels[first:last]
        if self.augment:
            # drawn for the whole global batch, then sliced: identical across world sizes
            gen = generator(self.seed, epoch, b, _AUG_STREAM)
            # random flips are drawn even when alternating, so the crops stay the same
            dy, dx, fl = crop_flip_params(len(idx), self.pad, bool(self.flip), gen)
            if self._first_flips is not None:
                fl = alternating_flips(self._first_flips, idx, epoch)
            x = crop_flip(x, dy[lo:hi], dx[lo:hi], fl[lo:hi], self.pad)
        out = torch.addcmul(self.bias, x.float(), self.scale) if x.shape[0] else x.float()
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, y


# ---------------------------------------------------------------- streaming


View = Literal["center", "ten_crop", "multi_scale"]
Item = tuple[Any, int, str, "np.ndarray | None"]  # pixels, label (-1: failed), error, lighting


class _FolderDataset(torch.utils.data.Dataset[Any]):
    """Decodes one sample for a key (index, seed, epoch, batch, position); failures come
    back as data (label -1 and a message), never as an exception inside a worker.

    Every view starts from the decoding in ``images`` (the one ``predict`` uses):
    a training crop (``augment`` "scale": §3.4, or "rrc": random-resized crop) planned
    on the full-size image before decoding, so a JPEG is decoded at the smallest DCT
    scale that still covers the crop (by libjpeg-turbo straight to an array, the same
    pixels as Pillow's: ``read_planned_rgb``); ``center`` (shorter side ``resize``, centre
    ``size`` crop), ``ten_crop`` (uint8 [10,3,size,size]) or ``multi_scale`` (a list of
    whole images [3,H,W], shorter side at each of ``sides``). Pixels stay uint8; the
    §3.4 lighting shift travels beside them, added on the device."""

    def __init__(
        self,
        split: FolderSplit,
        augment: bool | TrainCrop,
        size: int,
        resize: int,
        *,
        view: View = "center",
        sides: Sequence[int] = MULTISCALE_SIDES,
    ) -> None:
        self.samples, self.size, self.resize = split.samples, size, resize
        self.augment: TrainCrop | None = _crop_name(augment)
        self.view, self.sides = view, tuple(sides)
        # the largest shorter side a view needs: JPEG draft decoding may go down to it
        self.shorter = max(self.sides) if view == "multi_scale" else resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int, int, int]) -> Item:
        i, seed, epoch, batch, pos = key
        path, label = self.samples[i]
        try:
            arr: np.ndarray | list[np.ndarray]
            if self.augment:
                kind, size = self.augment, self.size
                rng = np.random.default_rng(derive_seed(seed, epoch, batch, pos, _AUG_STREAM))
                im, plan = read_planned_rgb(
                    path,
                    lambda w, h: plan_view(kind, w, h, rng, size),
                    lambda planned: planned.shorter(size),
                )
                light = np.asarray(plan.lighting, np.float32) if kind == "scale" else None
                return crop_resize(im, plan, size), label, "", light
            im = read_image(path, "RGB", shorter=self.shorter)
            if self.view == "ten_crop":
                arr = ten_crop_view(im, self.resize, self.size)
            elif self.view == "multi_scale":
                arr = [t[0].numpy() for t in multiscale_views(im, self.sides, flip=False)]
            else:
                arr = eval_view(im, self.resize, self.size)
            return arr, label, "", None
        except DECODE_ERRORS as e:
            return np.zeros((3, self.size, self.size), np.uint8), -1, f"{path}: {e}", None


def _crop_name(augment: bool | str | None) -> TrainCrop | None:
    """None for no augmentation; True is the paper's §3.4 "scale"."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return "scale"
    if augment in TRAIN_CROPS:
        return augment  # type: ignore[return-value]
    raise DataError(f"unknown training crop {augment!r}: expected one of {', '.join(TRAIN_CROPS)}")


def _collate(
    items: list[Item],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]:
    """uint8 pixels, labels, lighting shifts (or None) and errors of a batch. Inside a
    worker the pixels are stacked straight into shared memory (``default_collate``):
    one copy, a quarter of the bytes a float batch would take."""
    good = [it for it in items if not it[2]]
    errors = [it[2] for it in items if it[2]]
    if not good:
        empty = torch.zeros(0, dtype=torch.uint8)
        return empty, torch.zeros(0, dtype=torch.int64), None, errors
    x = default_collate([torch.from_numpy(it[0]) for it in good])
    y = torch.tensor([it[1] for it in good], dtype=torch.int64)
    shifts = [it[3] for it in good if it[3] is not None]
    light = torch.from_numpy(np.stack(shifts)) if len(shifts) == len(good) else None
    return x, y, light, errors


def _collate_lists(
    items: list[Item],
) -> tuple[list[list[torch.Tensor]], torch.Tensor, None, list[str]]:
    """For views of different sizes: per image, its list of uint8 tensors."""
    good = [it for it in items if not it[2]]
    views = [[torch.from_numpy(a) for a in it[0]] for it in good]
    y = torch.tensor([it[1] for it in good], dtype=torch.int64)
    return views, y, None, [it[2] for it in items if it[2]]


def _stream(
    dataset: torch.utils.data.Dataset[Any],
    keys: list[list[tuple[int, int, int, int, int]]],
    *,
    workers: int,
    collate: Any,
    strict: bool,
    pin_memory: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """Batches of ``dataset`` for ``keys`` through DataLoader workers (``collate`` makes
    tuples whose last element is the batch's error messages); unreadable images are
    skipped with a warning per batch, or refused with ``strict``. Yields the rest."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=keys,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )
    for *batch, errors in loader:
        if errors:
            msg = f"skipped {len(errors)} unreadable image(s) (first: {errors[0]})"
            if strict:
                raise DataError(msg.replace("skipped", "found", 1))
            warnings.warn(msg, DataWarning, stacklevel=3)
        yield tuple(batch)


def _storage_uses(t: torch.Tensor) -> int:
    """How many tensors (Python or C++, e.g. autograd's saved inputs) share ``t``'s memory."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


class _BatchBuffers:
    """Float batches on the CPU, reused once nothing refers to them any more.

    A fresh batch of 64 x 3 x 224 x 224 floats is 38.5 MB: above glibc's largest mmap
    threshold, so each one is mapped anew and page-faulted in, which cost more than
    the normalisation itself (~35 ms against ~15 ms per batch on the 2-core VM). A
    buffer is handed out as a view and taken back only when its storage has no user
    but the pool (the caller dropped the batch and autograd freed its graph)."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = max(1, keep)
        self.pool: list[tuple[torch.Tensor, int]] = []
        self.enabled = hasattr(torch._C, "_storage_Use_Count")

    def take(self, shape: torch.Size, memory_format: torch.memory_format) -> torch.Tensor:
        if self.enabled:
            for buf, idle in self.pool:
                same = buf.shape == shape and buf.is_contiguous(memory_format=memory_format)
                if same and _storage_uses(buf) == idle:
                    return buf[:]
        buf = torch.empty(shape, dtype=torch.float32, memory_format=memory_format)
        if self.enabled:
            self.pool = [*self.pool[len(self.pool) - self.keep + 1 :], (buf, _storage_uses(buf))]
        return buf[:]


class StreamingLoader(_PlannedLoader):
    """Large images through DataLoader workers (§3.4 scale augmentation for training, or
    ``augment="rrc"``, the random-resized crop; shorter side 256 + center 224 crop for
    evaluation, or with ``view="ten_crop"`` the 10-crop test as [N,10,3,224,224]
    batches), with the same plan as ``InMemoryLoader``: the rank slicing plays the role
    of a DistributedSampler. Workers hand over uint8 batches; the float conversion,
    lighting and normalisation are one copy and one fused multiply-add on the device.
    The crop side is ``preprocessing.size``."""

    def __init__(
        self,
        split: FolderSplit,
        batch_size: int,
        *,
        train: bool,
        preprocessing: Preprocessing,
        device: str | torch.device = "cpu",
        seed: int = 0,
        augment: bool | TrainCrop | None = None,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        workers: int | None = None,
        strict: bool = False,
        view: Literal["center", "ten_crop"] = "center",
    ) -> None:
        self.split, self.train, self.seed, self.strict = split, train, seed, strict
        self.device = torch.device(device)
        self.augment = _crop_name(train if augment is None else augment)
        self.channels_last = channels_last
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise DataError(f"workers must be >= 0, got {self.workers}")
        super().__init__(
            len(split),
            batch_size,
            train=train,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        size = preprocessing.size
        self.dataset = _FolderDataset(
            split, self.augment or False, size, preprocessing.resize or size, view=view
        )
        self.scale, self.bias = _affine(preprocessing, 3, size, size, self.device)
        self._buffers = _BatchBuffers()

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        keys = [
            [(int(idx[j]), self.seed, epoch, b, j) for j in range(lo, hi)]
            for b, idx, lo, hi in self.plan.batches(epoch, start_batch)
        ]
        if self.device.type == "cpu" and self.workers > 0 and keys:
            yield from self._ring_epoch(keys)
            return
        batches = _stream(
            self.dataset,
            keys,
            workers=self.workers,
            collate=_collate,
            strict=self.strict,
            pin_memory=self.device.type == "cuda",
        )
        for x, y, light in batches:
            with _cpu_threads(self.device):
                out = self.normalise(x.to(self.device, non_blocking=True), light)
            yield out, y.to(self.device, non_blocking=True)

    def _ring_epoch(self, keys: list[list[tuple[int, int, int, int, int]]]) -> Iterator[Batch]:
        """CPU training and evaluation: the workers write uint8 pixels into fixed shared
        slots (``batch_ring``), made for this epoch's workers only."""
        rows = -(-self.plan.batch // self.plan.world)  # the most rows a rank's batch has
        ring = BatchRing.for_workers(self.workers, (rows, *self._sample_shape()))
        dataset = RingBatches(self.dataset.__getitem__, ring)
        batches = _stream(dataset, keys, workers=self.workers, collate=unwrap, strict=self.strict)
        for slot, n, y, light in batches:
            try:
                with _cpu_threads(self.device):
                    out = self.normalise(ring.pixels[slot, :n], light)
            finally:
                ring.release(slot)
            yield out, y

    def _sample_shape(self) -> tuple[int, ...]:
        size = self.dataset.size
        return (
            (10, 3, size, size)
            if self.dataset.view == "ten_crop" and not self.augment
            else (3, size, size)
        )

    def normalise(self, x: torch.Tensor, light: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [N,...,3,H,W] -> normalised float32: one copy into a (reused, on the CPU)
        float batch and one in-place fused multiply-add, the op ``predict`` uses (so the
        same bits); the lighting shift (§3.4) folds into the per-image bias."""
        if not x.shape[0]:
            return x.float()
        cl = self.channels_last and x.dim() == 4
        fmt = torch.channels_last if cl else torch.contiguous_format
        if self.device.type == "cpu":
            out = self._buffers.take(x.shape, fmt)
        else:
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=fmt)
        out.copy_(x)
        if light is None:
            return torch.addcmul(self.bias, out, self.scale, out=out)
        # (x/255 + shift - mean)/std = x*scale + bias + shift*255*scale
        shift = (light.to(out.device, non_blocking=True) * 255.0)[:, :, None, None] * self.scale
        if self.bias.shape[1:] == (1, 1):  # per-channel mean: per-image bias, one op
            return torch.addcmul(self.bias + shift, out, self.scale, out=out)
        torch.addcmul(self.bias, out, self.scale, out=out)  # per-pixel mean image
        return out.add_(shift)


def default_workers() -> int:
    """One loader worker per core this process may run on (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def multiscale_batches(
    split: FolderSplit,
    batch_size: int,
    sides: Sequence[int] = MULTISCALE_SIDES,
    *,
    workers: int | None = None,
    strict: bool = False,
) -> Iterator[tuple[list[list[torch.Tensor]], torch.Tensor]]:
    """The images of ``split`` in order, ``batch_size`` at a time, each as uint8 whole
    images [3,H,W] with the shorter side at each of ``sides`` (the fully-convolutional
    multi-scale test, §3.4 and Table 4), decoded in DataLoader workers: streamed, never
    the whole split in memory. Labels come with them; unreadable images are skipped
    with a warning (refused with ``strict``)."""
    plan = _Plan(
        len(split), batch_size, shuffle=False, drop_last=False, rank=0, world_size=1, seed=0
    )
    keys = [[(int(i), 0, 0, b, 0) for i in idx] for b, idx, _, _ in plan.batches(0, 0)]
    dataset = _FolderDataset(split, False, min(sides), min(sides), view="multi_scale", sides=sides)
    for views, y, _ in _stream(
        dataset,
        keys,
        workers=default_workers() if workers is None else workers,
        collate=_collate_lists,
        strict=strict,
    ):
        yield views, y


def make_loader(
    split: InMemorySplit | FolderSplit,
    batch_size: int,
    *,
    train: bool,
    preprocessing: Preprocessing,
    device: str | torch.device = "cpu",
    seed: int = 0,
    augment: bool | None = None,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    workers: int | None = None,
    pad: int = 4,
    flip: bool | Literal["alternate"] = True,
    strict: bool = False,
    train_crop: TrainCrop = "scale",
) -> InMemoryLoader | StreamingLoader:
    """The loader for ``split``: tensor ops on the device for in-memory splits, DataLoader
    workers for streamed ones. ``pad``/``flip`` apply to in-memory augmentation (§4.2),
    ``flip="alternate"`` mirrors each image every other epoch instead of at random;
    ``train_crop`` to streamed large images: "scale" (§3.4's shorter side in [256, 480],
    crop, flip, PCA lighting) or "rrc" (random-resized crop and flip); the crop side is
    ``preprocessing.size``."""
    if train_crop not in TRAIN_CROPS:
        raise DataError(
            f"unknown training crop {train_crop!r}: expected one of {', '.join(TRAIN_CROPS)}"
        )
    augmenting = train if augment is None else augment
    common: dict[str, Any] = dict(
        train=train,
        preprocessing=preprocessing,
        device=device,
        seed=seed,
        augment=augment,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        channels_last=channels_last,
    )
    if isinstance(split, InMemorySplit):
        if augmenting and train_crop != "scale":
            raise DataError(
                f"training crop {train_crop!r} is for large images streamed from a class"
                f" folder; these {split.images.shape[-1]}x{split.images.shape[-2]} images are"
                " in memory and augmented by §4.2's pad, crop and flip"
            )
        return InMemoryLoader(split, batch_size, pad=pad, flip=flip, **common)
    if isinstance(split, FolderSplit):
        if augmenting:
            common["augment"] = train_crop
        return StreamingLoader(split, batch_size, workers=workers, strict=strict, **common)
    raise DataError(f"cannot make a loader for {type(split).__name__}")
