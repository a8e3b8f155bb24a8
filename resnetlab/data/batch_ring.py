"""Fixed shared-memory batch slots between DataLoader workers and the training process.

A DataLoader worker normally stacks each batch into a freshly created shared-memory
segment, which the main process then maps: a new file, a new mapping and a page fault
per 4 KiB page, on both sides, for every batch (64 crops of 224x224 are 9.6 MB). Here
the slots are made once per epoch, before the workers start (they inherit them): a
worker writes batch ``b``'s crops straight into slot ``b % slots`` and hands over only
the slot number, labels and lighting; the main process copies the pixels out into its
float batch and frees the slot.

Why a slot is never overwritten while in use: the DataLoader sends a new batch to its
workers only when the main process takes the next batch in order, and keeps at most
``workers * prefetch_factor`` batches sent and not yet taken. With one slot more than
that, batch ``b + slots`` is sent only after batch ``b + 1`` was taken, which the main
process does after freeing ``b``'s slot. A busy flag per slot checks this anyway: a
worker waits for its slot to be freed instead of writing over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

PREFETCH = 2  # batches each worker prepares ahead: the DataLoader's default prefetch_factor
_WAIT_S = 0.0005  # a worker's poll interval while its slot is still busy (never, in practice)

# the pixels of one sample, its label (-1: unreadable), error message, lighting shift
Item = tuple[Any, int, str, "np.ndarray | None"]


class BatchRing:
    """``slots`` uint8 batches of ``shape`` ([B, ...]) in shared memory, with busy flags."""

    def __init__(self, slots: int, shape: Sequence[int]) -> None:
        self.pixels = torch.empty((slots, *shape), dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros(slots, dtype=torch.int32).share_memory_()
        self.slots = slots

    @classmethod
    def for_workers(cls, workers: int, shape: Sequence[int]) -> BatchRing:
        return cls(workers * PREFETCH + 1, shape)

    def claim(self, batch: int) -> int:
        """Worker side: the slot for global batch number ``batch``, once it is free."""
        slot = batch % self.slots
        flags = self.busy.numpy()
        while flags[slot]:
            time.sleep(_WAIT_S)
        flags[slot] = 1
        return slot

    def release(self, slot: int) -> None:
        """Main-process side: the slot's pixels have been copied out."""
        self.busy[slot] = 0


class RingBatches(torch.utils.data.Dataset[Any]):
    """Wraps a per-sample dataset whose keys carry their batch number at ``key[3]``;
    each DataLoader fetch of one batch's keys decodes the samples and writes their
    pixels into the batch's ring slot. Returns (slot, images written, labels, lighting
    shifts or None, error messages); failed samples take no row."""

    def __init__(self, samples: Callable[[Any], Item], ring: BatchRing) -> None:
        self.samples, self.ring = samples, ring

    def __len__(self) -> int:  # never asked: the DataLoader is driven by batch keys
        return 0

    def __getitem__(self, key: Any) -> Item:
        return self.samples(key)

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        items = [self.samples(k) for k in keys]
        slot = self.ring.claim(int(keys[0][3]))
        dest = self.ring.pixels[slot].numpy()
        n, labels, errors = 0, [], []
        lights: list[np.ndarray] = []
        for pixels, label, error, light in items:
            if error:
                errors.append(error)
                continue
            dest[n] = pixels
            n += 1
            labels.append(label)
            if light is not None:
                lights.append(light)
        light_t = torch.from_numpy(np.stack(lights)) if n and len(lights) == n else None
        # a one-element list: the DataLoader's collate_fn (``unwrap``) takes it apart
        return [(slot, n, torch.tensor(labels, dtype=torch.int64), light_t, errors)]


def unwrap(batch: list[Any]) -> Any:
    """The DataLoader collate_fn for ``RingBatches``: its fetch already made the batch."""
    return batch[0]
