"""One image-loading implementation: ``predict`` (Preprocessing.load), the small-image
decoder behind the in-memory datasets and the streaming loader give the same pixels for
the same file: 16-bit PNGs scaled, EXIF orientation applied, every mode converted."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import (
    DataWarning,
    FolderSplit,
    InMemorySplit,
    Preprocessing,
    images,
    open_dataset,
)
from resnetlab.data.common import derive_seed
from resnetlab.data.folder import _decode_small
from resnetlab.data.images import DECODE_ERRORS, read_image, read_planned, read_planned_rgb, to_mode
from resnetlab.data.loader import _FolderDataset
from resnetlab.data.transforms import (
    CropPlan,
    crop_resize,
    eval_view,
    rrc_plan,
    scale_plan,
    scale_range,
)

PRE = Preprocessing(size=16, mean=[0.0] * 3, std=[1.0] * 3)


def _streamed(path: Path, size: int, resize: int, augment: bool = False) -> np.ndarray:
    ds = _FolderDataset(FolderSplit([(str(path), 0)], ["a"]), augment, size, resize)
    arr, label, err, _lighting = ds[(0, 3, 1, 2, 0)]
    assert err == "" and label == 0
    assert isinstance(arr, np.ndarray)
    return arr


def _decoded(path: Path, size: int) -> np.ndarray:
    arr, _ = _decode_small(str(path), size)
    return arr


def test_16bit_png_same_and_right_through_every_path(tmp_path: Path) -> None:
    """65535 -> 255 and 257*k -> k: Pillow's own convert() clips every value over 255 to
    white, which is what predict did (38% vs 100% for the same picture)."""
    levels = np.array([0, 257 * 10, 257 * 100, 32896, 65535], np.uint16)  # 32896 = 257*128
    arr = np.tile(np.repeat(levels, 4)[None], (20, 1))  # 20 x 20, five vertical bands
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    want = np.repeat(np.array([0, 10, 100, 128, 255], np.uint8), 4)
    predicted = Preprocessing(size=20, mean=[0.0] * 3, std=[1.0] * 3).load(path).numpy()
    assert predicted.shape == (3, 20, 20)
    assert (predicted == want[None, None, :]).all()
    assert np.array_equal(predicted, _decoded(path, 20))
    assert np.array_equal(predicted, _streamed(path, 20, 20))
    grey = Preprocessing(mode="L", size=20, mean=[0.0], std=[1.0]).load(path).numpy()
    assert grey.shape == (1, 20, 20) and np.array_equal(grey[0], predicted[0])
    # a dark 16-bit image (every value <= 255) is still on the 16-bit scale
    Image.fromarray(np.full((8, 8), 255, np.uint16)).save(tmp_path / "dark.png")
    assert int(PRE.load(tmp_path / "dark.png").max()) == 1
    # 32-bit "I" images (TIFF, older Pillow's 16-bit PNG) likewise
    i32 = Image.fromarray(np.full((4, 4), 65535, np.int32), "I")
    assert np.asarray(to_mode(i32, "RGB")).min() == 255


def _upright_and_stored(orientation: int) -> tuple[Image.Image, Image.Image]:
    """An upright 30 x 48 (w x h) picture, red top half over blue bottom half with a
    green left edge, and the sideways pixels a camera stores with ``orientation``."""
    up = np.zeros((48, 30, 3), np.uint8)
    up[:24, :, 0] = 220
    up[24:, :, 2] = 220
    up[:, :5, 1] = 200
    upright = Image.fromarray(up)
    inverse = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(inverse)
    return upright, stored


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_exif_orientation_6_loaded_upright_by_every_path(tmp_path: Path, fmt: str) -> None:
    upright, stored = _upright_and_stored(6)
    assert stored.size == (48, 30)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / f"portrait.{fmt}"
    stored.save(path, exif=exif, **({"quality": 95} if fmt == "jpg" else {}))
    im = read_image(path)
    assert im.size == (30, 48)  # upright: taller than wide
    px = np.asarray(im).astype(int)
    assert px[2, 15, 0] > 150 and px[45, 15, 2] > 150 and px[24, 1, 1] > 150  # red top, green left
    if fmt == "png":  # lossless: exactly the upright picture
        assert np.array_equal(np.asarray(im), np.asarray(upright))
    expected = eval_view(im, 30, 30)  # shorter side 30: the middle 30 rows
    pre = Preprocessing(size=30, mean=[0.0] * 3, std=[1.0] * 3)
    assert np.array_equal(pre.load(path).numpy(), expected)  # predict
    assert np.array_equal(_decoded(path, 30), expected)  # in-memory decoder
    assert np.array_equal(_streamed(path, 30, 30), expected)  # streaming eval
    rng = np.random.default_rng(derive_seed(3, 1, 2, 0, 1))  # the streaming training view
    plan = scale_plan(im.width, im.height, rng, scale=scale_range(30), crop=30)
    assert np.array_equal(_streamed(path, 30, 30, augment=True), crop_resize(im, plan, 30))


def test_orientation_applied_in_folder_dataset(tmp_path: Path) -> None:
    """An in-memory class-folder dataset holds the picture upright too."""
    _, stored = _upright_and_stored(8)
    exif = Image.Exif()
    exif[0x0112] = 8
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = tmp_path / "ds" / split / cls
            d.mkdir(parents=True)
            stored.save(d / "0.png", exif=exif)
    with pytest.warns(DataWarning, match="center-cropped 2 image"):  # 30 x 48, not square
        b = open_dataset(tmp_path / "ds", data_dir=tmp_path / "cache")
    assert isinstance(b.train, InMemorySplit)
    x = b.train.images[0]  # 30 x 30 centre of the 30 x 48 upright picture
    assert x.shape == (3, 30, 30)
    assert int(x[0, 2, 15]) > 150 and int(x[2, 27, 15]) > 150  # red above blue
    assert int(x[1, 15, 1]) > 150  # green on the left


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (8, 8), (10, 20, 30, 128)),
        lambda: Image.new("LA", (8, 8), (77, 0)),
        lambda: Image.new("1", (8, 8), 1),
        lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
        lambda: Image.new("P", (8, 8), 3),
        lambda: Image.new("L", (8, 8), 99),
    ],
    ids=["RGBA", "LA", "1", "CMYK", "P", "L"],
)
def test_modes_same_through_every_path(tmp_path: Path, make: object) -> None:
    im = make()  # type: ignore[operator]
    path = tmp_path / ("x.jpg" if im.mode == "CMYK" else "x.png")
    im.save(path, **({"quality": 100} if im.mode == "CMYK" else {}))
    via_predict = Preprocessing(size=8, mean=[0.0] * 3, std=[1.0] * 3).load(path).numpy()
    assert np.array_equal(via_predict, _decoded(path, 8))
    assert np.array_equal(via_predict, _streamed(path, 8, 8))
    want = {
        "RGBA": [10, 20, 30],  # alpha dropped, as torchvision's loader does
        "LA": [77, 77, 77],
        "1": [255, 255, 255],
        "L": [99, 99, 99],
    }.get(im.mode)
    if want is not None:
        assert via_predict[:, 4, 4].tolist() == want
    if im.mode == "CMYK":  # magenta + yellow ink: red
        r, g, b = via_predict[:, 4, 4].tolist()
        assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_converts_without_warning(tmp_path: Path) -> None:
    p = Image.new("P", (8, 8), 3)
    p.putpalette([0, 0, 0] * 3 + [40, 50, 60] + [0, 0, 0] * 252)
    p.save(tmp_path / "t.png", transparency=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = Preprocessing(size=8, mean=[0.0] * 3, std=[1.0] * 3).load(tmp_path / "t.png")
    assert x[:, 0, 0].tolist() == [40, 50, 60]


def test_large_jpeg_same_tensor_for_predict_and_streaming_eval(tmp_path: Path) -> None:
    """A JPEG over twice the resize is decoded at a reduced scale (draft) by both."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (130, 170, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=90)
    pre = Preprocessing(size=32, resize=40, mean=[0.5] * 3, std=[0.25] * 3)
    via_predict = pre.load(tmp_path / "big.jpg")
    assert via_predict.shape == (3, 32, 32)
    assert torch.equal(via_predict, torch.from_numpy(_streamed(tmp_path / "big.jpg", 32, 40)))


