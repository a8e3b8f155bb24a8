"""Large-image training views (§3.4 scale augmentation and the random-resized crop) in
the streaming loader: deterministic for a seed whatever the worker count, uint8 until
the device, JPEGs decoded at a reduced scale only when the crop still has its pixels."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from resnetlab.data import (
    FolderSplit,
    Preprocessing,
    StreamingLoader,
    images,
    make_loader,
    open_dataset,
)
from resnetlab.data.common import InMemorySplit
from resnetlab.data.images import read_planned
from resnetlab.data.loader import _BatchBuffers, _collate, _FolderDataset, default_workers
from resnetlab.data.transforms import (
    PCA_EIGVAL,
    RRC_AREA,
    RRC_RATIO,
    CropPlan,
    crop_resize,
    lighting_shift,
    pca_lighting,
    rrc_plan,
    scale_plan,
    scale_range,
)
from resnetlab.errors import DataError

SIZE = 64  # crop side for the loader tests: fast, and drafts often on 300-400 px photos


def _photo(path: Path, w: int, h: int, seed: int, exif: Image.Exif | None = None) -> None:
    """A JPEG with smooth structure and noise, like a photo (not a flat colour)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200, yy / h * 200, (xx + yy) / (w + h) * 255], -1)
    arr = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90, **({"exif": exif} if exif else {}))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> FolderSplit:
    root = tmp_path_factory.mktemp("photos")
    samples = []
    for i in range(12):
        w, h = (400, 300) if i % 3 else (300, 420)
        path = root / "train" / f"c{i % 2}" / f"{i:02d}.jpg"
        _photo(path, w, h, i)
        samples.append((str(path), i % 2))
    return FolderSplit(samples, ["c0", "c1"], str(root / "train"))


def _pre(size: int = SIZE) -> Preprocessing:
    return Preprocessing(
        size=size, resize=size, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
    )


def _batches(split: FolderSplit, crop: str, workers: int, seed: int = 7) -> list[Any]:
    loader = StreamingLoader(
        split,
        4,
        train=True,
        preprocessing=_pre(),
        seed=seed,
        augment=crop,  # type: ignore[arg-type]
        workers=workers,
    )
    return [(x.clone(), y.clone()) for x, y in loader.epoch(1)]


@pytest.mark.parametrize("crop", ["scale", "rrc"])
def test_same_seed_same_batches_with_0_and_2_workers(photos: FolderSplit, crop: str) -> None:
    first = _batches(photos, crop, 0)
    assert len(first) == 3
    for x, y in first:
        assert x.shape == (4, 3, SIZE, SIZE) and x.dtype == torch.float32
        assert y.dtype == torch.int64
    for again in (_batches(photos, crop, 0), _batches(photos, crop, 2), _batches(photos, crop, 2)):
        assert all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again)
        )
    other = _batches(photos, crop, 0, seed=8)
    assert not torch.equal(first[0][0], other[0][0])


def test_workers_hand_over_uint8_and_lighting_separately(photos: FolderSplit) -> None:
    ds = _FolderDataset(photos, "scale", SIZE, SIZE)
    items = [ds[(i, 0, 0, 0, i)] for i in range(4)]
    x, _, light, errors = _collate(items)
    assert x.dtype == torch.uint8 and x.shape == (4, 3, SIZE, SIZE) and not errors
    assert light is not None and light.shape == (4, 3) and light.dtype == torch.float32
    rrc = _collate([_FolderDataset(photos, "rrc", SIZE, SIZE)[(0, 0, 0, 0, 0)]])
    assert rrc[0].dtype == torch.uint8 and rrc[2] is None  # no colour augmentation


def test_channels_last_and_batches_kept_by_the_caller_stay_intact(photos: FolderSplit) -> None:
    loader = StreamingLoader(
        photos, 4, train=True, preprocessing=_pre(), augment="rrc", workers=0, channels_last=True
    )
    kept = list(loader.epoch(0))  # every batch held at once: none may be reused
    one_by_one = [x.clone() for x, _ in loader.epoch(0)]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in kept)
    assert all(torch.equal(a, b) for (a, _), b in zip(kept, one_by_one))
    assert len({x.data_ptr() for x, _ in kept}) == len(kept)


def test_batch_buffers_reused_only_when_free() -> None:
    pool = _BatchBuffers()
    shape, fmt = torch.Size([2, 3, 4, 4]), torch.contiguous_format
    a = pool.take(shape, fmt)
    ptr = a.data_ptr()
    held = pool.take(shape, fmt)  # a is still held: a new buffer
    assert held.data_ptr() != ptr
    del a
    b = pool.take(shape, fmt)
    assert b.data_ptr() == ptr  # dropped: reused
    w = torch.ones(4, 1, requires_grad=True)
    loss = (b @ w).sum()  # autograd keeps b for the backward pass
    del b
    assert pool.take(shape, fmt).data_ptr() != ptr
    loss.backward()
    del loss
    assert pool.take(shape, fmt).data_ptr() == ptr


