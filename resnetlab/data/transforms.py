"""Augmentation and test-time views.

Small images (§4.2): 4-pixel zero padding, a random crop back to the original size
and a random horizontal flip, done for a whole batch with one ``gather`` on the
training device (crop and flip are both just an index map). Large images, per sample
in loader workers, either §3.4's scale augmentation (shorter side drawn from
[256, 480], a random 224 crop, flip and Krizhevsky's PCA colour augmentation) or the
random-resized crop most ImageNet code uses (8%-100% of the area, aspect 3/4-4/3,
flip). Both are planned on the full-size image *before* it is decoded, so that a JPEG
can be decoded at a reduced scale that still covers the crop (``CropPlan.shorter``),
and are cut and resized in one step (``crop_resize``). Test views: center crop,
10-crop (corners + center and their flips) and the multi-scale fully-convolutional
sizes {224, 256, 384, 480, 640}.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MULTISCALE_SIDES = (224, 256, 384, 480, 640)
TRAIN_SCALE = (256, 480)  # §3.4: shorter side drawn from [256, 480] for 224 crops
RRC_AREA = (0.08, 1.0)  # random-resized crop: fraction of the image area
RRC_RATIO = (3 / 4, 4 / 3)  # and aspect ratio (width / height) of the crop
TrainCrop = Literal["scale", "rrc"]
TRAIN_CROPS: tuple[TrainCrop, ...] = ("scale", "rrc")

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


def alternating_flips(first: torch.Tensor, rows: torch.Tensor, epoch: int) -> torch.Tensor:
    """Flip flags of images ``rows`` in ``epoch``: each image's mirroring in epoch 0
    (``first``, drawn once per run) inverted on odd epochs, so over any two consecutive
    epochs every image is seen once each way. Random flips repeat an image's
    orientation half the time, which at a few epochs wastes part of the data (Jordan
    2024, "94% on CIFAR-10 in 3.29 seconds": alternating flip)."""
    return first[rows.cpu()] ^ bool(epoch % 2)


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


def lighting_shift(alpha: np.ndarray) -> np.ndarray:
    """The RGB shift of Krizhevsky's PCA colour augmentation (§3.4, as AlexNet), on the
    [0, 1] scale: ``eigvec @ (alpha * eigval)`` with ImageNet's pixel eigen-pairs."""
    return (PCA_EIGVEC @ (np.asarray(alpha, np.float64) * PCA_EIGVAL)).astype(np.float32)


