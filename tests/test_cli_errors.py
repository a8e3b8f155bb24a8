"""Bad input to every sub-command: exit status 2, one ``error:`` line, no traceback, no output.

Each case is a command line a user could type, run through the CLI's entry point
(``resnetlab.cli.main``) in this process: 2 s of torch import per case would make the
table minutes long; ``test_train_base_command_line_is_valid`` and the other CLI tests
run the real executable. An exception escaping ``main`` fails the case. Apart from the
flag under test, every command line is valid (the train runs are two iterations long),
so a case passes only if that flag is refused, and refused for the right reason (the
last stderr line must name what is wrong). No file may appear or change in the working
folder or beside the inputs, and ``train`` must refuse within seconds, before creating
its run folder.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, write_tiny_folder_dataset

from resnetlab.data.preprocess import Preprocessing
from resnetlab.interop.weights import save_weights
from resnetlab.models import create_model


def case(name: str, expect: str, *argv: str) -> object:
    """One table row: the id, a regex the error line must match (it names what is wrong)."""
    return pytest.param(argv, expect, id=name)


def train(*flags: str, out: str = "{out}") -> tuple[str, ...]:
    """Valid apart from ``flags``: 2 iterations on the tiny dataset, no speed probing."""
    base = ("train", "--data", "{data}", "--out", out, "--val-size", "0", "--batch-size", "6")
    length = () if {"--iters", "--epochs"} & set(flags) else ("--iters", "2")
    return (*base, "--compile", "off", "--channels-last", "off", *length, *flags)


EVAL = ("eval", "--checkpoint", "{weights}", "--data", "{data}")
PREDICT = ("predict", "{image}", "--checkpoint", "{weights}")
EXPORT = ("export", "--checkpoint", "{weights}", "--out", "{out}.onnx")
INFER = ("bench", "infer", "--model", "resnet20", "--image-size", "8", "--seconds", "0.05")
SMOKE = ("--smoke", "--data", "{data}", "--out", "{out}")

CASES = [
    # --- train: refused at validation, in seconds, before the run folder exists
    case("train-model", "nosuchnet", *train("--model", "nosuchnet")),
    case("train-device", "tpu", *train("--device", "tpu")),
    case("train-accum-steps", "accum", *train("--accum-steps", "0")),
    case("train-momentum", "momentum", *train("--momentum", "-0.5")),
    case("train-weight-decay", "weight.decay", *train("--weight-decay", "-1")),
    case("train-out-is-a-file", "notes.txt", *train(out="{file}")),
    case("train-threads", "threads", *train("--threads", "-2")),
    case("train-eval-every", "eval.every", *train("--eval-every", "-1")),
    case("train-checkpoint-every", "checkpoint.every", *train("--checkpoint-every", "-5")),
    case("train-stop-at", "stop.at", *train("--stop-at", "-1")),
    case("train-warmup-iters", "warmup", *train("--warmup-iters", "-3")),
    case("train-epochs", "epochs", *train("--epochs", "-1")),
    case("train-iters", "iters", *train("--iters", "0")),
    case("train-milestones", "milestone", *train("--milestones", "-5")),
    case("train-no-data", "nope", "train", "--data", "{missing}", "--out", "{out}", "--iters", "2"),
    # --- eval
    case("eval-no-model", "not found", "eval", "--checkpoint", "{missing}.pt", "--data", "{data}"),
    case("eval-no-data", "nope", "eval", "--checkpoint", "{weights}", "--data", "{missing}"),
    case("eval-batch-size", "batch-size", *EVAL, "--batch-size", "0"),
    case("eval-val-size", "val-size", *EVAL, "--val-size", "-1"),
    case("eval-text-file", "model file type", "eval", "--checkpoint", "{file}", "--data", "{data}"),
    # --- predict
    case("predict-topk-negative", "topk", *PREDICT, "--topk", "-1"),
    case("predict-topk-0", "topk", *PREDICT, "--topk", "0"),
    case("predict-topk-text", "topk.*invalid int", *PREDICT, "--topk", "five"),
    case("predict-dir-as-model", "directory", "predict", "{image}", "--checkpoint", "{dir}"),
    case("predict-no-image", "could be read", "predict", "{missing}.png", "--checkpoint", "{weights}"),
    # --- import
    case("import-missing", "not found", "import", "akamaster", "{missing}.th"),
    case("import-text-file", "notes.txt", "import", "akamaster", "{file}", "--out", "{out}.safetensors"),
    case("import-out-suffix", r"\.safetensors", "import", "akamaster", "{th}", "--out", "{out}.pt"),
    case("import-out-in-a-file", "not a directory", "import", "akamaster", "{th}", "--out", "{file}/a.safetensors"),
    # --- export
    case("export-batch-size", "batch-size", *EXPORT, "--batch-size", "0"),
    case("export-no-model", "not found", "export", "--checkpoint", "{missing}.safetensors"),
    case("export-out-is-a-dir", "directory", "export", "--checkpoint", "{weights}", "--out", "{dir}"),
    case("export-over-its-input", "input", *EXPORT, "--format", "torchscript", "--out", "{weights}"),
    case("export-format", "invalid choice", *EXPORT, "--format", "tflite"),
    # --- bench
    case("bench-infer-model", "nosuchnet", "bench", "infer", "--model", "nosuchnet"),
    case("bench-infer-batch-size", "batch-size", *INFER, "--batch-size", "1", "0"),
    case("bench-data-missing", "nope", "bench", "data", "--data", "{missing}"),
    case("bench-data-seconds", "seconds", "bench", "data", "--data", "{data}", "--batch-size", "8", "--seconds", "-1"),
    case("bench-train-tiny-data", "fewer than one batch", "bench", "train", "--data", "{data}", "--seconds", "1"),
    # --- reproduce
    case("reproduce-no-data", "nope", "reproduce", "degradation", "--smoke", "--data", "{missing}", "--out", "{out}"),
    case("reproduce-depth", "21", "reproduce", "degradation", "--depths", "21", *SMOKE),
    case("reproduce-model", "nosuchnet", "reproduce", "cifar-table", "--models", "nosuchnet", *SMOKE),
    case("reproduce-iters", "iters", "reproduce", "degradation", "--depths", "20", "--iters", "-5", *SMOKE),
    case("reproduce-checkpoint", "not found", "reproduce", "responses", "--checkpoints", "{missing}.pt", *SMOKE),
]  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid inputs for every command: a tiny dataset, a matching model, an image, an
    akamaster checkpoint; plus a text file, an empty folder and a path that does not exist."""
    root = tmp_path_factory.mktemp("inputs")
    data = write_tiny_folder_dataset(root / "data")
    torch.manual_seed(0)
    weights = save_weights(
        root / "m.safetensors",
        create_model("resnet20", num_classes=3),
        classes=["blue", "green", "red"],
        preprocessing=Preprocessing(size=8, mean=[0.4] * 3, std=[0.3] * 3),
    )
    aka = {
        "module." + k.replace("fc.", "linear.", 1): v
        for k, v in create_model("resnet20", zero_pad="both").state_dict().items()
    }
    torch.save({"state_dict": aka}, root / "aka.th")
    (root / "notes.txt").write_text("not a model\n")
    (root / "adir").mkdir()
    return {
        "root": root,
        "data": data,
        "weights": weights,
        "image": next((data / "test" / "red").iterdir()),
        "th": root / "aka.th",
        "file": root / "notes.txt",
        "dir": root / "adir",
        "missing": root / "nope",
        "cache": tmp_path_factory.mktemp("cache"),
    }


