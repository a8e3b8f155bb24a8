"""``open_dataset``: one entry point for every source, one ``DatasetBundle`` out.

Named sets (``cifar10``, ``cifar100``, ``cifar100-coarse``, ``fashion-mnist``) come from
their official files; anything else is a class-folder root with ``train/`` and
``val/`` and/or ``test/``. ``val_size`` holds out a stratified, seeded part of the
training set (the paper's 45k/5k split, §4.2, is ``val_size=5000``); on a set too small
for it, a tenth is held out instead and ``DatasetBundle.notes`` says so.

``open_split`` opens one split for evaluation: of a class-folder root it reads only
that split's folder (train/ only for its class folder names, or entirely when the
split is a hold-out of it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from resnetlab.data.common import (
    DataWarning,
    FolderSplit,
    InMemorySplit,
    default_data_dir,
    generator,
)
from resnetlab.data.folder import (
    SMALL_MAX,
    folder_split,
    list_classes,
    load_small_split,
    probe_size,
    scan_split,
)
from resnetlab.data.preprocess import MAX_SIZE, Preprocessing
from resnetlab.errors import DataError

NAMED = ("cifar10", "cifar100", "cifar100-coarse", "fashion-mnist")
NAMED_ALIASES = (*NAMED, "fashion_mnist", "fmnist")  # what open_dataset reads from archives
LARGE_SIZE, LARGE_RESIZE = 224, 256  # §3.4: 224 crops; single-crop test at shorter side 256
STATS_SAMPLES = 2000  # streamed images averaged for the mean of a large-image set
VAL_DIVISOR = 10  # at most a tenth of the training images held out: the paper's 5k of 50k


@dataclass
class DatasetBundle:
    name: str
    classes: list[str]
    in_channels: int
    image_size: int
    in_memory: bool
    train: InMemorySplit | FolderSplit
    val: InMemorySplit | FolderSplit | None = None
    test: InMemorySplit | FolderSplit | None = None
    # images held out of the training set for ``val`` (0: none, or the set's own val/)
    val_held_out: int = 0
    # human-readable lines about choices made for the user (e.g. a smaller hold-out)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preprocessing(self, normalize: Literal["channel", "pixel"] = "pixel") -> Preprocessing:
        """Statistics of the training split: ``pixel`` = the paper's per-pixel mean
        subtraction (std 1); ``channel`` = per-channel mean and std."""
        if normalize not in ("channel", "pixel"):
            raise DataError(f"normalize must be 'channel' or 'pixel', not {normalize!r}")
        mode: Literal["RGB", "L"] = "L" if self.in_channels == 1 else "RGB"
        resize = None if self.in_memory else eval_resize(self.image_size)
        s1, s2, count = _moments(self.train, self.image_size)
        mean_img = s1 / count  # [C,H,W] on the [0,1] scale
        if normalize == "pixel":
            mean = mean_img.tolist()
            std = [1.0] * self.in_channels
        else:
            n_px = count * mean_img.shape[1] * mean_img.shape[2]
            m = s1.sum((1, 2)) / n_px
            var = s2 / n_px - m**2
            mean, std = m.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()
        return Preprocessing(mode=mode, size=self.image_size, resize=resize, mean=mean, std=std)


def eval_resize(size: int) -> int:
    """The shorter side before the single centre crop: 256 for 224 crops (§3.4), in the
    same proportion for other crop sides."""
    return round(size * LARGE_RESIZE / LARGE_SIZE)


def _moments(
    split: InMemorySplit | FolderSplit, size: int = LARGE_SIZE
) -> tuple[np.ndarray, np.ndarray, int]:
    """(sum of images [C,H,W], sum of squares per channel [C], count), [0,1] scale; a
    streamed split is sampled through its centre view at crop side ``size``."""
    if isinstance(split, InMemorySplit):
        s1 = torch.zeros(split.images.shape[1:], dtype=torch.float64)
        s2 = torch.zeros(split.images.shape[1], dtype=torch.float64)
        for chunk in split.images.split(8192):
            x = chunk.to(torch.float64) / 255.0
            s1 += x.sum(0)
            s2 += (x * x).sum((0, 2, 3))
        return s1.numpy(), s2.numpy(), len(split)
    from resnetlab.data.loader import _collate, _FolderDataset

    ds = _FolderDataset(split, False, size, eval_resize(size))
    pick = torch.randperm(len(split), generator=generator(0))[:STATS_SAMPLES].tolist()
    x, _, _, _errors = _collate([ds[(i, 0, 0, 0, 0)] for i in pick])
    if not len(x):
        raise DataError(f"no readable images in {split.root}")
    xf = x.to(torch.float64) / 255.0
    return xf.sum(0).numpy(), (xf * xf).sum((0, 2, 3)).numpy(), len(x)


def fit_val_size(n: int, val_size: int, where: str = "the dataset") -> tuple[int, str | None]:
    """(images to hold out of ``n``, note or None). ``val_size`` exactly when it is at
    most a tenth of the training set (the paper's 45k/5k stays as is); more would leave
    too little to train on (a recipe's default 5000 against a folder of 36 images), so a
    tenth is held out, at least 1, and the note says so. A pure function of ``n`` and
    ``val_size``: ``eval --split val`` must rebuild the split the trainer used."""
    if val_size <= 0:
        return 0, None
    if n < 2:
        raise DataError(
            f"cannot hold out --val-size {val_size} of {where}: its training set has {n}"
            " image(s); set --val-size 0"
        )
    cap = max(1, n // VAL_DIVISOR)
    if val_size <= cap:
        return val_size, None
    choose = "set --val-size 0 for none" if cap == 1 else f"set --val-size 1 to {cap}, 0 for none"
    return cap, (
        f"holding out {cap} of {n} training images for validation (a tenth, at least 1:"
        f" --val-size {val_size} would leave too few to train on; {choose})"
    )


def holdout(
    split: InMemorySplit | FolderSplit, val_size: int, seed: int
) -> tuple[InMemorySplit | FolderSplit, InMemorySplit | FolderSplit]:
    """(train, val): exactly ``val_size`` images taken per class in proportion to its size
    (largest remainders), chosen at random by ``seed``; both keep the original order.
    ``open_dataset`` first caps ``val_size`` with ``fit_val_size``."""
    labels = split.labels
    n = len(labels)
    if not 0 < val_size < n:
        raise DataError(
            f"validation size {val_size} (--val-size) must be between 1 and {n - 1}:"
            f" the training set has {n} images"
        )
    counts = torch.bincount(labels, minlength=len(split.classes)).double()
    quota = counts * val_size / n
    take = quota.floor().long()
    short = val_size - int(take.sum())
    if short:
        take[torch.argsort(quota - quota.floor(), descending=True, stable=True)[:short]] += 1
    perm = torch.randperm(n, generator=generator(seed, 0x5A1))
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # random order within each class
    starts = torch.cumsum(counts.long(), 0) - counts.long()
    val_idx = torch.cat([by_class[int(s) : int(s) + int(k)] for s, k in zip(starts, take)])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[val_idx] = True
    return split.subset(torch.nonzero(~mask).flatten()), split.subset(torch.nonzero(mask).flatten())


def open_dataset(
    spec: str | Path,
    data_dir: str | Path | None = None,
    val_size: int = 0,
    seed: int = 0,
    strict: bool = False,
    download: bool = True,
    image_size: int | None = None,
) -> DatasetBundle:
    """Open a named dataset or a class-folder root; see the module docstring.
    ``image_size``: the crop side for large images (default 224, §3.4; evaluation then
    resizes the shorter side to 256/224 of it); small in-memory sets keep their own."""
    if image_size is not None and not 1 <= image_size <= MAX_SIZE:
        raise DataError(f"image size must be in 1..{MAX_SIZE}, got {image_size}")
    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    key = str(spec).strip().lower()
    test: InMemorySplit | FolderSplit | None
    val: InMemorySplit | FolderSplit | None = None
    train: InMemorySplit | FolderSplit
    if key in ("cifar10", "cifar100", "cifar100-coarse"):
        from resnetlab.data.cifar import load_cifar

        base = "cifar10" if key == "cifar10" else "cifar100"
        train, test, classes = load_cifar(
            base, ddir, coarse=key.endswith("coarse"), strict=strict, download=download
        )
        name, channels, size, in_memory = key, 3, 32, True
        _check_native(image_size, size, key)
    elif key in ("fashion-mnist", "fashion_mnist", "fmnist"):
        from resnetlab.data.fmnist import load_fashion_mnist

        train, test, classes = load_fashion_mnist(ddir, download=download, strict=strict)
        name, channels, size, in_memory = "fashion-mnist", 1, 28, True
        _check_native(image_size, size, "fashion-mnist")
    else:
        root = Path(spec).expanduser()
        if not root.exists():
            raise DataError(
                f"unknown dataset '{spec}': not one of {', '.join(NAMED)} and no such folder"
            )
        if not (root / "train").is_dir():
            raise DataError(
                f"split folder not found: {root / 'train'} (expected train/ and val/ or test/)"
            )
        scans = {
            s: scan_split(root / s) if s == "train" else None for s in ("train", "val", "test")
        }
        classes = scans["train"].classes  # type: ignore[union-attr]
        for s in ("val", "test"):
            if (root / s).is_dir():
                scans[s] = scan_split(root / s, classes)
        tr = scans["train"]
        assert tr is not None
        h, w = probe_size(tr.root, tr.files)
        in_memory = max(h, w) <= SMALL_MAX
        name, channels = root.resolve().name, 3
        splits: dict[str, InMemorySplit | FolderSplit | None] = {}
        if in_memory:
            size = min(h, w)
            _check_native(image_size, size, str(spec))
            for s, sc in scans.items():
                splits[s] = (
                    load_small_split(sc, size, ddir / "cache", strict=strict) if sc else None
                )
        else:
            size = image_size or LARGE_SIZE
            for s, sc in scans.items():
                splits[s] = folder_split(sc, strict=strict) if sc else None
        train, val, test = splits["train"], splits["val"], splits["test"]  # type: ignore[assignment]
        assert train is not None
        present = sorted(set(train.labels.tolist()))
        if len(present) < 2:  # every file of the other classes failed to decode
            raise DataError(
                f"{tr.root} has readable images in only 1 class folder"
                f" ({classes[present[0]]}); a classifier needs at least 2"
            )
    held_out, notes = 0, list[str]()
    if val_size:
        if val is not None:
            warnings.warn(
                f"{spec} has its own val/ split; ignoring val_size={val_size}",
                DataWarning,
                stacklevel=2,
            )
        else:
            held_out, note = fit_val_size(len(train), val_size, str(spec))
            notes += [note] if note else []
            train, val = holdout(train, held_out, seed)
    return DatasetBundle(
        name, list(classes), channels, size, in_memory, train, val, test, held_out, notes
    )


def _check_native(image_size: int | None, native: int, name: str) -> None:
    """Small images are decoded once at their own size; another crop side is refused
    rather than ignored."""
    if image_size is not None and image_size != native:
        raise DataError(
            f"image size {image_size} is for large-image folders: {name} is {native}x{native},"
            " kept in memory at that size"
        )


@dataclass
class OpenedSplit:
    """One split of a dataset, for evaluation (``open_split``)."""

    name: str
    classes: list[str]
    in_channels: int
    in_memory: bool
    split: InMemorySplit | FolderSplit


def _needs_train(root: Path, split: str, val_size: int) -> bool:
    """A val split held out of train/ (or the train split it was taken from) is only
    defined by opening train/."""
    return split in ("train", "val") and val_size > 0 and not (root / "val").is_dir()


def open_split(
    spec: str | Path,
    split: Literal["train", "val", "test"],
    data_dir: str | Path | None = None,
    *,
    val_size: int = 0,
    seed: int = 0,
    strict: bool = False,
    download: bool = True,
    classes: list[str] | None = None,
    size: int | None = None,
    resize: int | None = None,
    stream: bool = False,
    check: Callable[[list[str], int], None] | None = None,
) -> OpenedSplit:
    """One split, decoding nothing else: ``eval`` takes its preprocessing from the model,
    so the training images (possibly hundreds of thousands) are not needed.

    For a class-folder root only ``<root>/<split>/`` is scanned and read; labels are
    indices into train/'s class folder names (a listing, no file opened), or, without a
    train/, into ``classes`` (the model's) when the split's folders are among them,
    else into the split's own folders. Small images are decoded in memory at ``size``
    (default: their own) when the view needs no other resize (``resize`` None or
    equal), else streamed; ``stream`` always streams. Named sets, and a ``val`` split
    held out of train/ (``val_size``, with the train split it leaves), come from
    ``open_dataset`` as in training. ``check(classes, channels)`` runs before any image
    of a folder is decoded, to refuse a dataset that does not fit the model early.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be train, val or test, not {split!r}")
    root = Path(spec).expanduser()
    named = str(spec).strip().lower() in NAMED_ALIASES
    hold_out = not named and root.is_dir() and _needs_train(root, split, val_size)
    if hold_out and not (root / "train").is_dir():
        raise DataError(
            f"{spec} has no {split} split: {root / split} not found"
            + ("" if split == "train" else f", nor {root / 'train'} to hold one out of")
        )
    if named or hold_out:
        bundle = open_dataset(spec, data_dir, val_size, seed, strict=strict, download=download)
        picked = getattr(bundle, split)
        if picked is None:
            raise DataError(f"{spec} has no {split} split")
        if check is not None:
            check(bundle.classes, bundle.in_channels)
        return OpenedSplit(
            bundle.name, bundle.classes, bundle.in_channels, bundle.in_memory, picked
        )
    if not root.exists():
        raise DataError(
            f"unknown dataset '{spec}': not one of {', '.join(NAMED)} and no such folder"
        )
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{spec} has no {split} split: {split_dir} not found")
    if (root / "train").is_dir():
        names = list_classes(root / "train")
    else:
        own = list_classes(split_dir)
        names = list(classes) if classes and set(own) <= set(classes) else own
    if check is not None:
        check(names, 3)
    scan = scan_split(split_dir, names)
    h, w = probe_size(scan.root, scan.files)
    size = size or min(h, w)
    in_memory = max(h, w) <= SMALL_MAX and not stream and resize in (None, size)
    data: InMemorySplit | FolderSplit
    if in_memory:
        ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        data = load_small_split(scan, size, ddir / "cache", strict=strict)
    else:
        data = folder_split(scan, strict=strict)
    return OpenedSplit(root.resolve().name, names, 3, in_memory, data)
