"""Types and helpers shared by every dataset source.

Small-image datasets become one ``InMemorySplit`` (a uint8 tensor that can sit on
the training device, §4.2 augmentation is then a few tensor ops per batch); large
images stay on disk as a ``FolderSplit`` that workers decode one sample at a time.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from resnetlab.errors import DataError


class DataWarning(UserWarning):
    """Something in the data was converted or skipped; the run goes on."""


@dataclass
class InMemorySplit:
    """A whole split as uint8 ``[N,C,H,W]`` plus int64 labels, decoded once."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    _on_device: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError("labels and images disagree in length")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64).contiguous()
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError("a label is outside the class list")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> InMemorySplit:
        return InMemorySplit(self.images[index], self.labels[index], list(self.classes))

    def on_device(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels on ``device``, copied there once per split and device."""
        key = str(device)
        if key not in self._on_device:
            if device.type == "cpu":
                self._on_device[key] = self.images
                self._on_device[key + ":labels"] = self.labels
            else:
                self._on_device[key] = self.images.to(device)
                self._on_device[key + ":labels"] = self.labels.to(device)
        return self._on_device[key], self._on_device[key + ":labels"]


@dataclass
class FolderSplit:
    """A streamed split: file paths and labels, decoded per sample by loader workers."""

    samples: list[tuple[str, int]]
    classes: list[str]
    root: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([lab for _, lab in self.samples], dtype=torch.int64)

    def subset(self, index: torch.Tensor) -> FolderSplit:
        return FolderSplit([self.samples[int(i)] for i in index], list(self.classes), self.root)


Split = InMemorySplit | FolderSplit


def default_data_dir() -> Path:
    """``$RESNETLAB_DATA`` or ``~/.cache/resnetlab``: where archives and decode caches live."""
    env = os.environ.get("RESNETLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnetlab"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (seed, epoch, batch, ...)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def generator(*parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def report_skipped(problems: list[str], *, strict: bool, what: str = "unreadable files") -> None:
    """One summary line for many bad files; ``strict`` turns it into a DataError."""
    if not problems:
        return
    msg = f"skipped {len(problems)} {what} (first: {problems[0]})"
    if strict:
        raise DataError(
            msg.replace("skipped", "found", 1)
            + "; fix or remove them, or run without --strict-data"
        )
    warnings.warn(msg, DataWarning, stacklevel=3)
