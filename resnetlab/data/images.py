"""The one way an image file becomes pixels.

``predict`` (``Preprocessing.load``), ``eval``, the streaming training loader and the
small-image decoder all call ``read_image`` and then cut their views from its result
(``load_image`` for the model's single view), so a picture gives the same tensor
whichever path it takes: opened, decoded at a reduced JPEG scale when that is enough
(Pillow's draft), turned upright by its EXIF orientation, converted to the model's
mode with the right bit depth, then resized and cropped.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnetlab.data.transforms import eval_view

# What a bad file raises anywhere between open and the last pixel (truncated data,
# unknown format, a decompression bomb over 2x Pillow's pixel limit, ...).
DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)
_DEEP_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit greyscale (PNG, TIFF)
T = TypeVar("T")
_FORMAT_HINT = {".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".png": ("PNG",)}


def open_image(path: str | Path) -> Image.Image:
    """``Image.open``, trying the format the extension names first (format sniffing is a
    large share of the cost of a 32x32 JPEG), then every format Pillow knows."""
    path = str(path)
    hint = _FORMAT_HINT.get(os.path.splitext(path)[1].lower())
    if hint:
        try:
            return Image.open(path, formats=hint)
        except UnidentifiedImageError:
            pass
    return Image.open(path)


def to_mode(im: Image.Image, mode: str = "RGB") -> Image.Image:
    """Any Pillow mode as ``mode`` ("RGB" or "L"), keeping the picture's brightness.

    16-bit greyscale is scaled 0..65535 -> 0..255 (Pillow's own conversion clips it, so
    a mid-grey 16-bit PNG would come out white); float images, which have no declared
    range, are read as 16-bit when any value exceeds 255 and as 8-bit otherwise. Alpha
    is dropped, as torchvision's and Pillow's RGB conversion do (what pretrained weights
    were fed); a palette with a transparent entry goes through RGBA so Pillow does not
    warn. Palette, 1-bit, LA, CMYK and YCbCr use Pillow's conversions.
    """
    if im.mode in _DEEP_GREY or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if im.mode != "F" or (arr.size and arr.max() > 255):
            arr = arr / 257.0  # 65535 / 257 = 255 exactly
        im = Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im if im.mode == mode else im.convert(mode)


def upright(im: Image.Image) -> None:
    """Apply the EXIF orientation in place (a phone's portrait photo is stored sideways
    with tag 6 or 8). Unreadable EXIF leaves the pixels as stored: the metadata is
    damaged, not the image."""
    with contextlib.suppress(SyntaxError, ValueError, TypeError, KeyError, struct.error):
        ImageOps.exif_transpose(im, in_place=True)


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of ``im`` once turned upright, from the header and EXIF alone
    (before decoding): orientations 5-8 are stored sideways. For JPEG the EXIF block is
    read with the header; other formats may decode to find theirs."""
    orientation = 1
    with contextlib.suppress(SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        orientation = int(im.getexif().get(0x0112, 1))
    w, h = im.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _decode(im: Image.Image, mode: str, shorter: int | None) -> Image.Image:
    if shorter and im.format == "JPEG" and min(im.size) >= 2 * shorter:
        im.draft(im.mode, (shorter, shorter))  # square: independent of the orientation
    im.load()
    upright(im)
    out = to_mode(im, mode)
    out.load()
    return out


def read_image(path: str | Path, mode: str = "RGB", *, shorter: int | None = None) -> Image.Image:
    """Decode ``path`` upright in ``mode``, fully loaded. ``shorter``: the largest shorter
    side any view of it will be resized to; a JPEG at least twice that is decoded at a
    reduced scale that still covers it (DCT scaling: a large share of the decoding time
    of big photos). Raises one of ``DECODE_ERRORS`` for a bad file."""
    with open_image(path) as im:
        return _decode(im, mode, shorter)


def read_planned(
    path: str | Path, mode: str, plan: Callable[[int, int], T], shorter: Callable[[T], int]
) -> tuple[Image.Image, T]:
    """Decode for a view chosen on the full-size upright image: ``plan(width, height)``
    runs on the header's size before any pixel is decoded, and ``shorter(planned)`` says
    the shorter side the decoded image must keep, so a JPEG is decoded at the smallest
    DCT scale (1/2, 1/4, 1/8) that still serves that view (a random crop needs its
    region, not the whole picture, at full output resolution). Returns the image,
    upright in ``mode`` and possibly reduced, and the plan."""
    with open_image(path) as im:
        planned = plan(*upright_size(im))
        return _decode(im, mode, shorter(planned)), planned


def load_image(path: str | Path, mode: str, resize: int, size: int) -> np.ndarray:
    """uint8 [C,size,size]: shorter side to ``resize``, centre ``size`` crop — the model's
    single test view (§3.4: 256 and 224 on ImageNet; ``resize == size`` for CIFAR)."""
    return eval_view(read_image(path, mode, shorter=resize), resize, size)
