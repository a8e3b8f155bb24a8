"""Training at tiny scale: recipes, schedule, run folder, exact resume, divergence,
signals, and DDP equivalence (2 CPU processes vs gradient accumulation)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_config

from resnetlab.errors import ResnetlabError
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.config import TrainConfig
from resnetlab.training.loop import TrainingDiverged, train
from resnetlab.training.recipes import build_config
from resnetlab.training.schedule import learning_rate

REPO = Path(__file__).resolve().parents[1]


def test_paper_recipe_schedule_and_scaling() -> None:
    cfg = build_config("paper", "resnet56", {})
    assert (cfg.iters, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (
        64_000,
        128,
        0.1,
        0.9,
        1e-4,
    )
    assert cfg.val_size == 5000 and cfg.warmup == "none"
    lrs = [learning_rate(cfg, i) for i in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    short = build_config("paper", "resnet20", {"iters": 6400})
    assert short.milestones == [3200, 4800]
    deep = build_config("paper", "resnet110", {})
    assert deep.warmup == "paper"
    assert learning_rate(deep, 10) == pytest.approx(0.01)
    assert learning_rate(deep, 10, warmup_done_at=5) == pytest.approx(0.1)
    imagenet = build_config("paper-imagenet", "resnet50", {})
    assert imagenet.batch_size == 256 and imagenet.iters == 600_000


def test_fast_recipe_warmup_then_linear_decay() -> None:
    cfg = build_config("fast", "resnet20", {"iters": 1000, "warmup_iters": 100})
    assert learning_rate(cfg, 0) == pytest.approx(cfg.lr / 100)
    assert learning_rate(cfg, 99) == pytest.approx(cfg.lr)
    assert learning_rate(cfg, 550) == pytest.approx(cfg.lr * 0.5)
    assert learning_rate(cfg, 1000) == pytest.approx(0.0)
    assert cfg.flip == "alternate" and build_config("paper", "resnet20", {}).flip == "random"


def test_fast_long_keeps_the_setting_it_was_measured_with() -> None:
    """fast-long derives from fast; later changes to fast must not move its figure."""
    fast, long = build_config("fast", "resnet20", {}), build_config("fast-long", "resnet20", {})
    assert (fast.lr, fast.label_smoothing, fast.lookahead, fast.pad) == (0.3, 0.1, 5, 1)
    assert (long.lr, long.label_smoothing, long.lookahead, long.pad) == (0.2, 0.2, 0, 2)
    assert (long.iters, long.warmup_iters, long.flip) == (6000, 360, "alternate")


def test_paper_short_recipe_is_the_paper_optimiser_with_warmup_and_decay() -> None:
    cfg = build_config("paper-short", "resnet56", {"iters": 1500})
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.val_size) == (
        128,
        0.1,
        0.9,
        1e-4,
        5000,
    )
    assert cfg.normalize == "pixel" and not cfg.nesterov and cfg.label_smoothing == 0
    assert cfg.warmup_iters == 150  # 10% of the run, whatever its length
    assert learning_rate(cfg, 0) == pytest.approx(0.1 / 150)
    assert learning_rate(cfg, 149) == pytest.approx(0.1)
    assert learning_rate(cfg, 150 + 675) == pytest.approx(0.05)
    assert learning_rate(cfg, 1500) == pytest.approx(0.0)
    # the deepest nets get no extra §4.2 warm-up on top of the linear one
    assert build_config("paper-short", "resnet110", {}).warmup == "linear"


def test_speed_choices_are_logged_and_switchable() -> None:
    from resnetlab.models import create_model
    from resnetlab.training import allocator, speed

    model, lines = create_model("resnet20"), []
    cpu = torch.device("cpu")
    for flag, expected in (("off", False), ("auto", allocator.glibc_available())):
        cfg = TrainConfig(iters=10, malloc_tuning=flag, channels_last="off", compile="off")
        choices = speed.choose(cfg, model, cpu, 32, 3, lines.append)
        assert choices["malloc_tuning"] is expected
        assert choices["channels_last"] is False and choices["compile"] is False
    assert "malloc keeps freed memory" in lines[-1] or not allocator.glibc_available()
    assert "malloc" not in lines[0]
    with pytest.raises(ResnetlabError, match="malloc_tuning"):
        TrainConfig(malloc_tuning="maybe").validate()


def test_amp_off_on_cuda_is_ieee_fp32() -> None:
    """cuDNN convolutions default to TF32 on CUDA; an fp32 run (``--amp off``) turns it off
    so that it computes as the CPU runs it is compared with, and bf16 runs leave it on.
    A resumed run takes its choices from the checkpoint, not from ``choose``: ``apply``
    makes them in both cases. The flags are plain settings, so this runs without a GPU."""
    from resnetlab.models import create_model
    from resnetlab.training import speed

    conv = torch.backends.cudnn.conv
    before = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    cuda, lines = torch.device("cuda"), []
    model = create_model("resnet20")
    try:
        for amp, precision, words in (("off", "ieee", "without TF32"), ("auto", "tf32", "TF32")):
            cfg = TrainConfig(iters=10, amp=amp, channels_last="off", compile="off")
            choices = speed.choose(cfg, model, cuda, 32, 3, lines.append)
            assert words in lines[-1]
            speed.apply(model, cuda, choices)
            assert conv.fp32_precision == precision, amp
            assert torch.backends.cuda.matmul.fp32_precision == precision, amp
        assert "amp bf16" in lines[-1] and "amp off" in lines[0]
        resumed = {"amp": "off", "channels_last": False}  # as a checkpoint holds them
        speed.apply(model, cuda, resumed)
        assert conv.fp32_precision == "ieee"
    finally:
        conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before


def test_logit_scale_is_a_temperature_of_the_training_loss_only() -> None:
    from resnetlab.cli import build_parser
    from resnetlab.training.step import ScaledCrossEntropy
    from resnetlab.training.train_command import new_run_config

    logits, target = torch.randn(8, 10), torch.arange(8)
    loss = ScaledCrossEntropy(0.5, label_smoothing=0.2)(logits, target)
    expected = torch.nn.functional.cross_entropy(logits * 0.5, target, label_smoothing=0.2)
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target))
    args = build_parser("train").parse_args(
        [
            "train",
            "--model",
            "resnet20",
            "--data",
            "cifar10",
            "--recipe",
            "fast",
            "--logit-scale",
            "0.5",
        ]
    )
    assert new_run_config(args).logit_scale == 0.5
    assert build_config("fast", "resnet20", {}).logit_scale == 1.0
    with pytest.raises(ResnetlabError, match="logit-scale"):
        TrainConfig(logit_scale=0.0).validate()


def test_bad_config_values_are_refused() -> None:
    with pytest.raises(ResnetlabError, match="batch size"):
        build_config("paper", "resnet20", {"batch_size": 0})
    with pytest.raises(ResnetlabError, match="recipe"):
        build_config("nope", "resnet20", {})


def test_run_folder_explains_itself(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny_config(tiny_dataset, out))
    assert result.finished and result.iteration == 8
    for name in ["config.json", "metrics.csv", "curves.png", "results.json", "checkpoints/last.pt"]:
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    doc = json.loads((out / "config.json").read_text())
    assert TrainConfig.from_dict(doc["train"]) == tiny_config(tiny_dataset, out)
    assert doc["model"]["num_classes"] == 3
    assert doc["environment"]["accelerator"] is None  # a CPU run
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,epoch,lr,train_loss,train_error,val_error,test_error")
    assert [r.split(",")[0] for r in rows[1:]] == ["4", "8"]
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["n"] == 24 and 0 <= res["test"]["top1_acc"] <= 1
    assert res["train_seconds"] > 0  # what the run cost, for the reports
    assert set(doc["environment"]["cpu"]) == {"model", "isa", "cores"}
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 8 and ckpt["meta"]["classes"] == ["blue", "green", "red"]


def test_resume_is_exact(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(tiny_dataset, tmp_path / "a", iters=10, eval_every=5))
    first = train(tiny_config(tiny_dataset, tmp_path / "b", iters=10, eval_every=5, stop_at=5))
    assert not first.finished and first.iteration == 5
    before = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["train_seconds"]
    resumed = train(tiny_config(tiny_dataset, tmp_path / "b", iters=10, eval_every=5), resume=True)
    assert resumed.finished and resumed.iteration == 10 and straight.finished
    assert resumed.train_seconds is not None and resumed.train_seconds > before > 0  # summed
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for s in a["optimizer"]["state"]:
        assert torch.equal(
            a["optimizer"]["state"][s]["momentum_buffer"],
            b["optimizer"]["state"][s]["momentum_buffer"],
        )
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:6] for r in rows_a] == [r.split(",")[:6] for r in rows_b]


def test_divergence_stops_and_keeps_last_good_checkpoint(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nan"
    cfg = tiny_config(
        tiny_dataset, out, iters=40, eval_every=2, milestones=[4], lr_decay=1e12, lr=0.05
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(cfg)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["iteration"] >= 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_sigterm_saves_and_resumes(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resnetlab.data as data

    real = data.make_loader

    class SignallingLoader:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def __len__(self) -> int:
            return len(self.inner)  # type: ignore[arg-type]

        def epoch(self, e: int, start_batch: int = 0):  # type: ignore[no-untyped-def]
            for i, batch in enumerate(self.inner.epoch(e, start_batch=start_batch)):  # type: ignore[attr-defined]
                if e == 0 and start_batch + i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

    def make_loader(split, batch_size, **kw):  # type: ignore[no-untyped-def]
        inner = real(split, batch_size, **kw)
        return SignallingLoader(inner) if kw.get("train") else inner

    monkeypatch.setattr(data, "make_loader", make_loader)
    out = tmp_path / "sig"
    result = train(tiny_config(tiny_dataset, out, iters=6, eval_every=6))
    assert not result.finished and result.iteration == 3
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.setattr(data, "make_loader", real)
    assert train(tiny_config(tiny_dataset, out, iters=6, eval_every=6), resume=True).finished


def test_cli_train_and_refuses_to_overwrite(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = [
        "train",
        "--data",
        str(tiny_dataset),
        "--iters",
        "2",
        "--batch-size",
        "12",
        "--val-size",
        "0",
        "--compile",
        "off",
        "--out",
        str(out),
    ]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "test accuracy:" in done.stdout and f"run folder: {out}" in done.stdout
    again = run_cli(*args)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert again.stderr.count("\n") == 1  # one clear line, no traceback


def test_ddp_two_processes_equal_single_process_with_accumulation(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "resnetlab",
        "train",
        "--data",
        str(tiny_dataset),
        "--iters",
        "4",
        "--batch-size",
        "12",
        "--val-size",
        "0",
        "--eval-every",
        "4",
        "--compile",
        "off",
        "--channels-last",
        "off",
        "--threads",
        "1",
        "--out",
        str(out),
        "--log-every",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "weights identical on all 2 ranks" in done.stdout
    single = train(
        tiny_config(
            tiny_dataset, tmp_path / "single", iters=4, eval_every=4, val_size=0, accum_steps=2
        )
    )
    assert single.finished
    a = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    for k, v in a.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_strict_data_flag(tiny_dataset: Path, tmp_path: Path) -> None:
    (tiny_dataset / "train" / "red" / "broken.png").write_bytes(b"\x89PNG not an image")
    base = [
        "train",
        "--data",
        str(tiny_dataset),
        "--iters",
        "1",
        "--batch-size",
        "12",
        "--val-size",
        "0",
        "--compile",
        "off",
    ]
    strict = run_cli(*base, "--strict-data", "--out", str(tmp_path / "s"))
    assert strict.returncode == 2 and "broken.png" in strict.stderr
    assert strict.stderr.strip().splitlines()[-1].startswith("error:")
    lenient = run_cli(*base, "--out", str(tmp_path / "l"))
    assert lenient.returncode == 0, lenient.stderr
    assert "skipped 1" in lenient.stderr and "test accuracy:" in lenient.stdout


def test_norm_weight_decay_spares_bn_and_biases(tiny_dataset: Path, tmp_path: Path) -> None:
    """--norm-weight-decay 0: BN scales/shifts and biases are not decayed, conv and FC
    weights are (one SGD step with zero gradients shows each group's decay)."""
    from resnetlab.models import create_model
    from resnetlab.training.finetune import param_groups

    model = create_model("resnet20", num_classes=3)
    opt = torch.optim.SGD(param_groups(model, [], 1.0, 0.0), lr=0.1, weight_decay=0.5)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1.0 if p.dim() == 1 else 1 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
    # a run saves its groups: the 1-d parameters are the ones without decay
    cfg = tiny_config(tiny_dataset, tmp_path / "r", norm_weight_decay=0.0, iters=2, eval_every=2)
    train(cfg)
    saved = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["optimizer"]
    no_decay = [g for g in saved["param_groups"] if g["weight_decay"] == 0.0]
    n_1d = sum(1 for p in model.parameters() if p.dim() == 1)
    assert sum(len(g["params"]) for g in no_decay) == n_1d
    assert (
        json.loads((tmp_path / "r" / "config.json").read_text())["train"]["norm_weight_decay"] == 0
    )
    bad = run_cli("train", "--data", str(tiny_dataset), "--norm-weight-decay", "-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
