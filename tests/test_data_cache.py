"""The class-folder decode cache: a corrupt cache file is named, deleted and rebuilt.

Before the cache was verified, one damaged file under ``<data dir>/cache/`` made every
later run on that dataset end in a traceback (or train on wrong pixels); each case here
must instead end in one warning naming the file and data equal to a fresh decode.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from data_fixtures import write_folder
from safetensors import safe_open
from safetensors.torch import save_file

from resnetlab.data import DataWarning, InMemorySplit, open_dataset
from resnetlab.data import folder as folder_mod


def _train_cache(data_dir: Path) -> Path:
    (path,) = (data_dir / "cache").glob("*train-*.safetensors")
    return path


def _flip_in(name: str) -> Callable[[Path], None]:
    """Flip one bit in the middle of tensor ``name``'s bytes (the header stays valid)."""

    def flip(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        n = int.from_bytes(raw[:8], "little")
        begin, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
        raw[8 + n + (begin + end) // 2] ^= 0x01
        path.write_bytes(bytes(raw))

    return flip


def _rewrite(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    """A well-formed safetensors file, same metadata, with the images changed."""

    def rewrite(path: Path) -> None:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k).clone() for k in ("images", "labels")}
        tensors["images"] = change(tensors["images"]).contiguous()
        save_file(tensors, str(path), metadata=meta)

    return rewrite


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "truncated by 1 byte": lambda p: p.write_bytes(p.read_bytes()[:-1]),
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(os.urandom(p.stat().st_size)),
    "flipped image bit": _flip_in("images"),
    "flipped label bit": _flip_in("labels"),
    "wrong shape": _rewrite(lambda x: x[:-1]),
    "wrong dtype": _rewrite(lambda x: x.float()),
    "wrong image size": _rewrite(lambda x: x[:, :, :4, :4]),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_cache_is_named_deleted_and_rebuilt(tmp_path: Path, kind: str) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b", "c"], per_class=4)
    fresh = open_dataset(root, data_dir=tmp_path / "fresh")
    assert isinstance(fresh.train, InMemorySplit)
    data_dir = tmp_path / "data"
    open_dataset(root, data_dir=data_dir)
    cache = _train_cache(data_dir)
    CORRUPTIONS[kind](cache)
    with pytest.warns(DataWarning, match=re.escape(f"decode cache {cache} is corrupt")) as rec:
        b = open_dataset(root, data_dir=data_dir)
    assert sum("decode cache" in str(w.message) for w in rec) == 1
    assert isinstance(b.train, InMemorySplit)
    assert torch.equal(b.train.images, fresh.train.images)
    assert torch.equal(b.train.labels, fresh.train.labels)
    # rewritten: the next run reads it back without a word, nothing half-written beside it
    assert _train_cache(data_dir) == cache
    assert not list((data_dir / "cache").glob("*.part"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        again = open_dataset(root, data_dir=data_dir)
    assert torch.equal(again.train.images, fresh.train.images)  # type: ignore[union-attr]


def test_valid_cache_with_skipped_files_is_used_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=3)
    (root / "train" / "a" / "001b.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(DataWarning, match="skipped 1 unreadable"):
        first = open_dataset(root, data_dir=tmp_path / "c")

    def no_decode(*args: object, **kw: object) -> None:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode_files", no_decode)
    with pytest.warns(DataWarning, match="skipped 1 unreadable") as rec:
        again = open_dataset(root, data_dir=tmp_path / "c")
    assert not any("decode cache" in str(w.message) for w in rec)
    assert torch.equal(again.train.labels, first.train.labels)
    assert again.train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_failed_cache_write_leaves_no_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=2)

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_mod.os, "replace", full_disk)
    with pytest.warns(DataWarning, match="cannot write decode cache .*No space left"):
        b = open_dataset(root, data_dir=tmp_path / "c")
    assert len(b.train) == 4
    assert not [p.name for p in (tmp_path / "c" / "cache").iterdir()]
