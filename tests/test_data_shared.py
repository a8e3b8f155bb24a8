"""Real data: ../shared's cifar10-jpeg and Debian's Fashion-MNIST (skipped when absent),
and the ``bench data`` command on a folder the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_fixtures import shared_dir, write_folder

from resnetlab.cli import main
from resnetlab.data import InMemorySplit, make_loader, open_dataset
from resnetlab.data.fmnist import SYSTEM_DIR

SHARED = shared_dir()
CIFAR_JPEG = SHARED / "data" / "cifar10-jpeg" if SHARED else None
needs_shared = pytest.mark.skipif(
    CIFAR_JPEG is None or not CIFAR_JPEG.is_dir(),
    reason="../shared/data/cifar10-jpeg not found (set RESNETLAB_SHARED to the shared folder)",
)
needs_fmnist = pytest.mark.skipif(
    not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.mark.shared
@needs_shared
def test_cifar10_jpeg_folder(tmp_path: Path) -> None:
    b = open_dataset(CIFAR_JPEG, data_dir=tmp_path, val_size=5000)  # type: ignore[arg-type]
    assert b.classes == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert b.in_memory and b.image_size == 32
    assert len(b.train) == 45_000 and b.val is not None and len(b.val) == 5000
    assert b.test is not None and len(b.test) == 10_000
    assert torch.bincount(b.val.labels).tolist() == [500] * 10
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10
    assert isinstance(b.test, InMemorySplit)
    # the 1234th test image of class 'ship' is where the sorted order says
    import numpy as np
    from PIL import Image

    files = sorted((CIFAR_JPEG / "test" / "ship").iterdir())  # type: ignore[operator]
    with Image.open(files[7]) as im:
        ref = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(b.test.images[8 * 1000 + 7], ref) and int(b.test.labels[8007]) == 8
    pre = b.preprocessing("pixel")
    x, _ = next(iter(make_loader(b.train, 128, train=True, preprocessing=pre).epoch(0)))
    assert x.shape == (128, 3, 32, 32) and abs(float(x.mean())) < 0.1


@pytest.mark.fmnist
@needs_fmnist
def test_fashion_mnist_debian(tmp_path: Path) -> None:
    b = open_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert b.in_channels == 1 and b.image_size == 28 and len(b.classes) == 10
    assert (
        b.train.images.shape == (60_000, 1, 28, 28) and b.test is not None and len(b.test) == 10_000
    )  # type: ignore[union-attr]
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    pre = b.preprocessing("channel")
    assert pre.mode == "L" and len(pre.mean) == 1
    x, _ = next(iter(make_loader(b.train, 64, train=True, preprocessing=pre).epoch(0)))
    assert x.shape == (64, 1, 28, 28)


def test_bench_data_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_folder(tmp_path / "ds", ["a", "b"], per_class=40, size=8)
    monkeypatch.setattr("sys.argv", ["resnetlab", "bench", "data"])
    rc = main(
        ["bench", "data", "--data", str(root), "--json", "--seconds", "0.2", "--batch-size", "16"]
    )
    assert rc == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert (
        r["images"] == 160 and r["in_memory"] and r["images_per_s"] > 0 and r["decode_first_s"] >= 0
    )


def test_cli_reports_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["resnetlab", "bench", "data"])
    rc = main(["bench", "data", "--data", str(tmp_path / "nowhere")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown dataset") and "\n" not in err
