"""eval and predict refuse what would give wrong or no answers: bad --topk, decompression
bombs, datasets whose class names differ from the model's.

The model files are written directly (random weights), so these tests do not depend on
the trainer.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_tiny_folder_dataset
from data_fixtures import write_cifar_archive, write_folder

import resnetlab.data.cifar as cifar_mod
from resnetlab.cli import main
from resnetlab.data.cifar import CIFAR10_CLASSES
from resnetlab.data.preprocess import Preprocessing
from resnetlab.interop.akamaster import import_akamaster
from resnetlab.interop.weights import save_weights
from resnetlab.models import create_model

TINY_CLASSES = ["blue", "green", "red"]  # write_tiny_folder_dataset's folders


def _tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    return save_weights(
        path,
        create_model("resnet20", num_classes=3),
        classes=TINY_CLASSES,
        preprocessing=Preprocessing(size=8, mean=[0.4] * 3, std=[0.3] * 3),
    )


def _bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of all-black rows: tens of kilobytes on disk for any pixel count."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("topk", ["0", "-1"])
def test_predict_refuses_topk_below_one(
    topk: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _tiny_weights(tmp_path / "m.safetensors")
    image = next((write_tiny_folder_dataset(tmp_path / "d") / "test" / "red").iterdir())
    assert main(["predict", str(image), "--checkpoint", str(weights), "--topk", topk]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: --topk must be >= 1, got {topk}\n"


def test_predict_decompression_bomb_is_a_per_image_error(tmp_path: Path) -> None:
    """14000 x 13000 = 182 Mpixel, over Pillow's hard limit: refused at open, not decoded."""
    weights = _tiny_weights(tmp_path / "m.safetensors")
    good = next((write_tiny_folder_dataset(tmp_path / "d") / "test" / "red").iterdir())
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_bilevel_png(14_000, 13_000))
    assert bomb.stat().st_size < 100_000
    done = run_cli("predict", str(bomb), str(good), "--checkpoint", str(weights), "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr  # one image failed
    assert done.stderr.strip().splitlines() == [
        f"error: cannot read image {bomb}: Image size (182000000 pixels) exceeds limit of "
        "178956970 pixels, could be decompression bomb DOS attack."
    ]
    (line,) = done.stdout.strip().splitlines()  # the readable image is still answered
    assert json.loads(line)["image"] == str(good)


def test_eval_refuses_renamed_class_folders_unless_told(tiny_dataset: Path, tmp_path: Path) -> None:
    weights = _tiny_weights(tmp_path / "m.safetensors")
    for split in ("train", "test"):  # blue, green, red -> azure, green, red
        (tiny_dataset / split / "blue").rename(tiny_dataset / split / "azure")
    args = ["eval", "--checkpoint", str(weights), "--data", str(tiny_dataset), "--json"]
    refused = run_cli(*args)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"error: 1 class name(s) differ between the model and {tiny_dataset} "
        "(#0 'blue' vs 'azure'); pass --ignore-class-names to score anyway"
    ]
    forced = run_cli(*args, "--ignore-class-names")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout.strip().splitlines()[-1])["n"] == 24
    assert "scoring anyway (--ignore-class-names)" in forced.stderr
    assert "#0 'blue' vs 'azure'" in forced.stderr


def test_eval_scores_matching_names_silently(tiny_dataset: Path, tmp_path: Path) -> None:
    weights = _tiny_weights(tmp_path / "m.safetensors")
    done = run_cli("eval", "--checkpoint", str(weights), "--data", str(tiny_dataset), "--json")
    assert done.returncode == 0, done.stderr
    assert "class name" not in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["n"] == 24


def _akamaster_import(tmp_path: Path) -> Path:
    """An akamaster-format resnet20 checkpoint (names as that project saves them), imported."""
    state = {
        "module." + k.replace("fc.", "linear.", 1): v
        for k, v in create_model("resnet20", zero_pad="both").state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save({"state_dict": state, "best_prec1": 91.0}, tmp_path / "aka.th")
    return import_akamaster(tmp_path / "aka.th", "resnet20")


def test_akamaster_import_matches_cifar10_class_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The importer's class list equals the names the official CIFAR-10 archive and a
    cifar10-jpeg style folder dataset give, so eval accepts it on both."""
    weights = _akamaster_import(tmp_path)
    archive = write_cifar_archive(
        tmp_path / "data" / "cifar-10-python.tar.gz", "cifar10", list(range(10)), list(range(10))
    )
    arc = cifar_mod.ARCHIVES["cifar10"]
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(
        cifar_mod.ARCHIVES,
        "cifar10",
        cifar_mod.Archive(archive.name, md5, arc.folder, arc.train, arc.test, arc.meta),
    )
    folders = write_folder(tmp_path / "cifar10-jpeg", CIFAR10_CLASSES, per_class=1, size=32)
    for data in ("cifar10", str(folders)):
        argv = ["eval", "--checkpoint", str(weights), "--data", data, "--json"]
        assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 0
        out, err = capsys.readouterr()
        assert "class name" not in err and json.loads(out.strip().splitlines()[-1])["n"] == 10