def test_scale_plan_shorter_side_in_256_480() -> None:
    """§3.4: the shorter side is resized to a random size in [256, 480] (both ends
    reached), then a 224 crop of that resized image is taken."""
    rng = np.random.default_rng(0)
    sides = []
    for _ in range(2000):
        w, h = (int(v) for v in rng.integers(100, 1500, 2))
        plan = scale_plan(w, h, rng)
        sides.append(plan.side)
        assert 256 <= plan.side <= 480
        left, top, right, bottom = plan.box
        assert 0 <= left < right <= w + 1e-6 and 0 <= top < bottom <= h + 1e-6
        # the box is 224 pixels of the image resized to that shorter side
        f = plan.side / min(w, h)
        assert math.isclose((right - left) * f, 224, rel_tol=0.01)
        assert math.isclose((bottom - top) * f, 224, rel_tol=0.01)
    assert min(sides) == 256 and max(sides) == 480
    assert scale_range(224) == (256, 480) and scale_range(112) == (128, 240)


def test_rrc_plan_area_and_ratio_in_bounds() -> None:
    rng = np.random.default_rng(1)
    for _ in range(2000):
        w, h = (int(v) for v in rng.integers(50, 1200, 2))
        plan = rrc_plan(w, h, rng)
        left, top, right, bottom = plan.box
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        bw, bh = right - left, bottom - top
        if max(w / h, h / w) > 2 and (bw == w or bh == h):
            continue  # the central fallback of a very elongated image
        # rounding to whole pixels moves area and aspect a little on small crops
        tol = 2.5 / min(bw, bh)
        assert RRC_AREA[0] * (1 - 2 * tol) <= bw * bh / (w * h) <= RRC_AREA[1]
        assert RRC_RATIO[0] * (1 - tol) <= bw / bh <= RRC_RATIO[1] * (1 + tol)


def test_pca_lighting_changes_colour_but_keeps_the_mean() -> None:
    rng = np.random.default_rng(2)
    shifts = np.stack([lighting_shift(rng.normal(0, 0.1, 3)) for _ in range(5000)])
    assert np.abs(shifts).max() < 0.15  # ~6 sigma of the largest eigenvalue's 0.022
    assert np.abs(shifts.mean(0)).max() < 0.002  # zero-mean over draws
    # along the first eigenvector: a mostly-brightness shift of std 0.1 * 0.2175
    assert math.isclose(float(shifts.std(0).mean()), 0.1 * PCA_EIGVAL[0] * 0.58, rel_tol=0.1)
    img = np.full((3, 8, 8), 128, np.uint8)
    lit = pca_lighting(img, np.random.default_rng(3))
    assert not np.array_equal(lit, img) and abs(float(lit.mean()) - 128) < 40
    # the loader adds the shift on the device, before normalisation: exactly shift / std
    pre = _pre(8)
    loader = StreamingLoader(
        FolderSplit([("x", 0)], ["a"]), 1, train=True, preprocessing=pre, workers=0
    )
    x = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    shift = torch.tensor([[0.02, -0.01, 0.005], [0.0, 0.0, 0.0]])
    plain = loader.normalise(x).clone()
    lit_t = loader.normalise(x, shift)
    std = torch.tensor(pre.std).view(3, 1, 1)
    assert torch.allclose(
        lit_t - plain, (shift[:, :, None, None] / std).expand_as(plain), atol=1e-5
    )


