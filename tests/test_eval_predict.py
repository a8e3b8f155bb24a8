"""eval and predict from a trained run's portable weights; bad input gets one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli as cli
from conftest import tiny_config

from resnetlab.training.loop import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def trained_run(tiny_dataset: Path, tmp_path: Path) -> Path:
    cfg = tiny_config(tiny_dataset, tmp_path / "run", iters=6, val_size=0, eval_every=6)
    assert train(cfg).finished
    return tmp_path / "run"


def test_eval_json_matches_training_result(trained_run: Path, tiny_dataset: Path) -> None:
    weights = trained_run / "model.safetensors"
    assert weights.exists()
    done = cli("eval", "--checkpoint", str(weights), "--data", str(tiny_dataset), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"top1_acc", "top5_acc", "n"} and result["n"] == 24
    expected = json.loads((trained_run / "results.json").read_text())["test"]["top1_acc"]
    assert result["top1_acc"] == pytest.approx(expected)
    # the training checkpoint gives the same answer
    done = cli(
        "eval",
        "--checkpoint",
        str(trained_run / "checkpoints" / "last.pt"),
        "--data",
        str(tiny_dataset),
        "--json",
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["top1_acc"] == pytest.approx(expected)
    ten = cli(
        "eval", "--checkpoint", str(weights), "--data", str(tiny_dataset), "--ten-crop", "--json"
    )
    assert ten.returncode == 0, ten.stderr
    assert 0 <= json.loads(ten.stdout.strip().splitlines()[-1])["top1_acc"] <= 1


def test_predict_and_bad_images(trained_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    image = next((tiny_dataset / "test" / "red").iterdir())
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = cli(
        "predict",
        str(image),
        str(bad),
        "--checkpoint",
        str(trained_run / "model.safetensors"),
        "--topk",
        "2",
        "--json",
    )
    assert done.returncode == 2  # one image failed, the other was still answered
    line = json.loads(done.stdout.strip().splitlines()[0])
    assert line["image"] == str(image) and len(line["top"]) == 2
    assert {p["class"] for p in line["top"]} <= {"blue", "green", "red"}
    assert sum(p["prob"] for p in line["top"]) <= 1.0 + 1e-6
    assert done.stderr.strip().startswith("error: cannot read image")
    assert len(done.stderr.strip().splitlines()) == 1


def test_eval_refuses_mismatched_dataset(trained_run: Path, tmp_path: Path) -> None:
    from conftest import write_tiny_folder_dataset

    other = write_tiny_folder_dataset(tmp_path / "other")
    (other / "train" / "yellow").mkdir()
    (other / "test" / "yellow").mkdir()
    done = cli("eval", "--checkpoint", str(trained_run / "model.safetensors"), "--data", str(other))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model predicts 3 classes") and "has 4" in last
    assert "Traceback" not in done.stderr
    missing = cli("eval", "--checkpoint", str(tmp_path / "nope.safetensors"), "--data", "x")
    assert missing.returncode == 2 and missing.stderr.startswith("error:")
