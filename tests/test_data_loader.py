"""Loaders: determinism and exact resume, distributed slicing, eval sharding, the
augmentation's semantics (§4.2), normalisation, 10-crop, and the streaming path (§3.4)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import write_folder
from PIL import Image

from resnetlab.data import (
    DataWarning,
    FolderSplit,
    InMemorySplit,
    Preprocessing,
    crop_flip,
    crop_flip_params,
    make_loader,
    multiscale_views,
    open_dataset,
    ten_crop,
    ten_crop_view,
    train_view,
)
from resnetlab.errors import DataError

RAW = Preprocessing(mean=[0.0, 0.0, 0.0], std=[1 / 255] * 3)  # output = raw uint8 values


def _split(n: int = 50, c: int = 3, h: int = 8, w: int = 8) -> InMemorySplit:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # identity stamp (pixel 0,0)
    return InMemorySplit(images, torch.arange(n) % 5, [f"c{i}" for i in range(5)])


def _collect(it: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in it]  # type: ignore[attr-defined]


def test_train_deterministic_and_resume_exact() -> None:
    s = _split()
    kw = dict(train=True, preprocessing=RAW, seed=7)
    a = _collect(make_loader(s, 8, **kw).epoch(3))  # type: ignore[arg-type]
    b = _collect(make_loader(s, 8, **kw).epoch(3))  # type: ignore[arg-type]
    assert len(a) == 6 == len(make_loader(s, 8, **kw))  # type: ignore[arg-type]
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    resumed = _collect(make_loader(s, 8, **kw).epoch(3, start_batch=4))  # type: ignore[arg-type]
    assert len(resumed) == 2
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a[4:], resumed)
    )
    other_epoch = _collect(make_loader(s, 8, **kw).epoch(4))  # type: ignore[arg-type]
    assert not torch.equal(other_epoch[0][1], a[0][1])
    other_seed = _collect(make_loader(s, 8, train=True, preprocessing=RAW, seed=8).epoch(3))
    assert not torch.equal(other_seed[0][1], a[0][1])
    # each epoch sees every image at most once; drop_last drops the 2 leftovers
    ys = torch.cat([y for _, y in a])
    assert (
        len(ys) == 48
        and len(make_loader(s, 8, train=True, preprocessing=RAW, drop_last=False)) == 7
    )


def test_labels_travel_with_their_images() -> None:
    s = _split()
    for x, y in make_loader(s, 16, train=True, preprocessing=RAW, augment=False).epoch(0):
        ids = x[:, 0, 0, 0].long()
        assert torch.equal(s.labels[ids], y)
        assert torch.equal(s.images[ids].float(), x)


@pytest.mark.parametrize("world", [2, 4])
def test_distributed_ranks_slice_the_global_batch(world: int) -> None:
    s = _split(n=70)
    kw = dict(train=True, preprocessing=RAW, seed=1, drop_last=False)
    single = _collect(make_loader(s, 16, **kw).epoch(2))  # type: ignore[arg-type]
    ranks = [
        _collect(make_loader(s, 16, rank=r, world_size=world, **kw).epoch(2)) for r in range(world)
    ]  # type: ignore[arg-type]
    assert all(len(r) == len(single) for r in ranks)
    for b, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([r[b][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[b][1] for r in ranks]), y)
    assert [len(r[0][1]) for r in ranks] == [16 // world] * world
    with pytest.raises(DataError, match="not divisible by world size"):
        make_loader(s, 10, train=True, preprocessing=RAW, world_size=4)
    with pytest.raises(DataError, match="rank 4"):
        make_loader(s, 16, train=True, preprocessing=RAW, rank=4, world_size=4)


@pytest.mark.parametrize(("n", "world", "batch"), [(50, 1, 8), (50, 3, 9), (7, 4, 4), (3, 4, 4)])
def test_eval_ordered_unaugmented_sharded_exactly_once(n: int, world: int, batch: int) -> None:
    s = _split(n=n)
    seen = []
    for r in range(world):
        loader = make_loader(s, batch, train=False, preprocessing=RAW, rank=r, world_size=world)
        batches = _collect(loader.epoch(5))
        assert len(batches) == len(loader)
        for x, y in batches:
            ids = x[:, 0, 0, 0].long()
            assert torch.equal(s.images[ids].float(), x) and torch.equal(s.labels[ids], y)
            seen.extend(ids.tolist())
    assert seen == list(range(n))  # contiguous shards in rank order: ordered, complete, once


def test_crop_flip_semantics() -> None:
    s = _split(n=64, h=6, w=7)
    loader = make_loader(s, 64, train=True, preprocessing=RAW, augment=True, flip=False, seed=3)
    dy, dx, _ = crop_flip_params(64, 4, False, torch.Generator().manual_seed(0))
    assert int(dy.min()) >= 0 and int(dy.max()) <= 8 and int(dx.max()) <= 8
    ((x, y),) = list(loader.epoch(0))
    # recover every image as a shifted copy with zero borders; offsets cover [0, 8]
    offsets = set()
    for out, lab in zip(x.to(torch.uint8), y):
        matches = []
        for src in s.images[s.labels == lab]:
            padded = torch.nn.functional.pad(src, (4, 4, 4, 4))
            for oy in range(9):
                for ox in range(9):
                    if torch.equal(padded[:, oy : oy + 6, ox : ox + 7], out):
                        matches.append((oy, ox))
        assert matches, "output is not a zero-padded shift of any input"
        offsets.add(matches[0])
    assert len(offsets) > 20
    # with flips on, about half the images are mirrored
    img = s.images[:1].expand(200, -1, -1, -1)
    dy = torch.full((200,), 4)
    fl = torch.rand(200, generator=torch.Generator().manual_seed(1)) < 0.5
    out = crop_flip(img, dy, dy, fl, 4)
    assert torch.equal(out[fl], img[fl].flip(-1)) and torch.equal(out[~fl], img[~fl])
    # pad=0: pure flip
    assert torch.equal(
        crop_flip(
            img[:2],
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, dtype=torch.long),
            torch.tensor([True, False]),
            0,
        )[0],
        img[0].flip(-1),
    )


def test_normalisation_pixel_and_channel_and_layout() -> None:
    s = _split(n=16)
    mean_img = torch.rand(3, 8, 8)
    pre = Preprocessing(size=8, mean=mean_img.tolist(), std=[1.0, 1.0, 1.0])
    x, _ = next(iter(make_loader(s, 16, train=False, preprocessing=pre).epoch(0)))
    assert torch.allclose(x, s.images.float() / 255 - mean_img, atol=1e-6)
    assert x.dtype == torch.float32
    pre = Preprocessing(size=8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    x, _ = next(
        iter(make_loader(s, 16, train=False, preprocessing=pre, channels_last=True).epoch(0))
    )
    assert torch.allclose(x, pre.normalize(s.images), atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(DataError, match="per-pixel mean is"):
        make_loader(
            s, 4, train=True, preprocessing=Preprocessing(mean=torch.zeros(3, 4, 4).tolist())
        )
    with pytest.raises(DataError, match="1 channel"):
        make_loader(s, 4, train=True, preprocessing=Preprocessing(mode="L", mean=[0.0], std=[1.0]))


def test_ten_crop_small_images() -> None:
    s = _split(n=3)
    v = ten_crop(s.images, 8, pad=4)
    assert v.shape == (3, 10, 3, 8, 8)
    padded = torch.nn.functional.pad(s.images, (4, 4, 4, 4))
    assert torch.equal(v[:, 0], padded[:, :, :8, :8])  # top-left corner
    assert torch.equal(v[:, 3], padded[:, :, 8:, 8:])  # bottom-right corner
    assert torch.equal(v[:, 4], s.images)  # center = the original image
    assert torch.equal(v[:, 5:], v[:, :5].flip(-1))


def test_streaming_loader(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "big", ["a", "b", "c"], per_class=3, size=70, splits=("train", "val")
    )
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    b = open_dataset(root, data_dir=tmp_path / "c")
    assert isinstance(b.train, FolderSplit)
    pre = Preprocessing(size=224, resize=256, mean=[0.0, 0.0, 0.0], std=[1 / 255] * 3)
    kw = dict(train=True, preprocessing=pre, seed=2, workers=0, drop_last=False)
    with pytest.warns(DataWarning, match="skipped 1 unreadable image"):
        full = _collect(make_loader(b.train, 4, **kw).epoch(1))  # type: ignore[arg-type]
    assert sum(len(y) for _, y in full) == 9  # 10 files, the broken one skipped
    assert full[0][0].shape[1:] == (3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        resumed = _collect(make_loader(b.train, 4, **kw).epoch(1, start_batch=1))  # type: ignore[arg-type]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(full[1:], resumed))
    with warnings.catch_warnings():  # two ranks, worker processes: same rows as one process
        warnings.simplefilter("ignore", DataWarning)
        ranks = [
            _collect(make_loader(b.train, 4, rank=r, world_size=2, **{**kw, "workers": 1}).epoch(1))
            for r in range(2)
        ]  # type: ignore[arg-type]
    assert torch.equal(torch.cat([ranks[0][0][0], ranks[1][0][0]]), full[0][0])
    with pytest.raises(DataError, match="found 1 unreadable image"):
        _collect(make_loader(b.train, 4, strict=True, **kw).epoch(1))  # type: ignore[arg-type]
    assert b.val is not None
    ev = _collect(make_loader(b.val, 4, train=False, preprocessing=pre, workers=0).epoch(0))
    assert torch.cat([y for _, y in ev]).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_large_image_views() -> None:
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    rng = np.random.default_rng(0)
    v = train_view(im, rng)
    assert v.shape == (3, 224, 224) and v.dtype == np.uint8
    tc = ten_crop_view(im)
    assert tc.shape == (10, 3, 224, 224)
    assert np.array_equal(tc[5:], tc[:5, :, :, ::-1])
    ms = multiscale_views(im)
    assert [tuple(t.shape[-2:]) for t in ms] == [
        (224, 299),
        (256, 341),
        (384, 512),
        (480, 640),
        (640, 853),
    ]
    assert all(t.shape[0] == 2 for t in ms)


def _flipped_by_image(loader: object, epoch: int, w: int) -> dict[int, bool]:
    """{image id: mirrored?} from the identity stamp (pixel 0,0 moves to column w-1)."""
    seen = {}
    for x, _ in loader.epoch(epoch):  # type: ignore[attr-defined]
        for img in x:
            left, right = int(img[0, 0, 0]), int(img[0, 0, w - 1])
            stamp_left = left < 50  # stamps are 0..49; the other pixels were drawn from 1..255
            seen[left if stamp_left else right] = not stamp_left
    return seen


def test_alternating_flip_mirrors_each_image_every_other_epoch() -> None:
    s = _split(n=48)
    s.images[:, 0, 0, 7] = 200  # so the stamp is told apart from the far column
    loader = make_loader(s, 8, train=True, preprocessing=RAW, seed=3, pad=0, flip="alternate")
    e0, e1, e2, e3 = (_flipped_by_image(loader, e, 8) for e in range(4))
    assert sorted(e0) == list(range(48))
    assert 12 < sum(e0.values()) < 36  # epoch 0: a random half, drawn once per run
    assert all(e1[i] != e0[i] and e2[i] == e0[i] and e3[i] == e1[i] for i in range(48))
    # the random flips of the same seed differ from epoch to epoch for some image
    rand = make_loader(s, 8, train=True, preprocessing=RAW, seed=3, pad=0)
    r0, r2 = _flipped_by_image(rand, 0, 8), _flipped_by_image(rand, 2, 8)
    assert any(r0[i] != r2[i] for i in range(48))
    # two ranks together see exactly what one process sees
    ranks = [
        make_loader(
            s,
            8,
            train=True,
            preprocessing=RAW,
            seed=3,
            pad=0,
            flip="alternate",
            rank=r,
            world_size=2,
        )
        for r in range(2)
    ]
    assert {**_flipped_by_image(ranks[0], 1, 8), **_flipped_by_image(ranks[1], 1, 8)} == e1
    with pytest.raises(DataError, match="flip must be"):
        make_loader(s, 8, train=True, preprocessing=RAW, flip="sometimes")  # type: ignore[arg-type]
