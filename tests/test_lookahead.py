"""--lookahead: the average's arithmetic, its place in a run, and an exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_config
from torch import nn

from resnetlab.training import setup as training_setup
from resnetlab.training.checkpoint import load_checkpoint
from resnetlab.training.lookahead import Lookahead, decay_at
from resnetlab.training.loop import train


def test_decay_ramps_from_zero_to_095_to_the_power_of_the_interval() -> None:
    assert decay_at(0, 3000, 5) == 0.0
    assert decay_at(3000, 3000, 5) == pytest.approx(0.95**5)
    assert decay_at(1500, 3000, 5) == pytest.approx(0.95**5 / 8)
    assert decay_at(4000, 3000, 5) == pytest.approx(0.95**5)  # never beyond the end


def test_update_blends_weights_and_bn_statistics_and_resets_the_live_net() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    la = Lookahead(net, every=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net[1].running_mean.fill_(2.0)  # type: ignore[operator]
    net[1].num_batches_tracked.fill_(7)  # type: ignore[operator]
    live = {k: v.clone() for k, v in net.state_dict().items()}
    la.update(net, 6, 8)
    d = 0.95**2 * (6 / 8) ** 3
    after = net.state_dict()
    for k in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        expected = d * before[k] + (1 - d) * live[k]
        assert torch.allclose(after[k], expected, atol=1e-6), k
        assert torch.equal(la.average[k], after[k]), k
    assert int(after["1.num_batches_tracked"]) == 7  # a counter, not averaged
    assert la.due(6, 8) and la.due(7, 7) and not la.due(7, 8)


def test_an_average_kept_at_another_interval_or_of_another_model_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    saved = Lookahead(net, every=5).state_dict()
    Lookahead(net, every=5).load_state_dict(saved)
    with pytest.raises(ValueError, match="every 5 iterations, this run keeps it every 2"):
        Lookahead(net, every=2).load_state_dict(saved)
    with pytest.raises(ValueError, match="does not match the model"):
        Lookahead(nn.Sequential(nn.Conv2d(3, 4, 3)), every=5).load_state_dict(saved)


def test_the_first_update_of_a_run_is_the_hand_computed_blend(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With and without --lookahead the first 4 steps are the same SGD steps; at 4 the
    lookahead run's weights are decay x initial + (1 - decay) x the plain run's."""
    initial: dict[str, torch.Tensor] = {}

    class Recording(Lookahead):
        def __init__(self, model: nn.Module, every: int) -> None:
            super().__init__(model, every)
            initial.update({k: v.clone() for k, v in self.average.items()})

    monkeypatch.setattr(training_setup, "Lookahead", Recording)
    kw = dict(iters=8, stop_at=4, val_size=0, eval_every=4, lr=0.05)
    train(tiny_config(tiny_dataset, tmp_path / "plain", **kw))
    train(tiny_config(tiny_dataset, tmp_path / "la", lookahead=4, **kw))
    plain = load_checkpoint(tmp_path / "plain/checkpoints/last.pt")["model"]
    ahead = load_checkpoint(tmp_path / "la/checkpoints/last.pt")
    d = decay_at(4, 8, 4)
    assert 0.05 < d < 0.2 and initial
    for k, v0 in initial.items():
        expected = d * v0 + (1 - d) * plain[k]
        assert torch.allclose(ahead["model"][k], expected, atol=1e-5), k
        assert torch.equal(ahead["lookahead"]["average"][k], ahead["model"][k]), k
    moved = max((plain[k] - v0).abs().max().item() for k, v0 in initial.items())
    assert moved > 1e-3  # training moved the weights, so the blend is not trivially equal


def test_resume_continues_the_average_exactly_and_the_run_ends_on_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    kw = dict(iters=12, val_size=0, eval_every=6, lookahead=5)
    train(tiny_config(tiny_dataset, tmp_path / "straight", **kw))
    out = tmp_path / "stopped"
    train(tiny_config(tiny_dataset, out, stop_at=7, **kw))  # between updates 5 and 10
    assert train(tiny_config(tiny_dataset, out, **kw), resume=True).finished
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(out / "checkpoints/last.pt")
    assert a["iteration"] == b["iteration"] == 12
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["lookahead"]["average"].items():
        assert torch.equal(v, b["lookahead"]["average"][k]), k
        assert torch.equal(v, a["model"][k]), k  # the last iteration (12) updates too


def test_negative_lookahead_is_one_line(tiny_dataset: Path, tmp_path: Path) -> None:
    r = run_cli("train", "--data", str(tiny_dataset), "--lookahead", "-1",
                "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["error: lookahead must be >= 0 (0: off)"]
    assert not (tmp_path / "x").exists()
