"""Fixed shared-memory batch slots between the streaming loader's workers and the main
process: the same batches as decoding in-process, unreadable images skipped without
shifting labels, every slot free after an epoch, and a busy slot never overwritten."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import FolderSplit, Preprocessing, StreamingLoader, batch_ring
from resnetlab.data.batch_ring import BatchRing

SIZE = 48


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> FolderSplit:
    root = tmp_path_factory.mktemp("ring")
    samples = []
    for i in range(14):
        rng = np.random.default_rng(i)
        w, h = (160, 120) if i % 3 else (120, 170)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = root / "train" / f"c{i % 3}" / f"{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, quality=90)
        samples.append((str(path), i % 3))
    bad = root / "train" / "c1" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples.insert(5, (str(bad), 1))
    return FolderSplit(samples, ["c0", "c1", "c2"], str(root / "train"))


def _pre() -> Preprocessing:
    return Preprocessing(size=SIZE, resize=SIZE + 8, mean=[0.5] * 3, std=[0.25] * 3)


def _epoch(split: FolderSplit, workers: int, **kw: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = StreamingLoader(split, 4, preprocessing=_pre(), seed=3, workers=workers, **kw)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        batches = [(x.clone(), y.clone()) for x, y in loader.epoch(2)]
    rows = sum(len(y) for _, y in batches)
    skipped = [w for w in seen if "skipped 1 unreadable" in str(w.message)]
    assert len(skipped) == (1 if rows % 4 else 0)  # warned iff the bad file was drawn
    return batches


@pytest.mark.parametrize(
    "kw",
    [
        dict(train=True, augment="rrc"),
        dict(train=False),
        dict(train=False, view="ten_crop"),
    ],
    ids=["train-rrc", "center", "ten-crop"],
)
def test_ring_batches_equal_in_process_batches(photos: FolderSplit, kw: dict[str, Any]) -> None:
    here = _epoch(photos, 0, **kw)
    ring = _epoch(photos, 2, **kw)
    assert [y.tolist() for _, y in here] == [y.tolist() for _, y in ring]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(here, ring))
    # the unreadable file took no row and shifted no label (train: 3 batches of 4 of 15)
    rows = sum(len(y) for _, y in ring)
    assert rows == (len(photos) - 1 if not kw["train"] else rows) and rows >= 11


def test_every_slot_is_free_after_an_epoch(
    photos: FolderSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[BatchRing] = []
    original = BatchRing.for_workers.__func__  # type: ignore[attr-defined]

    def recording(cls: type[BatchRing], workers: int, shape: Any) -> BatchRing:
        ring = original(cls, workers, shape)
        made.append(ring)
        return ring

    monkeypatch.setattr(BatchRing, "for_workers", classmethod(recording))
    _epoch(photos, 2, train=True, augment="scale")
    assert len(made) == 1
    ring = made[0]
    assert ring.slots == 2 * batch_ring.PREFETCH + 1
    assert tuple(ring.pixels.shape[1:]) == (4, 3, SIZE, SIZE)
    assert int(ring.busy.sum()) == 0


def test_a_busy_slot_waits_for_its_release() -> None:
    ring = BatchRing(3, (2, 3, 4, 4))
    assert ring.claim(4) == 1  # batch 4 -> slot 4 % 3
    released_at: list[float] = []

    def release_later() -> None:
        time.sleep(0.2)
        released_at.append(time.perf_counter())
        ring.release(1)

    threading.Thread(target=release_later).start()
    assert ring.claim(7) == 1  # the same slot: waits until the first use is released
    assert released_at and time.perf_counter() >= released_at[0]
    assert ring.claim(5) == 2  # another slot: no wait
