"""resnetlab sweep: variants x seeds as ordinary train runs, reuse, and the comparison."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from resnetlab.experiments.sweep import Job, Variant, summarize, write_report

TRAIN = ["--recipe", "fast", "--iters", "2", "--batch-size", "12", "--eval-points", "1",
         "--procs", "1", "--threads", "1", "--compile", "off"]  # fmt: skip


def sweep(
    out: Path, data: Path, *variants: str, seeds: tuple[str, ...] = ("0", "1"), parallel: int = 1
) -> subprocess.CompletedProcess[str]:
    flags = [a for v in variants for a in ("--variant", v)]
    flags += ["--parallel", str(parallel)]
    return run_cli("sweep", "--out", str(out), "--seeds", *seeds, *flags, "--",
                   "--data", str(data), *TRAIN, timeout=600)  # fmt: skip


def test_a_sweep_trains_each_variant_and_seed_then_reuses_them(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sw"
    seeds = ("0", "3")  # four one-thread runs, two at a time
    done = sweep(out, tiny_dataset, "base=", "ls0=--label-smoothing 0", seeds=seeds, parallel=2)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = ["base-seed0", "base-seed3", "ls0-seed0", "ls0-seed3"]
    for name in runs:  # each an ordinary run folder with its own flags
        cfg = json.loads((out / name / "config.json").read_text())["train"]
        assert cfg["seed"] == int(name[-1])
        assert cfg["label_smoothing"] == (0.0 if name.startswith("ls0") else 0.1)
        assert (out / name / "results.json").is_file() and (out / "logs" / f"{name}.log").is_file()
    record = json.loads((out / "sweep.json").read_text())
    assert [r["folder"] for r in record["runs"]] == runs
    assert {r["status"] for r in record["runs"]} == {"finished"}
    scores = {r["folder"]: r["score"] for r in record["runs"]}
    report = (out / "sweep.md").read_text()
    for name, score in scores.items():
        assert f"| {100 * score:.2f} |" in report, name
    assert "| ls0 | `--label-smoothing 0` |" in report and (out / "sweep.png").is_file()
    assert "--variant 'ls0=--label-smoothing 0' --parallel 2 -- --data" in report  # the command

    again = sweep(out, tiny_dataset, "base=", "ls0=--label-smoothing 0", seeds=seeds, parallel=2)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        again.stdout.count("finished earlier, reusing") == 4 and "training ->" not in again.stdout
    )
    assert (out / "sweep.md").read_text() == report

    changed = sweep(out, tiny_dataset, "base=", "ls0=--label-smoothing 0.1", seeds=seeds)
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1, changed.stderr
    assert "ls0-seed0 was trained with other flags" in changed.stderr

    # the same flags, but the recipe's defaults have changed since base-seed3 was trained
    config = out / "base-seed3" / "config.json"
    doc = json.loads(config.read_text())
    doc["train"]["label_smoothing"] = 0.25
    config.write_text(json.dumps(doc))
    moved = sweep(out, tiny_dataset, "base=", "ls0=--label-smoothing 0", seeds=seeds)
    assert moved.returncode == 2 and moved.stderr.count("\n") == 1, moved.stderr
    assert (
        "base-seed3 was trained with the same flags but another setting "
        "(label_smoothing 0.25 -> 0.1; has the recipe changed since?)" in moved.stderr
    )


@pytest.mark.parametrize(
    ("variant", "says"),
    [
        ("x=--bogus 1", "variant x: unrecognized arguments: --bogus 1"),
        ("x=--model resnet21", "variant x: unknown model 'resnet21'"),
        ("x=--seed 3", "the sweep sets --seed for each run"),
        ("--lr 0.1", "expected NAME=FLAGS"),
    ],
)
def test_bad_variants_are_one_line_before_any_run(
    tiny_dataset: Path, tmp_path: Path, variant: str, says: str
) -> None:
    done = sweep(tmp_path / "sw", tiny_dataset, "base=", variant)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and says in done.stderr
    assert not (tmp_path / "sw").exists()


def _job(name: str, seed: int, score: float | None) -> Job:
    return Job(Variant(name, [] if name == "a" else ["--lr", "0.1"]), seed, Path(f"{name}{seed}"),
               [], score=score, split="test")  # fmt: skip


def test_the_comparison_is_mean_sample_std_and_the_difference_with_its_error(
    tmp_path: Path,
) -> None:
    jobs = [_job("a", 0, 0.84), _job("a", 1, 0.85), _job("a", 2, 0.86),
            _job("b", 0, 0.86), _job("b", 1, 0.87), _job("b", 2, None)]  # fmt: skip
    a, b = summarize(jobs)
    assert a["mean"] == pytest.approx(0.85) and a["std"] == pytest.approx(0.01)
    assert "diff" not in a and b["n"] == 2 and b["mean"] == pytest.approx(0.865)
    assert b["std"] == pytest.approx(math.sqrt(0.5) * 0.01)
    assert b["diff"] == pytest.approx(0.015)
    assert b["diff_se"] == pytest.approx(math.sqrt(0.01**2 / 3 + 0.5 * 0.01**2 / 2))
    write_report(tmp_path, jobs, "resnetlab sweep ...")
    report = (tmp_path / "sweep.md").read_text()
    # 1.5 points against a standard error of 0.76: within twice it
    assert (
        "| b | `--lr 0.1` | 86.00 | 87.00 | - | 86.50 | 0.71 | +1.50 ± 0.76 (within 2 SE) |"
        in report
    )
    assert "finished: 5 of 6 runs" in report


def test_a_run_that_fails_is_reported_in_one_line_and_the_others_still_run(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Flags valid on their own can still fail on the data (a batch larger than the
    training split): that run's error ends the sweep's output, the others finish."""
    out = tmp_path / "sw"
    done = run_cli("sweep", "--out", str(out), "--seeds", "0", "--variant", "big=--batch-size 5000",
                   "--variant", "base=", "--", "--data", str(tiny_dataset), *TRAIN)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: 1 run(s) failed, first big seed 0: the training split")
    assert "error: error:" not in done.stderr and "big-seed0.log" in done.stderr
    runs = {r["folder"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert runs["big-seed0"]["status"].startswith("failed: ") and runs["big-seed0"]["score"] is None
    assert runs["base-seed0"]["status"] == "finished" and runs["base-seed0"]["score"] is not None
    assert "finished: 1 of 2 runs" in (out / "sweep.md").read_text()


def test_a_second_sweep_on_the_same_folder_is_refused_in_one_line(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Two sweeps on one --out would overwrite each other's sweep.json and report."""
    from resnetlab.training.run_folder import RunFolder

    out = tmp_path / "sw"
    first = RunFolder(out)
    first.acquire()  # as a running sweep holds it
    try:
        done = run_cli("sweep", "--out", str(out), "--seeds", "0", "--report-only", "--",
                       "--data", str(tiny_dataset), *TRAIN)  # fmt: skip
    finally:
        first.release()
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{out} is in use by resnetlab process" in done.stderr
    assert not (out / "sweep.json").exists()
