"""Class-folder datasets: ``<split>/<class>/<image>``, label = index of the sorted class name.

Small images (at most ``SMALL_MAX`` px, e.g. CIFAR as JPEG) are decoded once, in
parallel, into one uint8 tensor and cached on disk, keyed by the file list with sizes
and mtimes (a changed folder is re-read) and checked on every load against the folder
and a sha256 of its content (a damaged cache is named, deleted and rebuilt). Large
images (ImageNet layout) stay files and are decoded by loader workers. Bad files are skipped with one counted warning, or
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
from PIL import Image
from tqdm import tqdm

from resnetlab.data.common import DataWarning, FolderSplit, InMemorySplit, report_skipped
from resnetlab.data.images import DECODE_ERRORS, open_image, read_image, to_mode
from resnetlab.data.transforms import eval_view
from resnetlab.errors import DataError

SMALL_MAX = 64  # images up to this side live in memory
# v2: checksum and skipped files in the header; v3: decoded by images.read_image (EXIF
# orientation applied, 16-bit always scaled), so older caches may hold other pixels
CACHE_VERSION = "resnetlab-folder-v3"
_DECODE_ERRORS = DECODE_ERRORS


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


def _some(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def scan_split(split_dir: Path, classes: list[str] | None = None) -> ScannedSplit:
    """Every non-hidden file of every class folder, in sorted order; empty classes are
    kept (so labels stay aligned with the sorted folder names) with a warning.

    Without ``classes`` this is a training split, which defines the classes: it must
    have files in at least 2 class folders, or the "classifier" learns one constant
    answer and reports 100%.
    """
    split_dir = Path(split_dir)
    present = list_classes(split_dir)
    training = classes is None
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
    if not files:
        raise DataError(
            f"no images in {split_dir}: its class folder(s) ({_some(present)}) are empty"
            f" (expected {split_dir}/<class>/<image>)"
        )
    if training:
        full = [c for c in classes if c not in empty]
        if len(classes) == 1:
            raise DataError(
                f"{split_dir} has 1 class folder ({classes[0]}); a classifier needs at least 2"
            )
        if len(full) < 2:
            raise DataError(
                f"{split_dir} has files in only 1 of its {len(classes)} class folders"
                f" ({full[0]}; empty: {_some(empty)}); a classifier needs at least 2"
            )
    if empty:
        warnings.warn(
            f"{len(empty)} class folder(s) in {split_dir} have no files (first: {empty[0]}); kept as"
            f" classes{' the model gets no training images for' if training else ''}",
            DataWarning,
            stacklevel=2,
        )
    return ScannedSplit(split_dir, list(classes), files, stats)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as RGB (``images.to_mode``)."""
    return to_mode(im, "RGB")