def pca_lighting(img: np.ndarray, rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    """Krizhevsky colour augmentation on a uint8 [3,H,W] image, alpha ~ N(0, std): for
    per-sample use. The streaming loader adds the same shift on the device instead,
    in float before normalisation, so images stay uint8 until then."""
    if std <= 0:
        return img
    shift = lighting_shift(rng.normal(0.0, std, 3)) * 255.0
    out = img.astype(np.float32) + shift[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def scale_range(crop: int) -> tuple[int, int]:
    """§3.4's shorter-side range [256, 480] for 224 crops, scaled to other crop sides so
    that a crop covers the same share of the image (exactly [256, 480] at 224)."""
    return round(TRAIN_SCALE[0] * crop / 224), round(TRAIN_SCALE[1] * crop / 224)


@dataclass(frozen=True)
class CropPlan:
    """One training view, drawn on the full-size upright image (``width`` x ``height``)
    before it is decoded: the region ``box`` (left, top, right, bottom, in full-size
    pixels) becomes the crop, mirrored if ``flip``; ``lighting`` is the PCA colour shift
    (RGB, [0, 1] scale; zeros for none), added on the device; ``side`` is the shorter
    side §3.4 resizes the image to (0 for the random-resized crop)."""

    width: int
    height: int
    box: tuple[float, float, float, float]
    flip: bool
    lighting: tuple[float, float, float] = (0.0, 0.0, 0.0)
    side: int = 0

    def shorter(self, crop: int) -> int:
        """The shorter side the decoded image must keep so that the box still has at
        least ``crop`` pixels each way: what JPEG draft decoding may go down to."""
        left, top, right, bottom = self.box
        need = min(self.width, self.height) * crop / max(min(right - left, bottom - top), 1e-6)
        return math.ceil(need - 1e-9)


def scale_plan(
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    scale: tuple[int, int] = TRAIN_SCALE,
    crop: int = 224,
    flip: bool = True,
    lighting: float = 0.1,
) -> CropPlan:
    """§3.4: shorter side uniform in ``scale`` ([256, 480]), a random ``crop`` square of
    the resized image, a flip with probability 1/2, PCA lighting with alpha ~ N(0, 0.1)."""
    side = int(rng.integers(scale[0], scale[1] + 1))
    f = side / min(width, height)
    nw, nh = max(side, round(width * f)), max(side, round(height * f))  # as resize_shorter
    top = int(rng.integers(0, max(nh - crop, 0) + 1))
    left = int(rng.integers(0, max(nw - crop, 0) + 1))
    sx, sy = width / nw, height / nh
    box = (left * sx, top * sy, min(left + crop, nw) * sx, min(top + crop, nh) * sy)
    mirror = bool(flip and rng.random() < 0.5)
    alpha = rng.normal(0.0, lighting, 3) if lighting > 0 else np.zeros(3)
    shift = lighting_shift(alpha) if lighting > 0 else np.zeros(3, np.float32)
    light = (float(shift[0]), float(shift[1]), float(shift[2]))
    return CropPlan(width, height, box, mirror, light, side)


def rrc_plan(
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    area: tuple[float, float] = RRC_AREA,
    ratio: tuple[float, float] = RRC_RATIO,
    flip: bool = True,
) -> CropPlan:
    """The random-resized crop of most ImageNet code (torchvision's algorithm): up to
    10 tries at a region of ``area`` x the image with aspect ``ratio`` (log-uniform),
    else the largest central region within the ratio; then a flip with probability 1/2.
    Not the paper's augmentation (that is ``scale_plan``)."""
    total = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = total * rng.uniform(area[0], area[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            break
    else:  # fallback: central crop at the nearest allowed ratio
        in_ratio = width / height
        if in_ratio < min(ratio):
            w, h = width, round(width / min(ratio))
        elif in_ratio > max(ratio):
            w, h = round(height * max(ratio)), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    mirror = bool(flip and rng.random() < 0.5)
    return CropPlan(width, height, (left, top, left + w, top + h), mirror)


def plan_view(
    kind: TrainCrop, width: int, height: int, rng: np.random.Generator, crop: int
) -> CropPlan:
    """The training view ``kind`` ("scale": §3.4, "rrc": random-resized crop) at ``crop``."""
    if kind == "scale":
        return scale_plan(width, height, rng, scale=scale_range(crop), crop=crop)
    if kind == "rrc":
        return rrc_plan(width, height, rng)
    raise ValueError(f"unknown training crop {kind!r}: expected one of {', '.join(TRAIN_CROPS)}")


def crop_resize(im: Image.Image | np.ndarray, plan: CropPlan, crop: int) -> np.ndarray:
    """uint8 [3,crop,crop]: the plan's box of ``im`` (the full image, or a JPEG decoded
    at a reduced scale: the box is scaled to its size), resized to ``crop`` x ``crop``
    with antialiased bilinear filtering and mirrored if planned. ``im`` is a Pillow
    image or an RGB uint8 [H,W,3] array (any strides: only the box is copied out).

    The resize runs in PyTorch's uint8 channels-last kernel (AVX2 on x86; Pillow's
    filter, several times faster than ``Image.resize``) on just the cropped pixels;
    the box is rounded to whole pixels of the decoded image. The mirror and the move
    to [C,H,W] are one NumPy copy (PyTorch's flip and permuted copy take twice as long
    on these 3-byte pixels)."""
    h, w = im.shape[:2] if isinstance(im, np.ndarray) else (im.height, im.width)
    fx, fy = w / plan.width, h / plan.height
    left, top, right, bottom = plan.box
    x0 = min(max(round(left * fx), 0), w - 1)
    y0 = min(max(round(top * fy), 0), h - 1)
    x1 = min(max(round(right * fx), x0 + 1), w)
    y1 = min(max(round(bottom * fy), y0 + 1), h)
    if isinstance(im, np.ndarray):
        region = np.ascontiguousarray(im[y0:y1, x0:x1])
    else:
        cut = im.crop((x0, y0, x1, y1)) if (x0, y0, x1, y1) != (0, 0, w, h) else im
        region = np.asarray(cut if cut.mode == "RGB" else cut.convert("RGB"))
    with warnings.catch_warnings():  # read-only array from Pillow: read, never written
        warnings.simplefilter("ignore", UserWarning)
        hwc = torch.from_numpy(region)
    x = hwc.unsqueeze(0).permute(0, 3, 1, 2)  # [1,3,h,w], channels-last strides
    if x.shape[-2:] != (crop, crop):
        x = F.interpolate(
            x.contiguous(memory_format=torch.channels_last),
            size=(crop, crop),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
    out = x[0].permute(1, 2, 0).numpy()  # [crop,crop,3]
    return np.array((out[:, ::-1] if plan.flip else out).transpose(2, 0, 1), order="C")


def train_view(
    im: Image.Image,
    rng: np.random.Generator,
    *,
    scale: tuple[int, int] = TRAIN_SCALE,
    crop: int = 224,
    flip: bool = True,
    lighting: float = 0.1,
) -> np.ndarray:
    """§3.4 training view of a decoded image, per sample: shorter side uniform in
    [256, 480], random 224 crop, flip, PCA lighting (applied here in uint8). Returns
    uint8 [3,crop,crop]; normalisation happens on the device."""
    plan = scale_plan(
        im.width, im.height, rng, scale=scale, crop=crop, flip=flip, lighting=lighting
    )
    out = crop_resize(im, plan, crop)
    if lighting <= 0:
        return out
    shift = np.asarray(plan.lighting, np.float32) * 255.0
    return np.clip(np.rint(out.astype(np.float32) + shift[:, None, None]), 0, 255).astype(np.uint8)


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
