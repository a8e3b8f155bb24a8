"""Interop writers: flags checked before work, files written whole or not at all.

A full disk is simulated where it reports itself on many filesystems: at fsync of the
temporary file. The command must say so in one line, leave no file under the final
name (an older one stays as it was) and remove its temporary file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import resnetlab.interop.export as export_mod
from resnetlab.atomic import write_bytes_atomic
from resnetlab.cli import main
from resnetlab.data.preprocess import Preprocessing
from resnetlab.errors import CheckpointError
from resnetlab.interop.weights import save_weights
from resnetlab.models import create_model


def _weights(folder: Path) -> Path:
    torch.manual_seed(0)
    return save_weights(
        folder / "m.safetensors",
        create_model("resnet20"),
        classes=[f"k{i}" for i in range(10)],
        preprocessing=Preprocessing(size=32, mean=[0.5] * 3, std=[0.25] * 3),
    )


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("resnetlab.atomic.os.fsync", fsync)


def test_export_batch_size_zero_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, out = _weights(tmp_path), tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(weights), "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == "error: --batch-size must be in 1..4096, got 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_on_a_full_disk_leaves_nothing(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(tmp_path)
    out = tmp_path / "out" / f"m.{fmt}"
    _disk_full(monkeypatch)
    assert main(["export", "--checkpoint", str(weights), "--format", fmt, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: cannot write {out}: No space left on device\n"
    assert list(out.parent.iterdir()) == []  # no final file, no temporary file


def test_import_on_a_full_disk_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {
        "module." + k.replace("fc.", "linear.", 1): v
        for k, v in create_model("resnet20", zero_pad="both").state_dict().items()
    }
    torch.save({"state_dict": state}, tmp_path / "aka.th")
    out = tmp_path / "aka.safetensors"
    out.write_bytes(b"an earlier import")
    _disk_full(monkeypatch)
    assert main(["import", "akamaster", str(tmp_path / "aka.th")]) == 2
    assert capsys.readouterr().err == f"error: cannot write {out}: No space left on device\n"
    assert out.read_bytes() == b"an earlier import"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aka.safetensors", "aka.th"]


def test_onnx_that_fails_its_check_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _weights(tmp_path)
    monkeypatch.setattr(export_mod, "onnx_max_abs_diff", lambda *a: 1.0)
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_mod.export_file(weights, "onnx", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_write_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match=r"cannot write .*file/m\.onnx: "):
        write_bytes_atomic(tmp_path / "file" / "m.onnx", b"data")
