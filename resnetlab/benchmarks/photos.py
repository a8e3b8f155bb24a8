"""The large-image benchmark set: real photographs, made on this machine, never committed.

``build_large_set`` writes about 2,000 JPEGs (shorter side 300-500 px, quality 90: the
size and compression of a typical ImageNet photo) in a class-folder layout, one class
per source photograph, from the colour photographs scikit-image ships in its wheel:
random crops, scales, flips, colour and gamma shifts and a little sensor-like noise
(sources of 300-640 px are enlarged for some outputs; the noise keeps their JPEG
decoding cost that of a real photo rather than of a smooth enlargement). Each image is
a pure function of its index, so the set is the same bytes on every build with the
same library versions. It is built once, atomically, under the data folder
(``$RESNETLAB_DATA`` or ``~/.cache/resnetlab``): ``bench-large-v1`` for the default
size, ``bench-large-v1-nN`` for another count.

Also here: the pipeline most ImageNet code runs (torchvision's ``ImageFolder`` with
``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize``), written
out plainly with Pillow and torch so it needs no torchvision: the baseline of
``resnetlab bench data --large``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from resnetlab.errors import ResnetlabError

SET_VERSION = "bench-large-v1"
DEFAULT_COUNT = 2000
SHORTER = (300, 500)  # shorter side of the written JPEGs, px
QUALITY = 90
BUILD_SEED = 1512_03385  # the paper's arXiv number
# scikit-image's colour photographs that ship in its wheel (no download), 300-1411 px;
# its other colour samples are a logo and a colour wheel, not photographs
SOURCES = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "retina",
    "rocket",
)
NEED_SKIMAGE = (
    "the large-image benchmark makes its photos from scikit-image's sample images: "
    "pip install 'resnetlab[bench]' (or pip install 'scikit-image>=0.22')"
)


@functools.lru_cache(maxsize=1)
def _sources() -> dict[str, np.ndarray]:
    """The source photographs as uint8 [H,W,3]; loaded once per process (and inherited by
    forked build workers)."""
    try:
        import skimage.data as sk
    except ModuleNotFoundError:
        raise ResnetlabError(NEED_SKIMAGE) from None
    out: dict[str, np.ndarray] = {}
    left, right, _ = sk.stereo_motorcycle()
    for name in SOURCES:
        if name in ("motorcycle_left", "motorcycle_right"):
            arr = left if name == "motorcycle_left" else right
        else:
            arr = getattr(sk, name)()
        arr = np.asarray(arr)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ResnetlabError(
                f"scikit-image {skimage_version()}'s {name} is not an 8-bit RGB photograph"
                f" ({arr.dtype}, {arr.shape}); the benchmark set needs scikit-image>=0.22"
            )
        out[name] = arr
    return out


def skimage_version() -> str:
    try:
        import skimage
    except ModuleNotFoundError:
        raise ResnetlabError(NEED_SKIMAGE) from None
    return str(getattr(skimage, "__version__", "unknown"))


def set_folder(
    data_dir: Path, count: int = DEFAULT_COUNT, shorter: tuple[int, int] = SHORTER
) -> Path:
    """``bench-large-v1`` for the default set; other counts and sizes live beside it."""
    name = SET_VERSION if count == DEFAULT_COUNT else f"{SET_VERSION}-n{count}"
    return data_dir / (name if shorter == SHORTER else f"{name}-s{shorter[0]}-{shorter[1]}")


def photo_path(i: int) -> str:
    """Where image ``i`` lives, relative to the set's root."""
    return f"train/{SOURCES[i % len(SOURCES)]}/{i:05d}.jpg"


