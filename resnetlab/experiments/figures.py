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
    if runs:
        plot_curves(runs, path, title=title)
        return
    plt = _pyplot()  # a partial report's figure before any run has finished
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ax.set_title(f"{title} (no finished run yet)")
    ax.set_xlabel("iter.")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _depth(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


def plot_degradation(outcomes: list[Any], path: Path) -> None:
    """Fig. 6: plain nets left, ResNets right (the paper's left and middle panels); one
    colour per depth in both panels, so plain-20 and ResNet-20 match. Runs not finished
    keep their colour (a partial figure's colours are the final ones) but draw nothing."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    depths = sorted({_depth(o.spec.model) for o in outcomes})
    outcomes = [o for o in outcomes if getattr(o, "finished", True)]
    cmap = plt.get_cmap("tab10")
    for ax, kind, title in ((axes[0], "plain", "plain networks"), (axes[1], "resnet", "ResNets")):
        runs = {
            f"{kind}-{d}": o.rows for d in depths for o in outcomes if o.spec.model == f"{kind}{d}"
        }
        if not runs:  # nothing finished in this family yet
            ax.set_title(f"{title} (no finished run yet)")
            ax.set_xlabel("iter.")
            continue
        colors = {f"{kind}-{d}": cmap(i % 10) for i, d in enumerate(depths)}
        plot_curves(runs, path, title=title, ax=ax, colors=colors)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_responses(stds: dict[str, list[float]], path: Path) -> None:
    """Fig. 7: std of 3x3 layer responses, by layer index (top) and sorted (bottom);
    plain nets dashed, ResNets solid, one colour per depth as in Fig. 6."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), dpi=110)
    cmap = plt.get_cmap("tab10")
    depths = sorted({_depth(name) for name in stds})
    for name, s in stds.items():
        style = "--" if name.startswith("plain") else "-"
        color = cmap(depths.index(_depth(name)) % 10)
        top.plot(range(1, len(s) + 1), s, style, color=color, label=name, linewidth=1.3)
        bottom.plot(
            range(1, len(s) + 1),
            sorted(s, reverse=True),
            style,
            color=color,
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
        if stds:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