def _jpeg(path: Path, w: int, h: int, seed: int, orientation: int = 1, **save: object) -> None:
    """A photo-like JPEG stored ``w`` x ``h`` (smooth gradients, edges and noise, so a
    wrong crop, turn or mirror shows), with EXIF ``orientation``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 230, yy / h * 230, ((xx // 23 + yy // 31) % 2) * 200], -1)
    arr = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=90, exif=exif, **save)  # type: ignore[arg-type]


def _both(path: Path, plan: CropPlan, size: int) -> tuple[np.ndarray | Image.Image, Image.Image]:
    """(the training decoder's pixels, Pillow's image) of ``path`` for ``plan``."""
    a, _ = read_planned_rgb(path, lambda w, h: plan, lambda p: p.shorter(size))
    b, _ = read_planned(path, "RGB", lambda w, h: plan, lambda p: p.shorter(size))
    return a, b


@pytest.mark.parametrize("orientation", range(1, 9))
def test_turbo_decoded_crops_match_pillow(tmp_path: Path, orientation: int) -> None:
    """The training crops' JPEG decoder (libjpeg-turbo straight to an array) against
    Pillow's: every EXIF orientation, odd sizes, 4:4:4 / 4:2:2 / 4:2:0 chroma, a
    progressive and a greyscale file, a draft-reduced scale. Same upright pixels, same
    crops (the mirror included); a wrong turn, box or scale is tens of levels off."""
    cases = [
        (333, 217, {}),
        (301, 405, {"subsampling": 0}),
        (250, 371, {"subsampling": 1, "progressive": True}),
        (1001, 745, {}),  # crops of 224 from it decode at 1/2
    ]
    reduced = 0
    for i, (w, h, save) in enumerate(cases):
        path = tmp_path / f"{i}.jpg"
        _jpeg(path, w, h, i, orientation, **save)
        pillow = np.asarray(read_image(path))
        turbo, _ = read_planned_rgb(path, lambda w, h: None, lambda p: 0)
        assert isinstance(turbo, np.ndarray), "fell back to Pillow"
        assert turbo.shape == pillow.shape  # upright: orientations 5-8 swap the sides
        assert np.abs(turbo.astype(int) - pillow).mean() < 0.5
        rng = np.random.default_rng(i)
        size = 224 if w > 1000 else 96
        up_w, up_h = pillow.shape[1], pillow.shape[0]
        for k in range(6):
            if k % 2:  # random-resized crops of at least 30% of the area
                plan = rrc_plan(up_w, up_h, rng, area=(0.3, 1.0))
            else:
                plan = scale_plan(up_w, up_h, rng, scale=scale_range(size), crop=size)
            a, b = _both(path, plan, size)
            assert isinstance(a, np.ndarray) and a.shape[1::-1] == b.size  # same draft scale
            reduced += a.shape[0] < pillow.shape[0]
            diff = np.abs(crop_resize(a, plan, size).astype(int) - crop_resize(b, plan, size))
            assert diff.mean() < 0.5, (i, k, diff.mean())
    assert reduced  # the 1001 x 745 photo's crops decoded at 1/2 at least once
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.asarray(read_image(tmp_path / "0.jpg", "L"))).save(grey, quality=90)
    mpo = tmp_path / "phone.jpg"  # a JPEG with a second frame (MPO): its first frame
    with Image.open(tmp_path / "0.jpg") as first:
        first.save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    for path in (grey, mpo):
        turbo, _ = read_planned_rgb(path, lambda w, h: (w, h), lambda p: 0)
        assert isinstance(turbo, np.ndarray)
        assert np.array_equal(turbo, np.asarray(read_image(path)))


def test_turbo_decode_falls_back_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CMYK JPEGs, other formats, damaged files and a missing simplejpeg go through Pillow,
    with its pixels and its errors."""
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk, quality=95)
    png = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(png)
    for path in (cmyk, png):
        im, _ = read_planned_rgb(path, lambda w, h: None, lambda p: 0)
        assert isinstance(im, Image.Image) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), np.asarray(read_image(path)))
    photo = tmp_path / "p.jpg"
    _jpeg(photo, 120, 90, 0, 6)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:-400])  # truncated: Pillow's error, as before
    with pytest.raises(DECODE_ERRORS):
        read_planned_rgb(cut, lambda w, h: None, lambda p: 0)
    fast, _ = read_planned_rgb(photo, lambda w, h: None, lambda p: 0)
    monkeypatch.setattr(images, "simplejpeg", None)
    slow, _ = read_planned_rgb(photo, lambda w, h: None, lambda p: 0)
    assert isinstance(fast, np.ndarray) and isinstance(slow, Image.Image)
    assert slow.size == (90, 120) and np.abs(fast.astype(int) - np.asarray(slow)).mean() < 0.5


