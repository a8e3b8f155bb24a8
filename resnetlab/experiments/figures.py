"""Figures drawn as the paper draws them: Fig. 6 (error curves) and Fig. 7 (responses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnetlab.training.metrics import plot_curves


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> None:
    plot_curves(runs, path, title=title)


def plot_degradation(outcomes: list[Any], path: Path) -> None:
    """Fig. 6: plain nets left, ResNets right; one colour per depth in both panels."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    depths = sorted({int("".join(c for c in o.spec.model if c.isdigit())) for o in outcomes})
    cmap = plt.get_cmap("tab10")
    for ax, kind, title in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets")):
        runs = {
            f"{kind}-{d}": o.rows for d in depths for o in outcomes if o.spec.model == f"{kind}{d}"
        }
        colors = {f"{kind}-{d}": cmap(i) for i, d in enumerate(depths)}
        plot_curves(runs, path, title=title, ax=ax, colors=colors)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_responses(stds: dict[str, list[float]], path: Path) -> None:
    """Fig. 7: std of 3x3 layer responses, by layer index (top) and sorted (bottom)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, (name, s) in enumerate(stds.items()):
        style = "--" if name.startswith("plain") else "-"
        top.plot(range(1, len(s) + 1), s, style, color=cmap(i % 10), label=name, linewidth=1.3)
        bottom.plot(
            range(1, len(s) + 1),
            sorted(s, reverse=True),
            style,
            color=cmap(i % 10),
            label=name,
            linewidth=1.3,
        )
    values = [v for s in stds.values() for v in s if v > 0]
    wide = bool(values) and max(values) / min(values) > 100  # one outlier would flatten the rest
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std" + (" (log scale)" if wide else ""))
        if wide:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
