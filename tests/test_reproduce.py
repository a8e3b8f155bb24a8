"""reproduce --smoke: the plumbing of the paper's evidence (one pool of runs shared by the
reports, reuse, layouts, statistics without weights, reports), not numbers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from PIL import Image

from resnetlab.errors import ResnetlabError
from resnetlab.training.recipes import build_config
from resnetlab.training.run_folder import RunFolder


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("reproduce", *args, timeout=600)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_reports_share_one_pool_and_regenerate_identically(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    smoke = ["--smoke", "--data", str(tiny_dataset)]
    fig6 = ["degradation", *smoke, "--depths", "20", "32", "--resnet-only-depths"]
    fig6 += ["--out", str(tmp_path / "degradation")]
    done = cli(*fig6)
    assert done.returncode == 0, done.stderr[-2000:]
    pool = tmp_path / "cifar-runs"  # beside the report folders
    report = (tmp_path / "degradation" / "report.md").read_text()
    for model in ("plain20", "plain32", "resnet20", "resnet32"):
        assert f"| [{model}](../cifar-runs/{model}) |" in report
        run = pool / model
        for name in ("config.json", "metrics.csv", "results.json", "responses.json"):
            assert (run / name).is_file(), run / name
        config = json.loads((run / "config.json").read_text())
        assert config["train"]["procs"] == 1 and config["environment"]["world_size"] == 1
        assert set(config["environment"]["cpu"]) == {"model", "isa", "cores"}
        assert json.loads((run / "results.json").read_text())["train_seconds"] > 0
        stats = json.loads((run / "responses.json").read_text())
        assert stats["split"] == "test" and stats["weights"] == "model.safetensors"
    # 3 classes: fc has 64*3+3 parameters instead of 650; beside it, the paper's 8.75% error
    assert "| [resnet20](../cifar-runs/resnet20) | 20 | 269,267 |" in report
    assert "| 8.75 |" in report and "smoke test" in report
    assert "process layout: 1 process per run; BN statistics over 16 images" in report
    assert "## Conclusions" in report and "**" in report and "wall time: " in report
    with Image.open(tmp_path / "degradation" / "degradation.png") as im:
        assert im.width > 1.8 * im.height  # two panels side by side
    written = {p: p.read_bytes() for p in (tmp_path / "degradation").iterdir()}

    again = cli(*fig6)  # finished runs are reused, and the report comes out the same
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished earlier") == 4 and "training (" not in again.stdout
    assert {p: p.read_bytes() for p in written} == written

    # Table 6 takes resnet20 and resnet32 from the pool: nothing is trained again
    table = cli(
        "cifar-table", *smoke, "--models", "resnet20", "resnet32", "--out",
        str(tmp_path / "cifar-table"),
    )  # fmt: skip
    assert table.returncode == 0, table.stderr[-2000:]
    assert table.stdout.count("finished earlier") == 2 and "training (" not in table.stdout
    rows = (tmp_path / "cifar-table" / "report.md").read_text()
    assert "| [resnet32](../cifar-runs/resnet32) | 32 | 463,699 |" in rows
    assert "| 0.46M | 7.51 |" in rows

    # --checkpoints: any weights, as before
    given = cli(
        "responses", *smoke, "--checkpoints", str(pool / "resnet20" / "model.safetensors"),
        "--out", str(tmp_path / "responses-given"),
    )  # fmt: skip
    assert given.returncode == 0, given.stderr[-2000:]
    stds = json.loads((tmp_path / "responses-given" / "responses.json").read_text())
    assert {k: len(v) for k, v in stds.items()} == {"resnet20": 19}

    # Fig. 7 from the statistics saved with the runs: no weights needed
    for run in pool.iterdir():
        (run / "model.safetensors").unlink()
        shutil.rmtree(run / "checkpoints")
    fig7 = cli(
        "responses", *smoke, "--depths", "20", "32", "--resnet-only-depths", "--out",
        str(tmp_path / "responses"),
    )  # fmt: skip
    assert fig7.returncode == 0, fig7.stderr[-2000:]
    assert "training (" not in fig7.stdout and "measured on" not in fig7.stdout
    stds = json.loads((tmp_path / "responses" / "responses.json").read_text())
    # every 3x3 layer: the stem plus two per basic block (6n+2 - 1 = 6n+1)
    lengths = {k: len(v) for k, v in stds.items()}
    assert lengths == {"plain20": 19, "plain32": 31, "resnet20": 19, "resnet32": 31}
    assert all(s >= 0 for v in stds.values() for s in v)
    assert "## Conclusions" in (tmp_path / "responses" / "report.md").read_text()
    assert (tmp_path / "responses" / "responses.png").exists()

    other = cli(*fig6, "--recipe", "paper-short")  # never mixed into runs of another recipe
    assert other.returncode == 2 and len(error_lines(other)) == 1
    assert other.stderr.startswith("error: ") and "recipe 'paper' -> 'paper-short'" in other.stderr


def test_a_run_of_another_process_layout_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    """--procs 2 trains in two DDP workers (BN over 8 of each 16 images); a report at the
    default --procs 1 refuses that run instead of mixing BN batch sizes in one figure."""
    smoke = ["--smoke", "--data", str(tiny_dataset)]
    out = str(tmp_path / "cifar-table")
    done = cli("cifar-table", *smoke, "--models", "resnet20", "--procs", "2", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    env = json.loads((tmp_path / "cifar-runs" / "resnet20" / "config.json").read_text())
    assert env["train"]["procs"] == 2 and env["environment"]["world_size"] == 2
    assert env["environment"]["launcher"] == "resnetlab"
    assert (
        "2 processes (DDP, one thread each) per run; BN statistics over 8 images"
        in (tmp_path / "cifar-table" / "report.md").read_text()
    )
    mixed = cli(
        "degradation", *smoke, "--depths", "20", "--resnet-only-depths", "--report-only",
        "--out", str(tmp_path / "degradation"),
    )  # fmt: skip
    assert mixed.returncode == 2 and len(error_lines(mixed)) == 1, mixed.stderr[-2000:]
    assert "procs 2 -> 1, BN over 8 -> 16 images per process" in mixed.stderr
    assert not (tmp_path / "degradation").exists()


def test_configs_written_before_procs_give_their_world_size(tmp_path: Path) -> None:
    """The committed runs predate train.procs: their recorded world size stands in."""
    from resnetlab.experiments.reproduce import _check_same_recipe

    committed = REPO / "reports" / "cifar-runs" / "resnet20" / "config.json"
    doc = json.loads(committed.read_text())
    assert "procs" not in doc["train"] and doc["environment"]["world_size"] == 1
    folder = RunFolder(tmp_path / "resnet20")
    folder.path.mkdir()
    folder.config.write_text(committed.read_text())
    # the lead's command: --recipe paper-short --iters 4000 --eval-points 20, --procs 1
    wanted = dict(data=doc["train"]["data"], iters=4000, eval_points=20, procs=1, seed=0)
    cfg = build_config("paper-short", "resnet20", wanted)
    _check_same_recipe(folder, cfg)  # reused as it is (flip and BN decay: the defaults)
    with pytest.raises(ResnetlabError, match=r"flip 'random' -> 'alternate'"):
        _check_same_recipe(folder, dataclasses.replace(cfg, flip="alternate"))
    with pytest.raises(ResnetlabError, match=r"procs 1 -> 2, BN over 128 -> 64 images"):
        _check_same_recipe(folder, dataclasses.replace(cfg, procs=2))
    doc["environment"]["world_size"] = 2  # an old run of two processes
    folder.config.write_text(json.dumps(doc))
    with pytest.raises(ResnetlabError, match=r"procs 2 -> 1"):
        _check_same_recipe(folder, cfg)


def test_reproduce_runs_are_fp32_on_every_device(tmp_path: Path) -> None:
    """A run trained on a GPU joins CPU runs in one figure: it must not be bf16 because
    amp's own default is bf16 on CUDA. Compile is speed only, passed through."""
    from resnetlab.cli import build_parser
    from resnetlab.experiments.reproduce import _train_config, make_spec

    args = build_parser("reproduce").parse_args(
        ["reproduce", "degradation", "--data", "x", "--device", "cuda", "--compile", "off"]
    )
    cfg = _train_config(args, make_spec("resnet110"), tmp_path)
    assert cfg.amp == "off" and cfg.compile == "off" and cfg.device == "cuda"


