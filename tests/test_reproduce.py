"""reproduce --smoke: the plumbing of the paper's evidence (files, figures, reuse), not numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import run_cli
from PIL import Image


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("reproduce", *args, timeout=600)


def test_degradation_then_responses_smoke(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "degradation"
    args = [
        "degradation",
        "--smoke",
        "--data",
        str(tiny_dataset),
        "--depths",
        "20",
        "32",
        "--out",
        str(out),
    ]
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "report.md").read_text()
    for model in ("plain20", "plain32", "resnet20", "resnet32"):
        assert f"| {model} |" in report
        assert (out / "runs" / model / "results.json").exists()
    # 3 classes: fc has 64*3+3 parameters instead of 650; beside it, the paper's 8.75% error
    assert "| resnet20 | 269,267 |" in report and "8.75 |" in report
    assert "Result:" in report and "smoke test" in report
    with Image.open(out / "degradation.png") as im:
        assert im.width > 1.8 * im.height  # two panels side by side
    again = cli(*args)  # finished runs are reused, not retrained
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 4
    other = cli(*args, "--recipe", "paper-short")  # never mixed into runs of another recipe
    assert other.returncode == 2
    assert other.stderr.startswith("error: ") and "recipe 'paper' -> 'paper-short'" in other.stderr
    assert "give another --out" in other.stderr

    resp_out = tmp_path / "responses"
    done = cli("responses", "--smoke", "--data", str(tiny_dataset), "--out", str(resp_out))
    assert done.returncode == 0, done.stderr[-2000:]
    stds = json.loads((resp_out / "responses.json").read_text())
    # every 3x3 layer: the stem plus two per basic block (6n+2 - 1 = 6n+1)
    assert {k: len(v) for k, v in stds.items()} == {
        "plain20": 19,
        "plain32": 31,
        "resnet20": 19,
        "resnet32": 31,
    }
    assert all(s >= 0 for v in stds.values() for s in v)
    assert (resp_out / "responses.png").exists()


def test_responses_without_checkpoints_is_one_clear_error(tmp_path: Path) -> None:
    done = cli("responses", "--data", "x", "--out", str(tmp_path / "responses"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: no checkpoints given")


def test_smoke_runs_default_to_runs_smoke_not_the_committed_reports(tmp_path: Path) -> None:
    done = run_cli("reproduce", "responses", "--smoke", "--data", "x", cwd=tmp_path)
    assert done.returncode == 2
    assert str(Path("runs") / "smoke" / "degradation" / "runs") in done.stderr
    assert not (tmp_path / "reports").exists()
    done = run_cli("reproduce", "responses", "--data", "x", cwd=tmp_path)
    assert str(Path("reports") / "degradation" / "runs") in done.stderr


def test_response_std_is_the_bn_output_std() -> None:
    import torch

    from resnetlab.experiments.responses import bn_after_3x3, response_stds
    from resnetlab.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    for bn in bn_after_3x3(model):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, 3, 32, 32)
    stds = response_stds(model, [(x, torch.zeros(6))])
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        block = model.layer1[0]
        second = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(torch.relu(stem))))))
    assert len(stds) == 19
    assert abs(stds[0] - stem.double().std(unbiased=False).item()) < 1e-6
    assert abs(stds[2] - second.double().std(unbiased=False).item()) < 1e-6
    assert len(bn_after_3x3(create_model("resnet50"))) == 16  # one 3x3 per bottleneck
