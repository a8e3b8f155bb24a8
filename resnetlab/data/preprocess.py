"""How raw images become model inputs, recorded with every checkpoint.

One ``Preprocessing`` travels from the dataset into the run's config, the
checkpoint and exported weights, so that ``eval`` and ``predict`` feed a model
exactly what it was trained on. ``mean`` is either per channel (C floats) or a
per-pixel mean image (C x H x W nested lists, the paper's "per-pixel mean
subtracted", §3.4/§4.2); ``std`` is per channel (1.0 for plain mean subtraction).
All statistics are on the [0, 1] scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from resnetlab.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    mode: Literal["RGB", "L"] = "RGB"
    size: int = 32  # model input side
    resize: int | None = None  # shorter side before the center crop (None: resize to size)
    mean: Any = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(**d)

    def mean_tensor(self) -> torch.Tensor:
        """Mean as [C,1,1] (per channel) or [C,H,W] (per pixel)."""
        m = torch.tensor(self.mean, dtype=torch.float32)
        return m.view(-1, 1, 1) if m.dim() == 1 else m

    def std_tensor(self) -> torch.Tensor:
        return torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [N,C,H,W] (or [C,H,W]) -> normalized float32, on the batch's device."""
        x = batch_uint8.float().div_(255.0)
        mean = self.mean_tensor().to(x.device)
        std = self.std_tensor().to(x.device)
        return (x - mean) / std

    def load(self, path: str | Path) -> torch.Tensor:
        """Read one image file into uint8 [C,size,size]: convert mode, resize, center crop."""
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert(self.mode), dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(f"image not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return self.resize_and_crop(t)

    def resize_and_crop(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 [C,H,W] -> uint8 [C,size,size]: shorter side to ``resize`` (or size), center crop."""
        short = self.resize or self.size
        h, w = img.shape[-2:]
        if (h, w) != (self.size, self.size):
            scale = short / min(h, w)
            nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
            if (nh, nw) != (h, w):
                img = F.interpolate(
                    img.unsqueeze(0).float(), size=(nh, nw), mode="bilinear", antialias=True
                )[0]
                img = img.round_().clamp_(0, 255).to(torch.uint8)
            top, left = (nh - self.size) // 2, (nw - self.size) // 2
            img = img[:, top : top + self.size, left : left + self.size]
        return img.contiguous()
