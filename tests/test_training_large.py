"""Training on large-image folders (ImageNet layout) through the trainer: the crop
choice and the crop size reach the loader and the run's saved preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import run_cli
from PIL import Image


def _photos(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(["a", "b", "c"]):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, size=(80 + 8 * i, 96, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def test_large_images_train_with_either_crop(tmp_path: Path) -> None:
    data = _photos(tmp_path / "photos")
    for crop in ("scale", "rrc"):
        out = tmp_path / crop
        # small-image flags: accepted, unused, and said to be unused
        small = ["--pad", "1", "--flip", "alternate"] if crop == "rrc" else []
        done = run_cli(
            "train", "--data", str(data), "--train-crop", crop, "--image-size", "64",
            "--iters", "2", "--batch-size", "8", "--val-size", "0", "--threads", "1",
            "--out", str(out), *small,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        said = done.stdout + done.stderr
        assert ("note: --pad 1 and --flip alternate apply to small in-memory images only; "
                f"these large images are streamed and augmented by --train-crop {crop}"
                in said) == bool(small), said  # fmt: skip
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["train"]["train_crop"] == crop and cfg["train"]["image_size"] == 64
        assert cfg["data"]["preprocessing"]["size"] == 64


def test_random_resized_crop_on_small_images_is_one_line(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    done = run_cli(
        "train", "--data", str(tiny_dataset), "--train-crop", "rrc", "--iters", "2",
        "--batch-size", "12", "--val-size", "0", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error:"), done.stderr
    assert done.stderr.count("\n") == 1
