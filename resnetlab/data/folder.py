"""Class-folder datasets: ``<split>/<class>/<image>``, label = index of the sorted class name.

Small images (at most ``SMALL_MAX`` px, e.g. CIFAR as JPEG) are decoded once, in
parallel, into one uint8 tensor and cached on disk, keyed by the file list with sizes
and mtimes (a changed folder is re-read). Large images (ImageNet layout) stay files
and are decoded by loader workers. Bad files are skipped with one counted warning, or
refused with ``strict``; labels always follow the file they came from.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from resnetlab.data.common import DataWarning, FolderSplit, InMemorySplit, report_skipped
from resnetlab.errors import DataError

SMALL_MAX = 64  # images up to this side live in memory
CACHE_VERSION = "resnetlab-folder-v1"
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


@dataclass
class ScannedSplit:
    root: Path
    classes: list[str]
    files: list[tuple[str, int]]  # (path relative to root, label)
    stats: list[tuple[int, int]]  # (size, mtime_ns) per file


def list_classes(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(f"split folder not found: {split_dir}")
    classes = sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise DataError(f"no class folders in {split_dir} (expected {split_dir}/<class>/<image>)")
    return classes


def scan_split(split_dir: Path, classes: list[str] | None = None) -> ScannedSplit:
    """Every non-hidden file of every class folder, in sorted order; empty classes are
    kept (so labels stay aligned with the sorted folder names) with a warning."""
    split_dir = Path(split_dir)
    present = list_classes(split_dir)
    if classes is None:
        classes = present
    else:
        extra = sorted(set(present) - set(classes))
        if extra:
            raise DataError(
                f"{split_dir} has class folder '{extra[0]}' that the training split lacks"
            )
    files: list[tuple[str, int]] = []
    stats: list[tuple[int, int]] = []
    empty = []
    for label, cls in enumerate(classes):
        cdir = split_dir / cls
        if not cdir.is_dir():
            empty.append(cls)
            continue
        entries = sorted(
            (e for e in os.scandir(cdir) if not e.name.startswith(".") and e.is_file()),
            key=lambda e: e.name,
        )
        if not entries:
            empty.append(cls)
        for e in entries:
            st = e.stat()
            files.append((f"{cls}/{e.name}", label))
            stats.append((st.st_size, st.st_mtime_ns))
    if empty:
        warnings.warn(
            f"{len(empty)} class folder(s) in {split_dir} have no files (first: {empty[0]}); kept as classes",
            DataWarning,
            stacklevel=2,
        )
    if not files:
        raise DataError(f"no images in {split_dir}")
    return ScannedSplit(split_dir, list(classes), files, stats)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as RGB; 16/32-bit greyscale scaled down to 8 bits first."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / (65535.0 / 255.0)
        im = Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")


def probe_size(root: Path, files: list[tuple[str, int]], limit: int = 64) -> tuple[int, int]:
    """Most common (height, width) among a spread sample of files (headers only)."""
    step = max(1, len(files) // limit)
    sizes: Counter[tuple[int, int]] = Counter()
    for rel, _ in files[::step][:limit]:
        try:
            with Image.open(root / rel) as im:
                sizes[(im.height, im.width)] += 1
        except _DECODE_ERRORS:
            continue
    if not sizes:
        raise DataError(f"no readable image among the first files of {root}")
    return sizes.most_common(1)[0][0]


_FORMAT_HINT = {".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".png": ("PNG",)}


def open_image(path: str) -> Image.Image:
    """``Image.open``, trying the format the extension names first (format sniffing is a
    large share of the cost of a 32x32 JPEG), then every format Pillow knows."""
    hint = _FORMAT_HINT.get(os.path.splitext(path)[1].lower())
    if hint:
        try:
            return Image.open(path, formats=hint)
        except UnidentifiedImageError:
            pass
    return Image.open(path)


def _decode_small(path: str, size: int) -> tuple[np.ndarray, bool]:
    """uint8 [3,size,size]; second value True when the image had to be resized/cropped."""
    with open_image(path) as src:
        im = to_rgb(src)
        im.load()
        resized = im.size != (size, size)
        if resized:
            scale = size / min(im.size)
            w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
            im = im.resize((w, h), Image.Resampling.BILINEAR)
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1), resized


def _decode_chunk(
    args: tuple[list[str], int],
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    paths, size = args
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    problems, resized = [], []
    for i, p in enumerate(paths):
        try:
            out[i], r = _decode_small(p, size)
            ok[i] = True
            if r:
                resized.append(p)
        except _DECODE_ERRORS as e:
            problems.append(f"{p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return out, ok, problems, resized


def decode_files(
    paths: list[str], size: int, *, workers: int | None = None, desc: str = "decode"
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode many small images, in worker processes when there are many."""
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    chunk = 1000
    chunks = [(paths[i : i + chunk], size) for i in range(0, len(paths), chunk)]
    results: list[tuple[np.ndarray, np.ndarray, list[str], list[str]]] = []
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=None) as bar:
        if workers > 1 and len(chunks) > 1:
            ctx = (
                multiprocessing.get_context("fork")
                if "fork" in multiprocessing.get_all_start_methods()
                else None
            )
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for res in pool.map(_decode_chunk, chunks):
                    results.append(res)
                    bar.update(len(res[1]))
        else:
            for c in chunks:
                results.append(_decode_chunk(c))
                bar.update(len(c[0]))
    if not results:
        return np.zeros((0, 3, size, size), np.uint8), np.zeros(0, bool), [], []
    return (
        np.concatenate([r[0] for r in results]),
        np.concatenate([r[1] for r in results]),
        [p for r in results for p in r[2]],
        [p for r in results for p in r[3]],
    )


