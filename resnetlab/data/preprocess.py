"""How raw images become model inputs, recorded with every checkpoint.

One ``Preprocessing`` travels from the dataset into the run's config, the
checkpoint and exported weights, so that ``eval`` and ``predict`` feed a model
exactly what it was trained on. ``mean`` is either per channel (C floats) or a
per-pixel mean image (C x H x W nested lists, the paper's "per-pixel mean
subtracted", §3.4/§4.2); ``std`` is per channel (1.0 for plain mean subtraction).
All statistics are on the [0, 1] scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from resnetlab.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SIZE = 4096  # largest model input side a saved Preprocessing may ask for


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(value: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``value`` is nested lists of finite numbers of exactly ``shape``."""
    if not isinstance(value, list) or len(value) != shape[0]:
        return False
    if len(shape) > 1:
        return all(_numbers(v, shape[1:]) for v in value)
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
    def from_dict(cls, d: Any) -> Preprocessing:
        """Rebuild saved preprocessing; the dict may come from an untrusted file, so
        anything that would fail or mislead later (wrong types, a mean of the wrong
        shape, a zero std) is refused here with a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be an object, got {type(d).__name__}")
        unknown = sorted(str(k) for k in set(d) - {"mode", "size", "resize", "mean", "std"})
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown[:5]}")
        missing = [k for k in ("mode", "size", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"preprocessing lacks {', '.join(map(repr, missing))}")
        if d["mode"] not in ("RGB", "L"):
            raise ValueError(f"preprocessing mode must be 'RGB' or 'L', got {_short(d['mode'])}")
        size, resize = d["size"], d.get("resize")
        if not _is_int(size) or not 1 <= size <= MAX_SIZE:
            raise ValueError(f"preprocessing size must be an integer in 1..{MAX_SIZE}")
        if resize is not None and (not _is_int(resize) or not size <= resize <= 2 * MAX_SIZE):
            raise ValueError(
                f"preprocessing resize must be null or an integer in size..{2 * MAX_SIZE}"
            )
        c = 1 if d["mode"] == "L" else 3
        std = d["std"]
        if not _numbers(std, (c,)) or not all(v > 0 for v in std):
            raise ValueError(f"preprocessing std must be {c} positive number(s)")
        if not (_numbers(d["mean"], (c,)) or _numbers(d["mean"], (c, size, size))):
            raise ValueError(
                f"preprocessing mean must be {c} number(s) or a {c}x{size}x{size} mean image"
            )
        return cls(**d)

    def mean_tensor(self) -> torch.Tensor:
        """Mean as [C,1,1] (per channel) or [C,H,W] (per pixel)."""
        m = torch.tensor(self.mean, dtype=torch.float32)
        return m.view(-1, 1, 1) if m.dim() == 1 else m

    def std_tensor(self) -> torch.Tensor:
        return torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def affine(self, *, channel_mean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, bias) with normalized = uint8 * scale + bias = (x/255 - mean) / std: one
        fused multiply-add, the same op (so the same bits) in ``predict`` and the loaders.
        ``channel_mean``: a per-pixel mean is reduced to its channel averages, for whole
        images of any size (the multi-scale test, §3.4): the mean image exists only at
        the training crop size."""
        mean, std = self.mean_tensor(), self.std_tensor()
        if channel_mean:
            mean = mean.mean((1, 2), keepdim=True)
        return 1.0 / (255.0 * std), -mean / std

    def normalize(self, batch_uint8: torch.Tensor, *, channel_mean: bool = False) -> torch.Tensor:
        """uint8 [N,C,H,W] (or [C,H,W]) -> normalized float32, on the batch's device."""
        scale, bias = self.affine(channel_mean=channel_mean)
        x = batch_uint8.float()
        return torch.addcmul(bias.to(x.device), x, scale.to(x.device))

    def load(self, path: str | Path) -> torch.Tensor:
        """Read one image file into uint8 [C,size,size] with ``images.load_image``, the
        decoding every loader uses: upright, mode and bit depth converted, shorter side
        to ``resize`` (or size), centre crop."""
        from resnetlab.data.images import DECODE_ERRORS, load_image

        try:
            arr = load_image(path, self.mode, self.resize or self.size, self.size)
        except FileNotFoundError:
            raise DataError(f"image not found: {path}") from None
        except DECODE_ERRORS as e:  # DecompressionBombError (over ~179 Mpixel) included
            raise DataError(f"cannot read image {path}: {e}") from None
        return torch.from_numpy(arr)

    def resize_and_crop(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 [C,H,W] -> uint8 [C,size,size]: shorter side to ``resize`` (or size), center
        crop, with the resampling ``load`` uses."""
        from resnetlab.data.transforms import eval_view

        arr = img.cpu().numpy()
        im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        return torch.from_numpy(eval_view(im, self.resize or self.size, self.size))