def probe_size(root: Path, files: list[tuple[str, int]], limit: int = 64) -> tuple[int, int]:
    """Most common (height, width) among a spread sample of files (headers only)."""
    step = max(1, len(files) // limit)
    sizes: Counter[tuple[int, int]] = Counter()
    for rel, _ in files[::step][:limit]:
        try:
            with open_image(root / rel) as im:  # header only: the size
                sizes[(im.height, im.width)] += 1
        except _DECODE_ERRORS:
            continue
    if not sizes:
        raise DataError(f"no readable image among the first files of {root}")
    return sizes.most_common(1)[0][0]


def _decode_small(path: str, size: int) -> tuple[np.ndarray, bool]:
    """uint8 [3,size,size]; second value True when the image had to be resized/cropped."""
    im = read_image(path, "RGB", shorter=size)
    return eval_view(im, size, size), im.size != (size, size)


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


class _BadCache(Exception):
    """The decode cache cannot be trusted; the message says why."""


def content_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 of the image and label bytes: catches a truncated or bit-flipped cache for
    about 0.1 s per 150 MB (SHA-NI), against minutes of JPEG decoding."""
    h = hashlib.sha256()
    for t in (images, labels):
        h.update(t.contiguous().view(-1).numpy().view(np.uint8).data)
    return h.hexdigest()


def _read_cache(
    cache_file: Path, scan: ScannedSplit, size: int
) -> tuple[InMemorySplit, list[str], list[str]]:
    """A cache file checked against the scanned folder (count, shapes, dtypes, the labels
    the files give) and against its own checksum; ``_BadCache`` on any mismatch."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(cache_file), framework="pt") as f:
            meta = f.metadata() or {}
            names = sorted(f.keys())
            if names != ["images", "labels"]:
                raise _BadCache(f"tensors {names} instead of images and labels")
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        if meta.get("version") != CACHE_VERSION:
            raise _BadCache(f"version {meta.get('version')!r} instead of {CACHE_VERSION}")
        problems, resized = json.loads(meta["problems"]), json.loads(meta["resized"])
        skipped = json.loads(meta["skipped"])
        digest = meta["sha256"]
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise _BadCache(f"unreadable, {type(e).__name__}: {first}") from None
    if not (
        isinstance(problems, list)
        and isinstance(resized, list)
        and isinstance(skipped, list)
        and all(isinstance(i, int) for i in skipped)
        and skipped == sorted(set(skipped))
        and (not skipped or 0 <= skipped[0] <= skipped[-1] < len(scan.files))
    ):
        raise _BadCache("malformed metadata")
    keep = np.ones(len(scan.files), dtype=bool)
    keep[skipped] = False
    expected = torch.from_numpy(np.array([lab for _, lab in scan.files], dtype=np.int64)[keep])
    shape = (len(expected), 3, size, size)
    if images.dtype != torch.uint8 or tuple(images.shape) != shape:
        dtype = str(images.dtype).removeprefix("torch.")
        raise _BadCache(f"images {dtype} {tuple(images.shape)} instead of uint8 {shape}")
    if labels.dtype != torch.int64 or not torch.equal(labels, expected):
        raise _BadCache("labels do not match the folder")
    if content_digest(images, labels) != digest:
        raise _BadCache("checksum mismatch")
    return InMemorySplit(images, labels, list(scan.classes)), problems, resized


def _discard(path: Path, seen: os.stat_result) -> None:
    """Delete ``path`` unless another process has replaced it since we read it."""
    try:
        now = path.stat()
        if (now.st_ino, now.st_size, now.st_mtime_ns) == (
            seen.st_ino,
            seen.st_size,
            seen.st_mtime_ns,
        ):
            path.unlink()
    except OSError:
        pass  # gone already, or not ours to delete: the rewrite replaces it


def _write_cache(
    cache_file: Path,
    split: InMemorySplit,
    problems: list[str],
    resized: list[str],
    skipped: list[int],
    root: Path,
) -> None:
    """Written to a ``.part`` file and renamed: a crash or a full disk leaves no cache
    rather than half of one."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    part = cache_file.with_name(cache_file.name + f".{os.getpid()}.part")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {"images": split.images, "labels": split.labels},
            str(part),
            metadata={
                "version": CACHE_VERSION,
                "sha256": content_digest(split.images, split.labels),
                "skipped": json.dumps(skipped),
                "problems": json.dumps(problems),
                "resized": json.dumps(resized),
                "root": str(root),
            },
        )
        os.replace(part, cache_file)
    except (OSError, SafetensorError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        warnings.warn(
            f"cannot write decode cache in {cache_file.parent}: {reason}", DataWarning, stacklevel=3
        )


def load_small_split(
    scan: ScannedSplit, size: int, cache_dir: Path | None, *, strict: bool = False
) -> InMemorySplit:
    """The split as an ``InMemorySplit``, from the decode cache when the folder is unchanged.
    A cache that fails its checks is named in a warning, deleted and rebuilt, so one bad
    file never breaks every later run."""
    cache_file = None
    if cache_dir is not None:
        tag = "".join(
            c if c.isalnum() else "_" for c in f"{scan.root.parent.name}_{scan.root.name}"
        )
        cache_file = Path(cache_dir) / f"{tag}-{cache_key(scan, size)}.safetensors"
        try:
            seen = cache_file.stat()
        except OSError:
            seen = None
        if seen is not None:
            try:
                cached, problems, resized = _read_cache(cache_file, scan, size)
            except _BadCache as e:
                warnings.warn(
                    f"decode cache {cache_file} is corrupt ({e}); deleted it, decoding "
                    f"{scan.root} again",
                    DataWarning,
                    stacklevel=2,
                )
                _discard(cache_file, seen)
            else:
                _report(scan, problems, resized, strict)
                return cached
    paths = [str(scan.root / rel) for rel, _ in scan.files]
    images, ok, problems, resized = decode_files(paths, size, desc=f"decode {scan.root.name}")
    _report(scan, problems, resized, strict)
    labels = np.array([lab for _, lab in scan.files], dtype=np.int64)
    skipped = np.flatnonzero(~ok).tolist()
    if skipped:
        images, labels = images[ok], labels[ok]
    if len(labels) == 0:
        raise DataError(f"no readable images in {scan.root}")
    split = InMemorySplit(torch.from_numpy(images), torch.from_numpy(labels), list(scan.classes))
    if cache_file is not None:
        _write_cache(cache_file, split, problems, resized, skipped, scan.root)
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