def test_turbo_header_path_plans_once_and_reads_exif_like_pillow(tmp_path: Path) -> None:
    """The training decoder reads a JPEG's size and EXIF orientation without Pillow: the
    first Exif APP1 segment wins even behind an XMP one (as in Pillow), the crop is
    planned exactly once on every path (its random draws must not repeat), and files
    Pillow has to open (CMYK, PNG, damaged) still get Pillow's pixels or errors."""
    photo = tmp_path / "p.jpg"
    _jpeg(photo, 150, 110, 1, 6)
    raw = photo.read_bytes()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>"
    segment = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    behind_xmp = tmp_path / "xmp.jpg"
    behind_xmp.write_bytes(raw[:2] + segment + raw[2:])
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk, quality=95)
    png = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(png)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(raw[:-400])
    for path in (photo, behind_xmp, cmyk, png, cut):
        calls: list[tuple[int, int]] = []

        def plan(w: int, h: int, calls: list[tuple[int, int]] = calls) -> int:
            calls.append((w, h))
            return 7

        try:
            got, planned = read_planned_rgb(path, plan, lambda p: 0)
        except DECODE_ERRORS:
            assert path == cut
        else:
            assert planned == 7
            assert np.array_equal(np.asarray(got), np.asarray(read_image(path))), path
        assert len(calls) == 1, (path, calls)
        assert path in (cmyk, png) or calls[0] == (110, 150)  # orientation 6: turned upright
