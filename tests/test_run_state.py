"""Runs you can trust: the TrainState, the run folder, resume anywhere, and the run
bookkeeping faults of issue #13 (each test failed on the code before it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_config

from resnetlab.errors import ResnetlabError
from resnetlab.training import setup as training_setup
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.loop import train
from resnetlab.training.run_folder import RunFolder


def _cli_train(data: Path, out: Path | str, *extra: str, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    return run_cli(
        "train", "--data", str(data), "--iters", "4", "--batch-size", "12", "--val-size", "6",
        "--eval-every", "2", "--threads", "1", "--channels-last", "off", "--out", str(out),
        *extra, cwd=cwd,
    )  # fmt: skip


def _same_state(a: Path, b: Path) -> None:
    """Weights, optimizer state and the deterministic metrics columns are identical."""
    ca, cb = (
        load_checkpoint(a / "checkpoints" / "last.pt"),
        load_checkpoint(b / "checkpoints" / "last.pt"),
    )
    assert ca["iteration"] == cb["iteration"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for s, st in ca["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], cb["optimizer"]["state"][s]["momentum_buffer"])
    rows_a = [r.split(",")[:7] for r in (a / "metrics.csv").read_text().splitlines()]
    rows_b = [r.split(",")[:7] for r in (b / "metrics.csv").read_text().splitlines()]
    assert rows_a == rows_b


# -- 1: --resume continues the folder it is given --------------------------------------


def test_resume_uses_the_given_folder_copied_moved_or_relative(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    first = _cli_train(tiny_dataset, tmp_path / "orig", "--stop-at", "2")
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "orig" / "metrics.csv").read_text()
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    done = run_cli("train", "--out", str(tmp_path / "copy"), "--resume")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "copy/checkpoints/last.pt")["iteration"] == 4
    assert (tmp_path / "orig" / "metrics.csv").read_text() == before  # original untouched
    assert not (tmp_path / "orig" / "results.json").exists()
    (tmp_path / "orig").rename(tmp_path / "moved")
    moved = run_cli("train", "--out", str(tmp_path / "moved"), "--resume")
    assert moved.returncode == 0, moved.stderr
    # a relative --out (like the default runs/...) resumed from another directory
    (tmp_path / "a").mkdir()
    rel = _cli_train(tiny_dataset, "runs/rel", "--stop-at", "2", cwd=tmp_path / "a")
    assert rel.returncode == 0, rel.stderr
    again = run_cli("train", "--out", "a/runs/rel", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "a/runs/rel/results.json").exists()


# -- 2, 8: lengths and schedules ---------------------------------------------------------


def test_zero_length_is_refused_not_the_full_recipe(tiny_dataset: Path, tmp_path: Path) -> None:
    for flag in ("--iters", "--epochs"):
        done = run_cli(
            "train", "--data", str(tiny_dataset), flag, "0", "--out", str(tmp_path / "z")
        )
        assert done.returncode == 2 and "must be > 0" in done.stderr, done.stderr
        assert not (tmp_path / "z").exists()


def test_config_with_new_length_rescales_its_schedule(tmp_path: Path) -> None:
    from resnetlab.cli import build_parser
    from resnetlab.training.config import TrainConfig
    from resnetlab.training.recipes import build_config
    from resnetlab.training.train_command import _given, _new_config

    run = tmp_path / "x"
    run.mkdir()
    full = build_config("paper", "resnet20", {"out": str(run)})
    (run / "config.json").write_text(json.dumps({"train": full.to_dict()}))
    args = build_parser("train").parse_args(
        ["train", "--config", str(run / "config.json"), "--iters", "6400"]
    )
    cfg = _new_config(args, _given(args))
    assert (cfg.iters, cfg.milestones) == (6400, [3200, 4800])
    assert cfg.out != str(run)  # never writes into the run it was copied from
    args = build_parser("train").parse_args(
        ["train", "--config", str(run / "config.json"), "--iters", "6400", "--milestones", "100"]
    )
    assert _new_config(args, _given(args)).milestones == [100]  # explicit wins
    # resuming with a new length rescales too
    assert TrainConfig(**full.to_dict()).with_length(32_000).milestones == [16_000, 24_000]


# -- 4: one writer per folder -----------------------------------------------------------


def test_second_process_on_the_same_folder_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    holder = RunFolder(out)
    holder.acquire()
    try:
        done = _cli_train(tiny_dataset, out)
        assert done.returncode == 2 and "in use by resnetlab process" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.release()
    assert _cli_train(tiny_dataset, out).returncode == 0


# -- 5: crashes around the first checkpoint ------------------------------------------------


def test_folder_killed_before_its_first_checkpoint_restarts_or_resumes(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "early"
    assert _cli_train(tiny_dataset, out, "--stop-at", "2").returncode == 0
    # as a kill -9 during the first checkpoint write leaves it: a temp file, no last.pt
    ckpts = out / "checkpoints"
    (ckpts / "last.pt").rename(ckpts / ".last.pt.12345.tmp")
    (ckpts / "best.pt").unlink()
    resumed = run_cli("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "no completed checkpoint" in resumed.stdout
    assert not list(ckpts.glob("*.tmp")) and (out / "results.json").exists()
    # and a plain restart of such a folder works too
    out2 = tmp_path / "early2"
    assert _cli_train(tiny_dataset, out2, "--stop-at", "2").returncode == 0
    shutil.rmtree(out2 / "checkpoints")
    assert _cli_train(tiny_dataset, out2).returncode == 0


def test_crash_between_best_and_last_resumes_from_best(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "between"
    assert _cli_train(tiny_dataset, out, "--stop-at", "2").returncode == 0
    (out / "checkpoints" / "last.pt").unlink()
    done = run_cli("train", "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming from best.pt" in done.stdout


def test_full_disk_is_one_line_and_leaves_no_partial_file(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(obj: object, f: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 0")

    monkeypatch.setattr(torch, "save", no_space)
    out = tmp_path / "full"
    with pytest.raises(ResnetlabError, match=r"cannot write .*last\.pt"):
        train(tiny_config(tiny_dataset, out))
    assert not list((out / "checkpoints").glob("*"))


# -- 6: stop points and settings on resume ------------------------------------------------


def test_resume_after_stop_at_runs_to_the_end_and_refuses_changed_settings(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stop"
    first = _cli_train(tiny_dataset, out, "--stop-at", "2")
    assert first.returncode == 0 and "--stop-at" in first.stdout and "--resume" in first.stdout
    changed = run_cli("train", "--out", str(out), "--resume", "--lr", "0.05", "--batch-size", "6")
    assert changed.returncode == 2
    assert "--lr (0.1 -> 0.05)" in changed.stderr and "--batch-size" in changed.stderr
    assert changed.stderr.count("\n") == 1
    longer = run_cli("train", "--out", str(out), "--resume", "--iters", "6")
    assert longer.returncode == 0, longer.stderr
    assert "test accuracy" in longer.stdout
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 6
    assert json.loads((out / "config.json").read_text())["train"]["iters"] == 6
    shorter = run_cli("train", "--out", str(out), "--resume", "--iters", "4")
    assert shorter.returncode == 2 and "would end before it" in shorter.stderr


# -- 7: checkpoints on their own interval ------------------------------------------------------


def test_checkpoint_every_shorter_than_evaluation(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[tuple[str, int]] = []
    real = training_setup.save_checkpoint

    def spy(path: Path, state: dict, *a: object) -> None:  # type: ignore[type-arg]
        saved.append((path.name, state["iteration"]))
        real(path, state, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(training_setup, "save_checkpoint", spy)
    train(tiny_config(tiny_dataset, tmp_path / "c", iters=8, eval_every=8, checkpoint_every=2))
    assert [i for name, i in saved if name == "last.pt"] == [2, 4, 6, 8]


# -- 9: exact resume anywhere, inside the §4.2 warm-up too -------------------------------------

_KILL_AT = textwrap.dedent(
    """
    import os, signal, sys
    import resnetlab.data as data
    from resnetlab.training.config import TrainConfig
    from resnetlab.training.loop import train
    real = data.make_loader
    kill_at, sig = int(sys.argv[2]), int(sys.argv[3])
    class Wrap:
        def __init__(self, inner): self.inner = inner
        def __len__(self): return len(self.inner)
        def epoch(self, e, start_batch=0):
            for i, b in enumerate(self.inner.epoch(e, start_batch=start_batch)):
                if e * len(self.inner) + start_batch + i == kill_at:
                    os.kill(os.getpid(), sig)
                yield b
    data.make_loader = lambda split, bs, **kw: Wrap(real(split, bs, **kw)) if kw.get("train") else real(split, bs, **kw)
    cfg = TrainConfig.from_dict(__import__("json").loads(sys.argv[1]))
    train(cfg, resume=os.path.exists(cfg.out + "/checkpoints/last.pt"))
    """
)


def _interrupted(cfg_dict: dict, kill_at: int, sig: int) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _KILL_AT, json.dumps(cfg_dict), str(kill_at), str(sig)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_resume_is_exact_between_evaluations_and_inside_the_paper_warmup(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    kw = dict(iters=12, eval_every=4, warmup="paper", lr=0.02)
    straight = train(tiny_config(tiny_dataset, tmp_path / "straight", **kw))
    warm_end = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")["warmup_done_at"]
    assert straight.finished and warm_end is not None and warm_end > 2  # 2 is inside it

    out = tmp_path / "stopped"
    cfg = tiny_config(tiny_dataset, out, checkpoint_every=5, **kw).to_dict()
    # SIGTERM during iteration 2 (inside the warm-up): checkpoint at 2, exit
    assert _interrupted(cfg, 1, signal.SIGTERM).returncode == 0
    ck = load_checkpoint(out / "checkpoints/last.pt")
    assert ck["iteration"] == 2 and ck["warmup_done_at"] is None
    # kill -9 during iteration 8, after the checkpoint at 5: resumes from 5
    assert _interrupted(cfg, 7, signal.SIGKILL).returncode == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoints/last.pt")["iteration"] == 5
    # --stop-at 7, then to the end
    train(tiny_config(tiny_dataset, out, checkpoint_every=5, stop_at=7, **kw), resume=True)
    assert load_checkpoint(out / "checkpoints/last.pt")["iteration"] == 7
    assert train(tiny_config(tiny_dataset, out, checkpoint_every=5, **kw), resume=True).finished
    _same_state(tmp_path / "straight", out)
    assert load_checkpoint(out / "checkpoints/last.pt")["warmup_done_at"] == warm_end


def test_speed_choices_are_made_once_and_reused_on_resume(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "speed"
    train(tiny_config(tiny_dataset, out, stop_at=4))
    first = load_checkpoint(out / "checkpoints/last.pt")["choices"]
    assert set(first) >= {"channels_last", "compile", "amp"}

    def no_probe(*a: object, **k: object) -> None:
        raise AssertionError("speed settings chosen again on resume")

    monkeypatch.setattr(training_setup.speed, "choose", no_probe)
    assert train(tiny_config(tiny_dataset, out), resume=True).choices == first


# -- 13: output in a pipe, small folders ------------------------------------------------------


def test_progress_lines_when_output_is_not_a_terminal(tiny_dataset: Path, tmp_path: Path) -> None:
    done = run_cli(
        "train", "--data", str(tiny_dataset), "--iters", "3", "--batch-size", "12",
        "--eval-every", "3", "--out", str(tmp_path / "p"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "iter 1/3" in done.stdout  # a line right after the first step, not only at the end
    # the paper recipe's 5,000-image hold-out does not fit 72 images: a tenth, stated
    assert "holding out 7 of 72 training images" in done.stdout