def make_photo(i: int, shorter: tuple[int, int] = SHORTER) -> bytes:
    """JPEG bytes of image ``i``: a random region of source ``i mod 9`` with a landscape
    (3 in 4) or portrait aspect of 1-1.5, resized to a shorter side in ``shorter``,
    mirrored half the time, with per-channel gains in [0.8, 1.2], a gamma in
    [0.8, 1.25] and Gaussian noise of 2 levels, saved at quality 90."""
    rng = np.random.default_rng([BUILD_SEED, i])
    src = _sources()[SOURCES[i % len(SOURCES)]]
    h, w = src.shape[:2]
    short = int(rng.integers(shorter[0], shorter[1] + 1))
    aspect = math.exp(rng.uniform(0.0, math.log(1.5)))
    portrait = rng.random() < 0.25
    out_w, out_h = (short, round(short * aspect)) if portrait else (round(short * aspect), short)
    r = out_w / out_h
    max_w = min(w, h * r)
    f = math.sqrt(rng.uniform(0.35, 1.0))  # share of the largest region of that aspect
    cw, ch = max_w * f, max_w * f / r
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    im = Image.fromarray(src).resize(
        (out_w, out_h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch)
    )
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gains = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    gamma = np.float32(math.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    arr = np.asarray(im, dtype=np.float32) / np.float32(255)
    arr = np.power(arr, gamma) * (np.float32(255) * gains)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(2.0)
    out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def _write_chunk(args: tuple[str, list[int], tuple[int, int]]) -> list[dict[str, Any]]:
    root, indices, shorter = args
    rows = []
    for i in indices:
        data = make_photo(i, shorter)
        rel = photo_path(i)
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return rows


def _manifest(root: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((root / "manifest.json").read_text())
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def is_complete(root: Path, count: int, shorter: tuple[int, int] = SHORTER) -> bool:
    """The set's manifest matches this version, count and size, and every file is there
    with its size (a stat each; the bytes are checked by the tests, not on every run)."""
    m = _manifest(root)
    if not m or m.get("version") != SET_VERSION or m.get("count") != count:
        return False
    if m.get("shorter_side") != list(shorter):
        return False
    files = m.get("files")
    if not isinstance(files, list) or len(files) != count:
        return False
    try:
        return all((root / f["path"]).stat().st_size == f["bytes"] for f in files)
    except (OSError, KeyError, TypeError):
        return False


def build_large_set(
    data_dir: Path,
    count: int = DEFAULT_COUNT,
    *,
    shorter: tuple[int, int] = SHORTER,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """(the set's root, whether it was built now). Built into a temporary folder beside it
    and renamed, so an interrupted build leaves no half set; a set that another process
    finished first is used as it is."""
    if count < 2 * len(SOURCES):
        raise ResnetlabError(
            f"the benchmark set needs at least {2 * len(SOURCES)} images (2 per class), got {count}"
        )
    if not 1 <= shorter[0] <= shorter[1]:
        raise ResnetlabError(f"photo sizes must be 1 <= MIN <= MAX, got {shorter[0]} {shorter[1]}")
    root = set_folder(Path(data_dir), count, shorter)
    if is_complete(root, count, shorter):
        return root, False
    version = skimage_version()
    _sources()  # load (and fail) before forking workers; they inherit the arrays
    if log:
        log(f"building {count} benchmark photos in {root} (once)")
    tmp = root.with_name(f"{root.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        from resnetlab.data.loader import default_workers

        n_workers = default_workers() if workers is None else workers
        step = 50
        chunks = [
            (str(tmp), list(range(s, min(s + step, count))), shorter) for s in range(0, count, step)
        ]
        if n_workers > 1 and len(chunks) > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                rows = [r for chunk in pool.map(_write_chunk, chunks) for r in chunk]
        else:
            rows = [r for c in chunks for r in _write_chunk(c)]
        manifest = {
            "version": SET_VERSION,
            "count": count,
            "seed": BUILD_SEED,
            "sources": list(SOURCES),
            "shorter_side": list(shorter),
            "quality": QUALITY,
            "scikit_image": version,
            "pillow": Image.__version__,
            "files": rows,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():  # an incomplete or older set: replaced
            shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not is_complete(root, count, shorter):  # not another process's finished set
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root, True


# ---------------------------------------------------------------- the common pipeline


def _rrc_params(width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (scale (0.08, 1), ratio (3/4, 4/3)),
    with torch's global RNG as torchvision draws it: (top, left, height, width)."""
    area = height * width
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(0.08, 1.0).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,)).item())
            j = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif in_ratio > 4 / 3:
        h, w = height, round(height * (4 / 3))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class CommonPipeline(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """What most ImageNet training code does per image, as torchvision's ``ImageFolder``
    + ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()`` + ``ToTensor()`` +
    ``Normalize(mean, std)`` do it: full-size decode, crop then bilinear resize with
    Pillow, flip, float [0, 1] CHW, normalise, all in the worker."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        size: int = 224,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ) -> None:
        self.samples, self.size = samples, size
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with open(path, "rb") as f:  # torchvision's pil_loader
            img = Image.open(f).convert("RGB")
        top, left, h, w = _rrc_params(img.width, img.height)
        img = img.crop((left, top, left + w, top + h)).resize(
            (self.size, self.size), Image.Resampling.BILINEAR
        )
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # ToTensor
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))
        x = x.view(img.height, img.width, 3).permute(2, 0, 1).contiguous()
        x = x.to(dtype=torch.float32).div(255)
        # Normalize
        return x.sub_(self.mean).div_(self.std), label


def common_loader(
    samples: list[tuple[str, int]], batch_size: int, workers: int, seed: int = 0
) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    """The baseline's DataLoader: shuffled, default collate, ``workers`` processes."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        CommonPipeline(samples),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=g,
    )


def reduced_share(
    samples: list[tuple[str, int]], kind: str, size: int = 224, seed: int = 0
) -> float:
    """Share of the images our loader would decode at a reduced JPEG scale with training
    crop ``kind``: plans drawn as it draws them, from the headers alone."""
    from resnetlab.data.common import derive_seed
    from resnetlab.data.images import open_image, upright_size
    from resnetlab.data.transforms import plan_view

    reduced = 0
    for pos, (path, _) in enumerate(samples):
        with contextlib.suppress(OSError), open_image(path) as im:
            w, h = upright_size(im)
            rng = np.random.default_rng(derive_seed(seed, 0, 0, pos, 1))
            plan = plan_view(kind, w, h, rng, size)  # type: ignore[arg-type]
            reduced += min(w, h) >= 2 * plan.shorter(size)
    return reduced / max(1, len(samples))