def test_a_run_resumed_on_another_machine_is_named_under_each(tmp_path: Path) -> None:
    """resnet110 trained on a GPU and was finished (its final evaluation) on a CPU: its
    config keeps both environments and the report's machine line names both."""
    from resnetlab.experiments.report import _machine_line
    from resnetlab.experiments.reproduce import RunOutcome, make_spec
    from resnetlab.training.outputs import earlier_environments

    cpu = {"torch": "2.13.0+cpu", "cpu": {"model": "Xeon", "isa": "AVX512", "cores": 2}}
    gpu = {
        "torch": "2.11.0+cu130",
        "cpu": {"model": "Xeon", "isa": "AVX512", "cores": 16},
        "accelerator": {"name": "NVIDIA H200", "conv_fp32": "ieee"},
        "threads": 2,
    }
    folder = RunFolder(tmp_path / "resnet110")
    folder.path.mkdir()
    assert earlier_environments(folder, gpu) == []  # a new run
    folder.config.write_text(json.dumps({"environment": gpu}))
    assert earlier_environments(folder, {**gpu, "threads": 4}) == []  # the same machine
    assert earlier_environments(folder, cpu) == [gpu]
    folder.config.write_text(json.dumps({"environment": cpu, "environments_before": [gpu]}))
    assert earlier_environments(folder, cpu) == [gpu]  # kept once, not again
    done = [
        RunOutcome(make_spec("resnet20"), tmp_path, "finished", saved={"environment": cpu}),
        RunOutcome(
            make_spec("resnet110"),
            folder.path,
            "finished",
            saved={"environment": cpu, "environments_before": [gpu]},
        ),
    ]
    assert _machine_line(done) == (
        "- machine: Xeon (AVX512, 2 cores), torch 2.13.0+cpu: resnet20, resnet110 (part of "
        "the run); NVIDIA H200 GPU (fp32, TF32 off), torch 2.11.0+cu130: resnet110 (part "
        "of the run)"
    )


