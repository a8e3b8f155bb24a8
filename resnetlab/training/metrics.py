"""Run metrics: metrics.csv, TensorBoard events, and curves.png drawn as the paper's Fig. 6."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnetlab.training.run_folder import RunFolder

COLUMNS = [
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "val_error",
    "test_error",
    "images_per_s",
]


class MetricsLog:
    """Appends rows to metrics.csv (kept on resume) and mirrors them to TensorBoard."""

    def __init__(self, folder: RunFolder, resume_from: int | None = None) -> None:
        self.path = folder.metrics
        rows = read_metrics(self.path) if resume_from is not None and self.path.exists() else []
        rows = [r for r in rows if resume_from is not None and r["iteration"] <= resume_from]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _fmt(r.get(k)) for k in COLUMNS})
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(folder.tensorboard))
        except ImportError:  # tensorboard is a dependency; keep training if it is broken
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        if self.tb is not None:
            for k in COLUMNS[2:]:
                v = row.get(k)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    self.tb.add_scalar(k, v, row["iteration"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k is None:
                    continue
                row[k] = None if v in ("", None) else (int(v) if k == "iteration" else float(v))
            rows.append(row)
    return rows


def plot_curves(
    runs: dict[str, list[dict[str, Any]]],
    path: Path,
    title: str = "",
    ax: Any = None,
    colors: dict[str, Any] | None = None,
) -> None:
    """Fig. 6 style: training error dashed, test error bold, in % against iterations.

    ``runs`` maps a label to its metrics rows; one colour per run. With ``ax`` given,
    draws into it and does not save (for multi-panel figures).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(runs.items()):
        color = (colors or {}).get(label, cmap(i % 10))
        train = [
            (r["iteration"], 100 * r["train_error"])
            for r in rows
            if r.get("train_error") is not None
        ]
        test_key = (
            "test_error" if any(r.get("test_error") is not None for r in rows) else "val_error"
        )
        test = [(r["iteration"], 100 * r[test_key]) for r in rows if r.get(test_key) is not None]
        if train:
            ax.plot(*zip(*train), "--", color=color, linewidth=1.0, alpha=0.9)
        if test:
            ax.plot(*zip(*test), "-", color=color, linewidth=2.2, label=label)
    ax.set_xlabel("iter.")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(title="bold: test, dashed: train", fontsize=8, title_fontsize=8)
    if own:
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
