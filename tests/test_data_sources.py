"""Dataset sources: class folders (labels, bad files, cache), CIFAR archives, Fashion-MNIST IDX.

Every fixture is written by the test; each bad input has its own case and must end in
a converted image, a counted warning, or a one-line DataError, never a wrong label.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import (
    class_colour,
    label_of_pixels,
    write_cifar_archive,
    write_folder,
    write_idx,
)
from PIL import Image

from resnetlab.cli import main
from resnetlab.data import DataWarning, FolderSplit, InMemorySplit, holdout, open_dataset
from resnetlab.data import cifar as cifar_mod
from resnetlab.data.cifar import safe_unpickle
from resnetlab.data.datasets import fit_val_size
from resnetlab.data.download import safe_extract
from resnetlab.data.fmnist import load_fashion_mnist
from resnetlab.errors import DataError

CLASSES = ["cat", "airplane", "dog", "bird"]  # deliberately unsorted


def _labels_match_pixels(split: InMemorySplit) -> None:
    for img, lab in zip(split.images.numpy(), split.labels.tolist()):
        assert label_of_pixels(img) == lab


# ---------------------------------------------------------------- class folders


def test_folder_labels_follow_sorted_folder_names(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", CLASSES, per_class=3)
    b = open_dataset(root, data_dir=tmp_path / "cache")
    assert b.classes == sorted(CLASSES)
    assert b.in_memory and b.image_size == 8 and b.in_channels == 3
    assert isinstance(b.train, InMemorySplit) and isinstance(b.test, InMemorySplit)
    assert b.train.images.dtype == torch.uint8 and b.train.images.shape == (12, 3, 8, 8)
    assert b.train.images.is_contiguous() and b.val is None
    _labels_match_pixels(b.train)
    _labels_match_pixels(b.test)
    assert torch.equal(torch.bincount(b.train.labels), torch.full((4,), 3))


def test_folder_decode_cache_hit_and_invalidation(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=3)
    b1 = open_dataset(root, data_dir=tmp_path / "cache")
    caches = sorted((tmp_path / "cache" / "cache").glob("*.safetensors"))
    assert len(caches) == 2  # train and test
    b2 = open_dataset(root, data_dir=tmp_path / "cache")
    assert torch.equal(b1.train.images, b2.train.images)  # type: ignore[union-attr]
    # a changed folder is re-read: new file in class b
    arr = np.broadcast_to(class_colour(1), (8, 8, 3)).copy()
    Image.fromarray(arr).save(root / "train" / "b" / "999.png")
    b3 = open_dataset(root, data_dir=tmp_path / "cache")
    assert len(b3.train) == 7
    _labels_match_pixels(b3.train)  # type: ignore[arg-type]
    # a rewritten file (same name, new content and mtime) is re-read too
    f = root / "train" / "a" / "000.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(f)
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    b4 = open_dataset(root, data_dir=tmp_path / "cache")
    assert int(b4.train.images[0, 0, 4, 4]) == 7  # type: ignore[union-attr]


def test_folder_modes_converted_to_rgb(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=2)
    d = root / "train" / "a"
    Image.new("L", (8, 8), 100).save(d / "grey.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(d / "cmyk.jpg")
    Image.new("RGBA", (8, 8), (10, 20, 30, 128)).save(d / "rgba.png")
    Image.new("P", (8, 8), 3).save(d / "palette.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(d / "deep.png")  # I;16
    Image.new("RGB", (8, 8), (1, 2, 3)).save(d / "pic.bmp")
    b = open_dataset(root, data_dir=tmp_path / "c")
    assert len(b.train) == 4 + 6
    imgs = {int(i) for i in range(len(b.train)) if int(b.train.labels[i]) == 0}
    assert len(imgs) == 8
    x = b.train.images  # type: ignore[union-attr]
    names = sorted(p.name for p in d.iterdir())
    by_name = dict(zip(names, x[: len(names)]))
    assert by_name["grey.png"][:, 0, 0].tolist() == [100, 100, 100]
    assert by_name["rgba.png"][:, 0, 0].tolist() == [10, 20, 30]
    assert by_name["deep.png"][:, 0, 0].tolist() == [255, 255, 255]
    assert by_name["cmyk.jpg"][:, 4, 4].min() >= 250  # CMYK 0,0,0,0 is white


def test_truncated_corrupt_and_non_image_files_skipped_with_one_warning(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=3)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "JPEG")
    good = buf.getvalue()
    (root / "train" / "a" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    (root / "train" / "b" / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning, match=r"skipped 3 unreadable files \(first: .*") as rec:
        b = open_dataset(root, data_dir=tmp_path / "c")
    assert sum("unreadable" in str(w.message) for w in rec) == 1
    assert len(b.train) == 6
    assert b.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    _labels_match_pixels(b.train)  # type: ignore[arg-type]
    # cached: the same warning again, same data
    with pytest.warns(DataWarning, match="skipped 3 unreadable"):
        b2 = open_dataset(root, data_dir=tmp_path / "c")
    assert torch.equal(b2.train.labels, b.train.labels)
    with pytest.raises(DataError, match="found 3 unreadable files") as e:
        open_dataset(root, data_dir=tmp_path / "c2", strict=True)
    assert "\n" not in str(e.value)


def test_empty_class_folder_kept_and_warned(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "c"], per_class=2)
    (root / "train" / "b").mkdir()
    with pytest.warns(DataWarning, match="have no files .*first: b"):
        b = open_dataset(root, data_dir=tmp_path / "c")
    assert b.classes == ["a", "b", "c"]
    assert b.train.labels.tolist() == [0, 0, 2, 2]
    # test/ lacks "b" entirely: labels still by the training class list
    assert b.test is not None and b.test.labels.tolist() == [0, 0, 2, 2]


def test_wrong_size_image_in_small_set_resized_with_warning(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=4, size=8)
    big = np.broadcast_to(class_colour(1), (12, 20, 3)).copy()
    Image.fromarray(big).save(root / "train" / "b" / "big.png")
    with pytest.warns(DataWarning, match="resized and center-cropped 1 image"):
        b = open_dataset(root, data_dir=tmp_path / "c")
    assert b.train.images.shape == (9, 3, 8, 8)  # type: ignore[union-attr]
    _labels_match_pixels(b.train)  # type: ignore[arg-type]


def test_missing_split_empty_dataset_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        open_dataset("nope", data_dir=tmp_path)
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match=r"split folder not found: .*ds/train"):
        open_dataset(tmp_path / "ds", data_dir=tmp_path)
    (tmp_path / "ds" / "train").mkdir()
    with pytest.raises(DataError, match="no class folders in"):
        open_dataset(tmp_path / "ds", data_dir=tmp_path)
    (tmp_path / "ds" / "train" / "a").mkdir()
    (tmp_path / "ds" / "train" / "b").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # one error, no warning before it
        with pytest.raises(DataError, match=r"no images in .*train: .*\(a, b\) are empty"):
            open_dataset(tmp_path / "ds", data_dir=tmp_path)
    root = write_folder(tmp_path / "ds2", ["a", "b"], per_class=2, splits=("train",))
    (root / "test" / "zebra").mkdir(parents=True)
    with pytest.raises(DataError, match="class folder 'zebra' that the training split lacks"):
        open_dataset(root, data_dir=tmp_path)


def test_large_images_stream_with_224_and_val_folder(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "big", ["x", "y"], per_class=2, size=80, splits=("train", "val"), ext="jpg"
    )
    (root / "train" / "x" / "README").write_text("hi")
    with pytest.warns(DataWarning, match="skipped 1 non-image files"):
        b = open_dataset(root, data_dir=tmp_path / "c")
    assert not b.in_memory and b.image_size == 224
    assert isinstance(b.train, FolderSplit) and isinstance(b.val, FolderSplit) and b.test is None
    assert [lab for _, lab in b.train.samples] == [0, 0, 1, 1]
    assert all(Path(p).parent.name == b.classes[lab] for p, lab in b.train.samples)
    pre = b.preprocessing("pixel")
    assert pre.size == 224 and pre.resize == 256 and np.asarray(pre.mean).shape == (3, 224, 224)


def test_holdout_stratified_deterministic_disjoint(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b", "c"], per_class=20, size=4)
    b = open_dataset(root, data_dir=tmp_path / "c", val_size=6, seed=3)
    assert b.val is not None and len(b.val) == 6 and len(b.train) == 54
    assert b.val_held_out == 6 and b.notes == []  # a tenth fits exactly as asked
    assert torch.bincount(b.val.labels).tolist() == [2, 2, 2]
    again = open_dataset(root, data_dir=tmp_path / "c", val_size=6, seed=3)
    other = open_dataset(root, data_dir=tmp_path / "c", val_size=6, seed=4)
    assert torch.equal(again.val.images, b.val.images)  # type: ignore[union-attr]
    assert not torch.equal(other.val.images, b.val.images)  # type: ignore[union-attr]
    tr = {bytes(x.numpy()) for x in b.train.images}  # type: ignore[union-attr]
    va = {bytes(x.numpy()) for x in b.val.images}  # type: ignore[union-attr]
    assert not tr & va and len(tr | va) == 60
    with pytest.raises(
        DataError, match=r"validation size 60 \(--val-size\) must be between 1 and 59"
    ):
        holdout(open_dataset(root, data_dir=tmp_path / "c").train, 60, 0)


def test_small_folder_holds_out_a_tenth_with_a_note(tmp_path: Path) -> None:
    """The paper recipe's val_size=5000 on a 36-image folder used to be a dead end
    ("validation size 5000 must be between 1 and 35")."""
    root = write_folder(tmp_path / "ds", ["a", "b", "c"], per_class=12, size=4)
    b = open_dataset(root, data_dir=tmp_path / "c", val_size=5000, seed=1)
    assert b.val is not None and len(b.val) == 3 and len(b.train) == 33 and b.val_held_out == 3
    assert torch.bincount(b.val.labels).tolist() == [1, 1, 1]  # still stratified
    assert b.notes == [
        "holding out 3 of 36 training images for validation (a tenth, at least 1:"
        " --val-size 5000 would leave too few to train on; set --val-size 1 to 3, 0 for none)"
    ]
    # the same split every time: eval --split val rebuilds what the trainer held out
    again = open_dataset(root, data_dir=tmp_path / "c", val_size=5000, seed=1)
    assert torch.equal(again.val.images, b.val.images)  # type: ignore[union-attr]
    # as asked when it fits; none when 0 or when the folder has its own val/
    exact = open_dataset(root, data_dir=tmp_path / "c", val_size=2)
    assert len(exact.val) == 2 and exact.notes == [] and exact.val_held_out == 2  # type: ignore[arg-type]
    none = open_dataset(root, data_dir=tmp_path / "c", val_size=0)
    assert none.val is None and none.val_held_out == 0 and none.notes == []


def test_fit_val_size_keeps_the_paper_split_and_refuses_the_impossible() -> None:
    assert fit_val_size(50_000, 5000) == (5000, None)  # §4.2's 45k/5k, unchanged
    assert fit_val_size(50_000, 0) == (0, None)
    n, note = fit_val_size(49_999, 5000)
    assert n == 4999 and note is not None and "--val-size 5000" in note
    n, note = fit_val_size(2, 5000)  # two images: one held out, one to train on
    assert n == 1 and note is not None and note.endswith("set --val-size 0 for none)")
    with pytest.raises(
        DataError, match=r"--val-size 1 of ds: its training set has 1 .*--val-size 0"
    ):
        fit_val_size(1, 1, "ds")
    one = InMemorySplit(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1), ["a", "b"])
    with pytest.raises(DataError, match=r"--val-size"):
        holdout(one, 1, 0)


def test_one_class_folder_is_refused_before_decoding(tmp_path: Path) -> None:
    """A single class trained to a meaningless 100% before this check."""
    root = write_folder(tmp_path / "ds", ["cat"], per_class=3, splits=("train",))
    with pytest.raises(
        DataError, match=r"ds/train has 1 class folder \(cat\); a classifier needs at least 2"
    ) as e:
        open_dataset(root, data_dir=tmp_path / "c")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "c" / "cache").exists()  # found before any decoding
    # a second class folder with nothing in it is no better
    (root / "train" / "dog").mkdir()
    with pytest.raises(
        DataError, match=r"files in only 1 of its 2 class folders \(cat; empty: dog\)"
    ):
        open_dataset(root, data_dir=tmp_path / "c")
    # nor one whose every file is unreadable
    (root / "train" / "dog" / "x.png").write_bytes(b"\x89PNG broken")
    only_cat = r"readable images in only 1 class folder \(cat\)"
    with pytest.warns(DataWarning, match="skipped 1"), pytest.raises(DataError, match=only_cat):
        open_dataset(root, data_dir=tmp_path / "c")


def test_one_class_folder_is_one_cli_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "ds", ["cat"], per_class=2)
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "c"))
    monkeypatch.setattr("sys.argv", ["resnetlab", "bench", "data"])
    assert main(["bench", "data", "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "1 class folder (cat)" in err and "\n" not in err


def test_preprocessing_statistics(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=2, size=4)
    b = open_dataset(root, data_dir=tmp_path / "c")
    x = b.train.images.double() / 255  # type: ignore[union-attr]
    pix = b.preprocessing("pixel")
    assert np.allclose(np.asarray(pix.mean), x.mean(0).numpy()) and pix.std == [1.0, 1.0, 1.0]
    ch = b.preprocessing("channel")
    assert np.allclose(ch.mean, x.mean((0, 2, 3)).numpy())
    assert np.allclose(
        ch.std, x.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False).numpy(), atol=1e-6
    )
    with pytest.raises(DataError):
        b.preprocessing("bogus")  # type: ignore[arg-type]


# ---------------------------------------------------------------- CIFAR archives


def _use_archive(monkeypatch: pytest.MonkeyPatch, kind: str, path: Path) -> None:
    arc = cifar_mod.ARCHIVES[kind]
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(
        cifar_mod.ARCHIVES,
        kind,
        cifar_mod.Archive(path.name, md5, arc.folder, arc.train, arc.test, arc.meta),
    )


def test_cifar10_official_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = [i % 10 for i in range(23)]
    test = [9, 0, 3, 3]
    arc = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", train, test)
    _use_archive(monkeypatch, "cifar10", arc)
    b = open_dataset("cifar10", data_dir=tmp_path, download=False)
    assert b.classes[0] == "airplane" and len(b.classes) == 10 and b.image_size == 32
    assert (
        b.train.labels.tolist() == train and b.test is not None and b.test.labels.tolist() == test
    )
    _labels_match_pixels(b.train)  # type: ignore[arg-type]
    # channel-major rows: the R plane comes first
    assert b.train.images[3, :, 5, 5].tolist() == class_colour(3).tolist()  # type: ignore[union-attr]
    # second open reads the extracted folder (archive no longer needed)
    arc.unlink()
    assert len(open_dataset("cifar10", data_dir=tmp_path, download=False).train) == 23


def test_cifar100_fine_and_coarse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = [0, 5, 99, 42, 17], [98, 1]
    arc = write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar100", train, test)
    _use_archive(monkeypatch, "cifar100", arc)
    fine = open_dataset("cifar100", data_dir=tmp_path, download=False)
    assert len(fine.classes) == 100 and fine.classes[99] == "fine99"
    assert fine.train.labels.tolist() == train
    coarse = open_dataset("cifar100-coarse", data_dir=tmp_path, download=False)
    assert len(coarse.classes) == 20 and coarse.train.labels.tolist() == [t // 5 for t in train]
    assert coarse.test is not None and coarse.test.labels.tolist() == [19, 0]


def test_cifar_label_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = [1, 2, 10, 3, -1, 4]
    arc = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", train, [0])
    _use_archive(monkeypatch, "cifar10", arc)
    with pytest.warns(DataWarning, match=r"skipped 2 labels out of range \[0, 10\)"):
        b = open_dataset("cifar10", data_dir=tmp_path, download=False)
    assert b.train.labels.tolist() == [1, 2, 3, 4]
    _labels_match_pixels(b.train)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="2 labels out of range"):
        open_dataset("cifar10", data_dir=tmp_path, download=False, strict=True)


def test_cifar_missing_and_half_downloaded_archive(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"cifar-10-python.tar.gz not found; put it at .*cifar-10-python.tar.gz"
    ) as e:
        open_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "\n" not in str(e.value)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + b"0" * 100)  # half a download
    with pytest.raises(DataError, match="corrupt or incomplete"):
        open_dataset("cifar10", data_dir=tmp_path, download=False)


def test_cifar_truncated_archive_with_matching_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arc = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", [1] * 5, [0])
    arc.write_bytes(arc.read_bytes()[:300])
    _use_archive(monkeypatch, "cifar10", arc)
    with pytest.raises(DataError, match="cannot extract"):
        open_dataset("cifar10", data_dir=tmp_path, download=False)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil"
    p.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        safe_unpickle(p)
    # numpy arrays from any pickle protocol are fine
    for proto in (2, 4, 5):
        p.write_bytes(
            pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=proto)
        )
        assert safe_unpickle(p)[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "link"])
def test_safe_extract_refuses_members_outside_target(tmp_path: Path, name: str) -> None:
    arc = tmp_path / "bad.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if name == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="unsafe member"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sysdir = tmp_path / "system"
    write_idx(sysdir / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28)))
    write_idx(sysdir / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5, 9]))
    write_idx(sysdir / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (2, 28, 28)))
    write_idx(sysdir / "t10k-labels-idx1-ubyte.gz", np.array([7, 12]))
    with pytest.warns(DataWarning, match="skipped 1"):
        train, test, classes = load_fashion_mnist(
            tmp_path / "data", download=False, system_dir=sysdir
        )
    assert train.images.shape == (7, 1, 28, 28) and train.labels.tolist() == [0, 1, 2, 3, 4, 5, 9]
    assert test.labels.tolist() == [7] and classes[9] == "Ankle boot"
    # data_dir copy wins over the system folder; a truncated file is a one-line error
    ddir = tmp_path / "data" / "fashion-mnist"
    write_idx(ddir / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    raw = (ddir / "train-images-idx3-ubyte.gz").read_bytes()
    (ddir / "train-images-idx3-ubyte.gz").write_bytes(
        __import__("gzip").compress(__import__("gzip").decompress(raw)[:-10])
    )
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(tmp_path / "data", download=False, system_dir=sysdir)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz not found; put it in"):
        load_fashion_mnist(tmp_path / "empty", download=False, system_dir=tmp_path / "none")