def _tree(*roots: Path) -> dict[Path, tuple[int, int]]:
    """Every path under ``roots`` with a file's size and mtime: what a command left or
    changed (a folder's own mtime is left out: a temporary file made and removed is fine)."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
        for r in roots
        for p in r.rglob("*")
    }


class _Done:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> _Done:
    """``resnetlab ARGS`` in this process: exit status and stderr; torch's thread count
    (which ``--threads`` may set) is restored for the tests after it."""
    from resnetlab.cli import main

    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    finally:
        torch.set_num_threads(threads)
    return _Done(code, capsys.readouterr().err)


@pytest.mark.parametrize(("argv", "names"), CASES)
def test_bad_input_is_one_error_line(
    argv: tuple[str, ...],
    names: str,
    assets: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RESNETLAB_DATA", str(assets["cache"]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    paths = {k: str(v) for k, v in assets.items()} | {"out": str(out)}
    args = [a.format(**paths) for a in argv]
    before, cwd_mtime = _tree(assets["root"], tmp_path), tmp_path.stat().st_mtime_ns
    t0 = time.perf_counter()
    monkeypatch.chdir(tmp_path)  # default outputs would land here
    done = _main(args, capsys)
    elapsed = time.perf_counter() - t0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert lines and lines[-1].startswith("error: "), done.stderr[-2000:]
    assert re.search(names, lines[-1], re.IGNORECASE), lines[-1]
    assert _tree(assets["root"], tmp_path) == before, "a file was written or changed"
    assert not any(Path(p).exists() for p in (out, f"{out}.onnx", f"{out}.safetensors"))
    if argv[0] == "train":
        assert elapsed < 20, f"train took {elapsed:.0f} s to refuse a bad flag"
        # not even made and removed again: --out lies in tmp_path, whose mtime would change
        assert tmp_path.stat().st_mtime_ns == cwd_mtime, "train created (then removed) --out"


def test_train_base_command_line_is_valid(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train cases differ from this run only by their bad flag: it must succeed."""
    monkeypatch.setenv("RESNETLAB_DATA", str(assets["cache"]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = {"data": str(assets["data"]), "out": str(tmp_path / "run")}
    done = run_cli(*[a.format(**paths) for a in train()], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert os.listdir(tmp_path) == ["run"]
