"""CIFAR-10 / CIFAR-100 from the official python archives (§4.2's datasets).

The archives hold pickled dicts; they are read with a restricted unpickler that
admits only the few numpy names needed to rebuild arrays, so a tampered archive
cannot run code. Rows are 3072 bytes, channel-major (R plane, G plane, B plane).
"""

from __future__ import annotations

import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.data.common import DataWarning, InMemorySplit
from resnetlab.data.download import fetch, safe_extract
from resnetlab.errors import DataError

BASE_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Archive:
    filename: str
    md5: str
    folder: str  # top-level folder inside the archive
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
    ),
    "cifar100": Archive(
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
    ),
}

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# (module, name) pairs an official CIFAR pickle may reference: numpy array rebuilding only.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """Allows plain containers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = (
            module.replace("numpy.core", "numpy._core", 1)
            if module.startswith("numpy.core")
            else module
        )
        if (canonical, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(canonical, name)


def safe_unpickle(path: Path) -> Any:
    try:
        data = Path(path).read_bytes()
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing {path}; delete the extracted folder to re-extract") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
    ) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _get(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a dict)")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path} has no '{key}' entry")


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_batches(
    paths: list[Path], label_key: str, num_classes: int, classes: list[str], *, strict: bool
) -> InMemorySplit:
    """Concatenate official batches into one split; out-of-range labels are an error
    (strict) or skipped with one warning, never clipped into a wrong class."""
    images, labels = [], []
    for p in paths:
        d = safe_unpickle(p)
        data = np.asarray(_get(d, "data", p))
        lab = np.asarray(_get(d, label_key, p), dtype=np.int64)
        if (
            data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
            or len(data) != len(lab)
        ):
            raise DataError(
                f"{p}: expected uint8 data [N,3072] and N labels, got {data.dtype} {data.shape} and {len(lab)}"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    x = np.concatenate(images)
    y = np.concatenate(labels)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        msg = f"{int(bad.sum())} labels out of range [0, {num_classes}) in {paths[0].parent} (first: index {where} = {int(y[where])})"
        if strict:
            raise DataError(msg)
        warnings.warn(f"skipped {msg}", DataWarning, stacklevel=2)
        x, y = x[~bad], y[~bad]
    return InMemorySplit(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes)


def load_cifar(
    name: str, data_dir: Path, *, coarse: bool = False, strict: bool = False, download: bool = True
) -> tuple[InMemorySplit, InMemorySplit, list[str]]:
    """(train, test, classes) for ``cifar10`` or ``cifar100``; archive fetched if needed."""
    arc = ARCHIVES[name]
    folder = Path(data_dir) / arc.folder
    needed = [*arc.train, *arc.test, arc.meta]
    if not all((folder / f).is_file() for f in needed):
        archive = fetch(
            BASE_URL + arc.filename, Path(data_dir) / arc.filename, arc.md5, allow_download=download
        )
        safe_extract(archive, Path(data_dir))
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"{archive} does not contain {arc.folder}/{missing[0]}; is it the right archive?"
            )
    meta = safe_unpickle(folder / arc.meta)
    if name == "cifar10":
        label_key, n = "labels", 10
        try:
            classes = _names(_get(meta, "label_names", folder / arc.meta))
        except DataError:
            classes = list(CIFAR10_CLASSES)
    else:
        label_key, n = ("coarse_labels", 20) if coarse else ("fine_labels", 100)
        classes = _names(
            _get(meta, "coarse_label_names" if coarse else "fine_label_names", folder / arc.meta)
        )
    if len(classes) != n:
        raise DataError(f"{folder / arc.meta} lists {len(classes)} classes, expected {n}")
    train = read_batches([folder / f for f in arc.train], label_key, n, classes, strict=strict)
    test = read_batches([folder / f for f in arc.test], label_key, n, classes, strict=strict)
    return train, test, classes