def test_report_only_marks_missing_runs_and_trains_nothing(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnetlab.cli import main
    from resnetlab.experiments.reproduce import SMOKE

    monkeypatch.chdir(tmp_path)
    # an interrupted run: its config and one metrics row, no results
    pool = tmp_path / "runs" / "smoke" / "cifar-runs"  # --smoke never writes in reports/
    run = pool / "resnet20-B"
    run.mkdir(parents=True)
    fields = dict(SMOKE, data=str(tiny_dataset), shortcut="B", procs=1, compile="off")
    cfg = build_config("paper", "resnet20", dict(fields, channels_last="off"))
    (run / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
    (run / "metrics.csv").write_text(
        "iteration,epoch,lr,train_loss,train_error,val_error,test_error,images_per_s\n"
        "4,1,0.1,1.0,0.5,0.5,0.5,100\n"
    )
    args = ["reproduce", "shortcuts", "--smoke", "--data", str(tiny_dataset), "--report-only"]
    assert main(args) == 0
    report = (tmp_path / "runs" / "smoke" / "shortcuts" / "report.md").read_text()
    assert "0 of 6 finished" in report and "resnet20-C-seed1: not run yet" in report
    assert "resnet20-B: unfinished (iteration 4 of 12)" in report
    assert "| B | projections" in report and "not testable yet" in report
    assert "--seeds 0 1" in report and "--report-only" not in report
    assert sorted(p.name for p in pool.iterdir()) == ["resnet20-B"]  # nothing trained
    assert not (tmp_path / "reports").exists()


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


@pytest.mark.parametrize("procs", [1, 2])
def test_a_stopped_run_names_the_reproduce_command_to_continue(
    tiny_dataset: Path, tmp_path: Path, procs: int, capfd: pytest.CaptureFixture[str]
) -> None:
    """A run reproduce started resumes through reproduce (which checks its settings
    against the report's), so that is the command its stop message gives, in one
    process or in DDP workers; ``train --resume`` would skip that check."""
    from conftest import tiny_config

    from resnetlab.experiments.reproduce import _train_one

    out = tmp_path / "resnet20"
    cfg = tiny_config(tiny_dataset, out, stop_at=2, procs=procs, batch_size=8)
    again = "resnetlab reproduce cifar-table --data X --models resnet20"
    with pytest.raises(ResnetlabError, match=r"stopped .*run the same command again"):
        _train_one(cfg, RunFolder(out), "[1/1] resnet20", again)
    said = capfd.readouterr()
    assert f"continue with: {again}" in said.out + said.err
    assert "train --out" not in said.out + said.err
    assert (out / "checkpoints" / "last.pt").is_file()


def test_a_depth_step_within_the_seed_spread_is_named_as_no_evidence() -> None:
    from resnetlab.experiments.report import SeedSpread, _trend

    points = [(20, 0.1767), (32, 0.1765), (56, 0.1692)]
    plain = _trend(points, rises=False)
    assert plain.startswith("**supported**") and plain.endswith("at every step.")
    spread = SeedSpread(0.0049, "resnet20 / resnet20-seed1")
    verdict = _trend(points, rises=False, spread=spread)
    assert verdict.startswith("**supported**")  # 20 -> 56 falls by 0.75 points > 0.49
    assert verdict.endswith(
        "at every step; within the seed-to-seed spread (0.49 points, resnet20 / "
        "resnet20-seed1), so not evidence alone: 20→32 (0.02 points)."
    )
    clear = _trend([(20, 0.1767), (56, 0.1692)], rises=False, spread=spread)
    assert clear.endswith(
        "each step more than the seed-to-seed spread (0.49 points, resnet20 / resnet20-seed1)."
    )
    # Table 6 at this scale: overall 1.04 points down, two steps inside the spread
    table = [(20, 0.1767), (32, 0.1765), (44, 0.1691), (56, 0.1692), (110, 0.1663)]
    assert _trend(table, rises=False, spread=spread) == (
        "**partly supported**: 17.67 / 17.65 / 16.91 / 16.92 / 16.63% at depth 20 / 32 / 44 / "
        "56 / 110; the deepest is below the shallowest by 1.04 points, more than the "
        "seed-to-seed spread (0.49 points, resnet20 / resnet20-seed1), but not at every step "
        "(not 44→56); within that spread, so not evidence alone: 20→32 (0.02 points), 44→56 "
        "(0.01 points), 56→110 (0.29 points)."
    )
    within = _trend([(20, 0.1767), (32, 0.1745)], rises=False, spread=spread)
    assert within.startswith("**not evidence either way**"), within


def test_the_seed_spread_comes_from_the_pools_seeds_of_a_reports_run(tmp_path: Path) -> None:
    """Only folders NAME-seedK trained with the run's setting but for the seed count."""
    from resnetlab.experiments.report import Context, _seed_spread
    from resnetlab.experiments.reproduce import make_spec, read_outcome

    pool = tmp_path / "cifar-runs"
    for name in ("resnet20", "resnet20-seed1", "resnet56"):
        shutil.copytree(REPO / "reports" / "cifar-runs" / name, pool / name)
    outcomes = [read_outcome(make_spec(m), RunFolder(pool / m)) for m in ("resnet20", "resnet56")]
    ctx = Context(argparse.Namespace(), tmp_path / "degradation", pool, "", outcomes[0].config)
    spread = _seed_spread(ctx, outcomes)
    assert spread is not None and spread.between == "resnet20 / resnet20-seed1"
    assert abs(spread.error - (0.1816 - 0.1767)) < 1e-9  # the committed runs' test errors
    # a "seed" trained with another setting (a longer run) is not one, however far off
    other = pool / "resnet20-seed2"
    shutil.copytree(pool / "resnet20-seed1", other)
    doc = json.loads((other / "config.json").read_text())
    doc["train"].update(seed=2, iters=8000)
    (other / "config.json").write_text(json.dumps(doc))
    results = json.loads((other / "results.json").read_text())
    results["test"]["top1_acc"] = 0.5
    (other / "results.json").write_text(json.dumps(results))
    assert _seed_spread(ctx, outcomes) == spread
    doc["train"]["iters"] = 4000  # the same setting: now it counts
    (other / "config.json").write_text(json.dumps(doc))
    wider = _seed_spread(ctx, outcomes)
    assert wider is not None and wider.between == "resnet20 / resnet20-seed1 / resnet20-seed2"
    assert abs(wider.error - (0.5 - 0.1767)) < 1e-9
    assert _seed_spread(ctx, outcomes[1:]) is None  # resnet56 has no seeds in the pool
