"""bench data --large: the photo set builds deterministically, and the command runs end
to end at a tiny size (not timed). Needs scikit-image (the `bench` extra)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from resnetlab.benchmarks import photos
from resnetlab.errors import ResnetlabError

N = 18  # the smallest set: 2 photos per source


def _needs_skimage() -> None:
    pytest.importorskip(
        "skimage", reason="scikit-image not installed (pip install 'resnetlab[bench]')"
    )


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_photo_set_is_deterministic_and_built_once(tmp_path: Path) -> None:
    _needs_skimage()
    a, built_a = photos.build_large_set(tmp_path / "a", N, workers=2)
    b, built_b = photos.build_large_set(tmp_path / "b", N, workers=0)
    assert built_a and built_b and a.name == b.name == f"{photos.SET_VERSION}-n{N}"
    files = _files(a)
    assert files == _files(b)  # same names, same bytes, with or without worker processes
    jpegs = [f for f in files if f.endswith(".jpg")]
    assert len(jpegs) == N and len({f.split("/")[1] for f in jpegs}) == len(photos.SOURCES)
    from PIL import Image

    for rel in jpegs:
        with Image.open(a / rel) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert photos.SHORTER[0] <= min(im.size) <= photos.SHORTER[1]
    again, built = photos.build_large_set(tmp_path / "a", N)
    assert again == a and not built  # cached
    (a / jpegs[0]).write_bytes(b"")  # damaged: rebuilt whole
    rebuilt, built = photos.build_large_set(tmp_path / "a", N)
    assert built and _files(rebuilt) == files
    assert not list(tmp_path.glob("a/*.part-*"))


def test_missing_scikit_image_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)
    photos._sources.cache_clear()
    try:
        with pytest.raises(ResnetlabError, match=r"pip install 'resnetlab\[bench\]'"):
            photos.build_large_set(Path("/nonexistent-resnetlab"), N)
    finally:
        photos._sources.cache_clear()


def test_common_pipeline_gives_normalised_float_crops(tmp_path: Path) -> None:
    _needs_skimage()
    root, _ = photos.build_large_set(tmp_path, N, workers=0)
    samples = [(str(p), 0) for p in sorted((root / "train").rglob("*.jpg"))]
    x, _ = next(iter(photos.common_loader(samples, 4, workers=0)))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert -3 < float(x.mean()) < 3 and float(x.min()) < 0 < float(x.max())


def test_bench_data_large_json(tmp_path: Path) -> None:
    _needs_skimage()
    done = run_cli(
        "bench",
        "data",
        "--large",
        "--large-images",
        str(N),
        "--data-dir",
        str(tmp_path),
        "--batch-size",
        "4",
        "--warmup",
        "1",
        "--batches",
        "2",
        "--rounds",
        "1",
        "--workers",
        "1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["photos"] == N and r["built_now"] and r["workers"] == 1
    for key in ("baseline", "ours", "ours_scale"):
        assert r[key]["images_per_s"] > 0 and len(r[key]["rounds"]) == 1
        assert r[key]["shape"] == [4, 3, 224, 224] and r[key]["dtype"] == "float32"
    assert r["ratio"] == pytest.approx(
        r["ours"]["images_per_s"] / r["baseline"]["images_per_s"], rel=1e-2
    )
    assert 0 <= r["reduced_decode_share"]["rrc"] <= 1
    # too few photos for the batches asked: one line, no traceback
    done = run_cli(
        "bench", "data", "--large", "--large-images", str(N), "--data-dir", str(tmp_path)
    )
    assert (
        done.returncode == 2 and done.stderr.startswith("error:") and "--batch-size" in done.stderr
    )


def test_bench_data_needs_data_or_large() -> None:
    done = run_cli("bench", "data", timeout=120)
    assert done.returncode == 2 and "--data" in done.stderr and "--large" in done.stderr