def test_draft_decodes_reduced_only_when_the_crop_keeps_its_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.jpg"
    _photo(path, 1600, 1200, 0)
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: Any, size: Any) -> Any:
        before = self.size
        out = original(self, mode, size)
        calls.append((before, self.size))
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    # a crop of 1000x800 px to 224: decoded at 1/4 (400x300 of the image, box 250x200 >= 224)
    big = CropPlan(1600, 1200, (100, 100, 1100, 900), False)
    assert big.shorter(224) == math.ceil(1200 * 224 / 800)
    im, _ = read_planned(path, "RGB", lambda w, h: big, lambda p: p.shorter(224))
    assert calls[-1] == ((1600, 1200), (800, 600)) and im.size == (800, 600)
    reduced = crop_resize(im, big, 224)
    assert reduced.shape == (3, 224, 224)
    # the same region as from the full-size decode: the box is mapped, not shifted
    full = crop_resize(read_planned(path, "RGB", lambda w, h: big, lambda p: 0)[0], big, 224)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 1.5  # 40 px off: 3.7
    # a 300x300 crop needs full resolution: no draft
    small = CropPlan(1600, 1200, (0, 0, 300, 300), False)
    n = len(calls)
    im, _ = read_planned(path, "RGB", lambda w, h: small, lambda p: p.shorter(224))
    assert im.size == (1600, 1200) and len(calls) == n
    # §3.4 through the loader's dataset (libjpeg-turbo's decoder, with the DCT scale
    # Pillow's draft would choose): shorter side drawn in [256, 480] <= 600, so every
    # view of this 1600x1200 photo is decoded at 1/2 (800x600) or less
    scales: list[int] = []
    choose = images._draft_scale

    def scale_spy(width: int, height: int, shorter: int | None) -> int:
        scales.append(choose(width, height, shorter))
        return scales[-1]

    monkeypatch.setattr(images, "_draft_scale", scale_spy)
    ds = _FolderDataset(FolderSplit([(str(path), 0)], ["a"]), "scale", 224, 256)
    for pos in range(6):
        arr, _, err, _ = ds[(0, 0, 0, 0, pos)]
        assert err == "" and arr.shape == (3, 224, 224) and arr.dtype == np.uint8
    assert len(scales) == 6 and all(s >= 2 for s in scales)
    # rrc through the dataset: reduced only when the crop still has >= 224 px each way
    scales.clear()
    ds = _FolderDataset(FolderSplit([(str(path), 0)], ["a"]), "rrc", 224, 256)
    for pos in range(40):
        ds[(0, 0, 0, 0, pos)]
    assert len(scales) == 40 and 0 < sum(s > 1 for s in scales) < 40  # small crops: full size
    # the scale chosen is Pillow's draft's, for any request
    for shorter in (0, 100, 224, 300, 399, 400, 401, 600, 601, 1200):
        with Image.open(path) as im:
            if shorter and 2 * shorter <= 1200:  # as ``images._draft``
                im.draft("RGB", (shorter, shorter))
            assert -(-1600 // choose(1600, 1200, shorter)) == im.size[0], shorter


def test_exif_orientation_planned_on_the_upright_photo(tmp_path: Path) -> None:
    """A sideways-stored portrait (EXIF 6): the plan sees the upright size."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    _photo(path, 1200, 900, 1, exif)  # stored 1200 wide, upright 900 x 1200
    seen: list[tuple[int, int]] = []

    def plan(w: int, h: int) -> CropPlan:
        seen.append((w, h))
        return CropPlan(w, h, (0, 0, w, h), False)

    im, _ = read_planned(path, "RGB", plan, lambda p: p.shorter(224))
    assert seen == [(900, 1200)] and im.size[0] < im.size[1]  # upright, decoded at 1/4
    assert im.size == (225, 300)


def test_train_crop_option_and_image_size(tmp_path: Path, photos: FolderSplit) -> None:
    pre = _pre()
    loader = make_loader(photos, 4, train=True, preprocessing=pre, workers=0, train_crop="rrc")
    assert isinstance(loader, StreamingLoader) and loader.dataset.augment == "rrc"
    default = make_loader(photos, 4, train=True, preprocessing=pre, workers=0)
    assert isinstance(default, StreamingLoader) and default.dataset.augment == "scale"
    off = make_loader(photos, 4, train=True, augment=False, preprocessing=pre, workers=0)
    assert isinstance(off, StreamingLoader) and off.dataset.augment is None
    with pytest.raises(DataError, match="unknown training crop"):
        make_loader(photos, 4, train=True, preprocessing=pre, train_crop="x")  # type: ignore[arg-type]
    small = InMemorySplit(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4), ["a"])
    with pytest.raises(DataError, match="for large images"):
        make_loader(small, 2, train=True, preprocessing=_pre(8), train_crop="rrc")
    # image_size: the crop side of a large-image folder; eval resizes to 256/224 of it
    root = Path(photos.root).parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = open_dataset(root, data_dir=tmp_path, image_size=96)
        assert b.image_size == 96 and not b.in_memory
        p = b.preprocessing("channel")
        assert (p.size, p.resize) == (96, 110)
        assert open_dataset(root, data_dir=tmp_path).image_size == 224
    with pytest.raises(DataError, match="large-image folders"):
        tiny = tmp_path / "tiny"
        for c in ("a", "b"):
            (tiny / "train" / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(tiny / "train" / c / "0.png")
        open_dataset(tiny, data_dir=tmp_path, image_size=32)


def test_default_workers_follow_the_cores() -> None:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers() == max(1, min(8, cores or 1))
