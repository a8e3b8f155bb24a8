"""Fixture writers for the data tests: every dataset here is written by the test itself."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """$RESNETLAB_SHARED, ../shared beside the checkout, or /work/shared; None if absent."""
    for c in (os.environ.get("RESNETLAB_SHARED"), REPO.parent / "shared", "/work/shared"):
        if c and (Path(c) / "README.md").exists():
            return Path(c)
    return None


def class_colour(label: int) -> np.ndarray:
    """A distinct constant colour per class, so a label can be read back from the pixels."""
    return np.array(
        [(label * 37) % 256, (label * 91 + 40) % 256, (label * 53 + 200) % 256], np.uint8
    )


def write_folder(
    root: Path,
    classes: list[str],
    per_class: int = 4,
    size: int = 8,
    splits: tuple[str, ...] = ("train", "test"),
    ext: str = "png",
) -> Path:
    """``root/<split>/<class>/NNN.<ext>``: images of the class colour (lossless PNG by default)."""
    for split in splits:
        for cls in classes:
            label = sorted(classes).index(cls)  # the label the loader must assign
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = np.broadcast_to(class_colour(label), (size, size, 3)).copy()
                arr[0, 0] = i  # distinct files
                Image.fromarray(arr).save(d / f"{i:03d}.{ext}")
    return root


def label_of_pixels(img_chw: np.ndarray) -> int:
    """Inverse of ``class_colour`` (center pixel)."""
    h, w = img_chw.shape[1:]
    px = img_chw[:, h // 2, w // 2].astype(int)
    for label in range(256):
        if np.abs(px - class_colour(label).astype(int)).max() <= 3:
            return label
    raise AssertionError(f"no class has colour {px}")


def cifar_rows(labels: list[int]) -> np.ndarray:
    """N x 3072 uint8 rows, channel-major, colour-coded by label (official layout)."""
    rows = np.zeros((len(labels), 3, 32, 32), np.uint8)
    for i, lab in enumerate(labels):
        rows[i] = class_colour(lab % 256)[:, None, None]
    return rows.reshape(len(labels), 3072)


def write_cifar_archive(
    path: Path,
    kind: str,
    train_labels: list[int],
    test_labels: list[int],
    *,
    coarse: list[int] | None = None,
) -> Path:
    """A miniature official-format archive: pickled dicts of bytes keys (as written by
    Python 2), data N x 3072 uint8, labels as lists."""
    files: dict[str, object] = {}
    if kind == "cifar10":
        folder = "cifar-10-batches-py"
        per = max(1, len(train_labels) // 5)
        for i in range(5):
            labs = train_labels[i * per : (i + 1) * per] if i < 4 else train_labels[4 * per :]
            files[f"data_batch_{i + 1}"] = {
                b"batch_label": b"training batch",
                b"labels": labs,
                b"data": cifar_rows(labs),
            }
        files["test_batch"] = {b"labels": test_labels, b"data": cifar_rows(test_labels)}
        names = [
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
        files["batches.meta"] = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    else:
        folder = "cifar-100-python"
        co = coarse or [lab // 5 for lab in train_labels + test_labels]
        nt = len(train_labels)
        files["train"] = {
            b"fine_labels": train_labels,
            b"coarse_labels": co[:nt],
            b"data": cifar_rows(train_labels),
        }
        files["test"] = {
            b"fine_labels": test_labels,
            b"coarse_labels": co[nt:],
            b"data": cifar_rows(test_labels),
        }
        files["meta"] = {
            b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in files.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_idx(path: Path, arr: np.ndarray) -> Path:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
    return path
