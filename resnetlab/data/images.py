"""The one way an image file becomes pixels.

``predict`` (``Preprocessing.load``), ``eval``, the streaming training loader and the
small-image decoder all call ``read_image`` and then cut their views from its result
(``load_image`` for the model's single view), so a picture gives the same tensor
whichever path it takes: opened, decoded at a reduced JPEG scale when that is enough
(Pillow's draft), turned upright by its EXIF orientation, converted to the model's
mode with the right bit depth, then resized and cropped. The streaming loader's training
crops (``read_planned_rgb``) take colour and grey JPEGs (baseline or progressive)
straight to a uint8 array through libjpeg-turbo (simplejpeg): the library and settings
Pillow's decoder uses, so the same pixels, in about 0.6 of the time on photo-sized files
(Pillow's decode loop fills its 4-byte pixel buffer, which is copied out again for
NumPy), and read their header and EXIF orientation without Pillow's JPEG plugin.
Anything else, or no simplejpeg, goes through Pillow.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from resnetlab.data.transforms import eval_view

try:
    import simplejpeg
except ImportError:  # a dependency, but Pillow decodes everything without it
    simplejpeg = None  # type: ignore[assignment]

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


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8; 1: stored upright) that ``upright`` applies; 1 when the
    EXIF is missing or unreadable. For JPEG the EXIF block is read with the header;
    other formats may decode to find theirs."""
    with contextlib.suppress(SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error):
        return int(im.getexif().get(0x0112, 1))
    return 1


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of ``im`` once turned upright, from the header and EXIF alone
    (before decoding): orientations 5-8 are stored sideways."""
    w, h = im.size
    return (h, w) if orientation(im) in (5, 6, 7, 8) else (w, h)


# EXIF orientation -> the stored [H,W,C] array turned upright, as views (no copy), the
# transposes ``ImageOps.exif_transpose`` applies: 2 mirror, 3 rotate 180, 4 flip, 5
# transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a[::-1].transpose(1, 0, 2),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: a[:, ::-1].transpose(1, 0, 2),
}


def _draft(im: Image.Image, shorter: int | None) -> None:
    """Let a JPEG at least twice ``shorter`` decode at a reduced DCT scale (1/2, 1/4,
    1/8) that keeps its shorter side >= ``shorter``; ``im.size`` becomes that size."""
    if shorter and im.format == "JPEG" and min(im.size) >= 2 * shorter:
        im.draft(im.mode, (shorter, shorter))  # square: independent of the orientation


def _turbo_rgb(im: Image.Image) -> np.ndarray | None:
    """``im`` (an opened, not yet loaded, possibly drafted JPEG) as an upright uint8
    [H,W,3] array decoded by libjpeg-turbo through simplejpeg, at ``im.size`` (of an
    MPO, a phone's photo with extra frames: the first, as Pillow); None where Pillow
    must decode it: no simplejpeg, not a plain JPEG, CMYK/YCCK (Pillow's
    conversion differs), or any libjpeg warning (a damaged file: Pillow decides
    what it yields). Its default accurate IDCT and smooth chroma upsampling are
    Pillow's too, so the pixels are Pillow's, bit for bit, also at a draft scale."""
    if simplejpeg is None or im.format not in ("JPEG", "MPO") or im.mode not in ("RGB", "L"):
        return None
    if not isinstance(im, ImageFile.ImageFile) or im.fp is None:
        return None
    im.fp.seek(0)
    data = im.fp.read()
    try:
        if simplejpeg.decode_jpeg_header(data)[2] not in ("YCbCr", "Gray"):
            return None
    except ValueError:
        return None
    return _turbo_upright(data, *im.size, orientation(im))


def _turbo_upright(data: bytes, w: int, h: int, turn: int) -> np.ndarray | None:
    """libjpeg-turbo's RGB decoding of ``data`` at the DCT scale that gives ``w`` x ``h``,
    turned upright by EXIF orientation ``turn``; None on any libjpeg warning or if no
    scale gives that size (Pillow then decides)."""
    try:
        arr = simplejpeg.decode_jpeg(data, "RGB", min_height=h, min_width=w)
    except ValueError:
        return None
    if arr.shape != (h, w, 3):  # not the scale Pillow's draft chose
        return None
    view = _UPRIGHT.get(turn)
    return view(arr) if view else arr


def _decode(im: Image.Image, mode: str, shorter: int | None) -> Image.Image:
    _draft(im, shorter)
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


def read_planned_rgb(
    path: str | Path, plan: Callable[[int, int], T], shorter: Callable[[T], int]
) -> tuple[Image.Image | np.ndarray, T]:
    """``read_planned`` in RGB for the training crops, skipping Pillow where it can: a
    colour or grey JPEG comes back as an upright uint8 [H,W,3] array (possibly a
    strided view: ``crop_resize`` copies only the crop out of it), anything else as
    ``read_planned``'s image. The same pixels either way. A JPEG's header is read by
    libjpeg-turbo too (Pillow parses every marker segment in Python, a tenth of the
    time of a photo's whole training view); ``plan`` runs once, on either path."""
    data = _jpeg_bytes(path)
    header = _turbo_header(data) if data is not None else None
    if data is None or header is None:
        with open_image(path) as im:
            planned = plan(*upright_size(im))
            _draft(im, shorter(planned))
            pixels = _turbo_rgb(im)
            return (_decode(im, "RGB", None) if pixels is None else pixels), planned
    width, height, turn = header
    sideways = turn in (5, 6, 7, 8)
    planned = plan(*((height, width) if sideways else (width, height)))
    scale = _draft_scale(width, height, shorter(planned))
    arr = _turbo_upright(data, -(-width // scale), -(-height // scale), turn)
    if arr is None:  # a libjpeg warning (a damaged file): Pillow decides what it yields
        with open_image(path) as im:
            _draft(im, shorter(planned))
            return _decode(im, "RGB", None), planned
    return arr, planned


def _jpeg_bytes(path: str | Path) -> bytes | None:
    """The file's bytes if it starts like a JPEG and simplejpeg is there, else None."""
    if simplejpeg is None:
        return None
    with open(path, "rb") as f:
        data = f.read()
    return data if data[:3] == b"\xff\xd8\xff" else None


def _turbo_header(data: bytes) -> tuple[int, int, int] | None:
    """(stored width, height, EXIF orientation) of a colour or grey JPEG, from
    libjpeg-turbo's header reader and the first Exif APP1 segment (Pillow's choice,
    parsed by Pillow's EXIF reader); None where Pillow must open it (CMYK/YCCK, or
    markers that cannot be walked)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray"):
        return None
    turn = _exif_orientation(data)
    return None if turn is None else (width, height, turn)


def _exif_orientation(data: bytes) -> int | None:
    """The orientation tag of the first Exif APP1 segment before the image data (1 when
    there is none or it is unreadable, as ``orientation``); None if the markers are
    not well formed."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no Exif segment
            return 1
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
            exif = Image.Exif()
            with contextlib.suppress(SyntaxError, ValueError, TypeError, KeyError, struct.error):
                exif.load(data[pos + 4 : pos + 2 + length])
                return int(exif.get(0x0112, 1))
            return 1
        pos += 2 + length
    return None


def _draft_scale(width: int, height: int, shorter: int | None) -> int:
    """The DCT scale divisor ``_draft`` (Pillow's ``JpegImageFile.draft`` with a square
    request of ``shorter``) chooses for a ``width`` x ``height`` JPEG."""
    if not shorter or min(width, height) < 2 * shorter:
        return 1
    k = min(width // shorter, height // shorter)
    return next(s for s in (8, 4, 2, 1) if k >= s)


def load_image(path: str | Path, mode: str, resize: int, size: int) -> np.ndarray:
    """uint8 [C,size,size]: shorter side to ``resize``, centre ``size`` crop — the model's
    single test view (§3.4: 256 and 224 on ImageNet; ``resize == size`` for CIFAR)."""
    return eval_view(read_image(path, mode, shorter=resize), resize, size)
