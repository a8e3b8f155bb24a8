"""Augmentation and test-time views.

Small images (§4.2): 4-pixel zero padding, a random crop back to the original size
and a random horizontal flip, done for a whole batch with one ``gather`` on the
training device (crop and flip are both just an index map). Large images (§3.4):
shorter side drawn from [256, 480], a random 224 crop, flip and Krizhevsky's PCA
colour augmentation, per sample with Pillow in loader workers. Test views: center
crop, 10-crop (corners + center and their flips) and the multi-scale
fully-convolutional sizes {224, 256, 384, 480, 640}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

MULTISCALE_SIDES = (224, 256, 384, 480, 640)

# Krizhevsky et al. 2012 colour augmentation: PCA of ImageNet RGB pixels ([0,1] scale).
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


# ---------------------------------------------------------------- whole-batch (in memory)


def crop_flip_params(
    n: int, pad: int, flip: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image crop offsets in [0, 2*pad] (rows, cols) and flip flags, drawn on the CPU
    from ``gen`` so they do not depend on the device or on how the batch is sharded."""
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return off[0], off[1], flips


def crop_flip(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """uint8 [B,C,H,W] -> [B,C,H,W]: zero-pad by ``pad``, crop at (dy, dx), mirror where
    ``flips``; one gather over the padded batch, no per-image Python loop."""
    b, c, h, w = images.shape
    dev = images.device
    dy, dx, flips = dy.to(dev), dx.to(dev), flips.to(dev)
    hp, wp = h + 2 * pad, w + 2 * pad
    if pad:
        padded = images.new_zeros(b, c, hp, wp)
        padded[:, :, pad : pad + h, pad : pad + w] = images
    else:
        padded = images
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # [B,H]
    cols = dx[:, None] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)  # [B,W]
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)


def ten_crop(images: torch.Tensor, size: int | None = None, pad: int = 4) -> torch.Tensor:
    """uint8 [N,C,H,W] -> [N,10,C,size,size]: the 4 corners and center of the (zero-padded)
    image and their mirrors, the small-image analogue of the 10-crop test (§3.4)."""
    n, c, h, w = images.shape
    size = size or h
    if pad:
        padded = images.new_zeros(n, c, h + 2 * pad, w + 2 * pad)
        padded[:, :, pad : pad + h, pad : pad + w] = images
    else:
        padded = images
    hp, wp = padded.shape[-2:]
    if size > min(hp, wp):
        raise ValueError(f"crop {size} larger than the padded image {hp}x{wp}")
    tops = (0, 0, hp - size, hp - size, (hp - size) // 2)
    lefts = (0, wp - size, 0, wp - size, (wp - size) // 2)
    crops = [padded[:, :, t : t + size, left : left + size] for t, left in zip(tops, lefts)]
    views = torch.stack(crops, 1)
    return torch.cat([views, views.flip(-1)], 1).contiguous()


# ---------------------------------------------------------------- per sample (streaming)


def resize_shorter(im: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side is ``side`` (aspect kept); JPEG decoded at a reduced
    scale first when much larger, which is what keeps ImageNet decoding affordable."""
    if im.format == "JPEG" and min(im.size) >= 2 * side:
        im.draft("RGB", (side * im.width // min(im.size), side * im.height // min(im.size)))
    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    return im if (nw, nh) == (w, h) else im.resize((nw, nh), Image.Resampling.BILINEAR)


def _chw(im: Image.Image) -> np.ndarray:
    """uint8 [C,H,W] for an RGB (C=3) or greyscale (C=1) image; a writable copy."""
    arr = np.asarray(im, dtype=np.uint8)
    return np.array(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1), order="C")


def center_crop(im: Image.Image, size: int) -> Image.Image:
    if im.size == (size, size):
        return im
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return im.crop((left, top, left + size, top + size))


def eval_view(im: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """Standard single-crop test view: shorter side to 256, center 224 crop (§3.4)."""
    return _chw(center_crop(resize_shorter(im, resize), crop))


def pca_lighting(img: np.ndarray, rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    """Krizhevsky colour augmentation: add ``eigvec @ (alpha * eigval)``, alpha ~ N(0, std)."""
    if std <= 0:
        return img
    alpha = rng.normal(0.0, std, 3)
    shift = PCA_EIGVEC @ (alpha * PCA_EIGVAL) * 255.0
    out = img.astype(np.float32) + shift.astype(np.float32)[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def train_view(
    im: Image.Image,
    rng: np.random.Generator,
    *,
    scale: tuple[int, int] = (256, 480),
    crop: int = 224,
    flip: bool = True,
    lighting: float = 0.1,
) -> np.ndarray:
    """§3.4 training view: shorter side uniform in [256, 480], random 224 crop, flip,
    PCA lighting. Returns uint8 [3,crop,crop]; normalisation happens on the device."""
    im = resize_shorter(im, int(rng.integers(scale[0], scale[1] + 1)))
    top = int(rng.integers(0, im.height - crop + 1))
    left = int(rng.integers(0, im.width - crop + 1))
    im = im.crop((left, top, left + crop, top + crop))
    if flip and rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return pca_lighting(_chw(im), rng, lighting)


def ten_crop_view(im: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """uint8 [10,3,crop,crop]: 4 corners + center of the resized image, and their mirrors."""
    t = torch.from_numpy(_chw(resize_shorter(im, resize))).unsqueeze(0)
    views = ten_crop(t, crop, pad=0)
    return views[0].numpy()


def multiscale_views(
    im: Image.Image, sides: Sequence[int] = MULTISCALE_SIDES, flip: bool = True
) -> list[torch.Tensor]:
    """Whole images with the shorter side at each of ``sides`` (and mirrored), uint8
    [1 or 2,3,H,W] each, for the fully-convolutional multi-scale test (§3.4): the
    model averages its scores over all of them."""
    out = []
    for s in sides:
        t = torch.from_numpy(_chw(resize_shorter(im.copy(), s))).unsqueeze(0)
        out.append(torch.cat([t, t.flip(-1)]) if flip else t)
    return out