def cache_key(scan: ScannedSplit, size: int) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\n{size}\n{json.dumps(scan.classes)}\n".encode())
    for (rel, label), (nbytes, mtime) in zip(scan.files, scan.stats):
        h.update(f"{rel}\0{label}\0{nbytes}\0{mtime}\n".encode())
    return h.hexdigest()[:24]


def load_small_split(
    scan: ScannedSplit, size: int, cache_dir: Path | None, *, strict: bool = False
) -> InMemorySplit:
    """The split as an ``InMemorySplit``, from the decode cache when the folder is unchanged."""
    from safetensors.torch import load_file, save_file

    cache_file = None
    if cache_dir is not None:
        tag = "".join(
            c if c.isalnum() else "_" for c in f"{scan.root.parent.name}_{scan.root.name}"
        )
        cache_file = Path(cache_dir) / f"{tag}-{cache_key(scan, size)}.safetensors"
        if cache_file.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(cache_file), framework="pt") as f:
                    meta = f.metadata() or {}
                tensors = load_file(str(cache_file))
                problems, resized = json.loads(meta["problems"]), json.loads(meta["resized"])
                _report(scan, problems, resized, strict)
                return InMemorySplit(tensors["images"], tensors["labels"], list(scan.classes))
            except (OSError, KeyError, ValueError, RuntimeError):
                warnings.warn(
                    f"ignoring unreadable decode cache {cache_file}", DataWarning, stacklevel=2
                )
    paths = [str(scan.root / rel) for rel, _ in scan.files]
    images, ok, problems, resized = decode_files(paths, size, desc=f"decode {scan.root.name}")
    _report(scan, problems, resized, strict)
    labels = np.array([lab for _, lab in scan.files], dtype=np.int64)
    if not ok.all():
        images, labels = images[ok], labels[ok]
    if len(labels) == 0:
        raise DataError(f"no readable images in {scan.root}")
    split = InMemorySplit(torch.from_numpy(images), torch.from_numpy(labels), list(scan.classes))
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            part = cache_file.with_name(cache_file.name + f".{os.getpid()}.part")
            save_file(
                {"images": split.images, "labels": split.labels},
                str(part),
                metadata={
                    "problems": json.dumps(problems),
                    "resized": json.dumps(resized),
                    "root": str(scan.root),
                },
            )
            os.replace(part, cache_file)
        except OSError as e:
            warnings.warn(
                f"cannot write decode cache in {cache_dir}: {e.strerror}", DataWarning, stacklevel=2
            )
    return split


def _report(scan: ScannedSplit, problems: list[str], resized: list[str], strict: bool) -> None:
    report_skipped(problems, strict=strict)
    if resized:
        warnings.warn(
            f"resized and center-cropped {len(resized)} image(s) of the wrong size in {scan.root} (first: {resized[0]})",
            DataWarning,
            stacklevel=3,
        )


def folder_split(scan: ScannedSplit, *, strict: bool = False) -> FolderSplit:
    """A streamed split: files whose extension Pillow does not know are skipped with a
    warning now; undecodable images are skipped (or refused) when a worker reads them."""
    known = {ext.lower() for ext in Image.registered_extensions()}
    samples, problems = [], []
    for rel, label in scan.files:
        if Path(rel).suffix.lower() in known:
            samples.append((str(scan.root / rel), label))
        else:
            problems.append(f"{scan.root / rel}: not an image file extension")
    report_skipped(problems, strict=strict, what="non-image files")
    if not samples:
        raise DataError(f"no images in {scan.root}")
    return FolderSplit(samples, list(scan.classes), str(scan.root))
