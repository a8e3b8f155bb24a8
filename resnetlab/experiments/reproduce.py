"""``resnetlab reproduce``: the paper's CIFAR evidence, one command per figure or table.

* degradation — Fig. 6: plain-N and resnet-N trained alike; plain nets get worse with
  depth, residual nets better (§4.2).
* cifar-table — Table 6: depth, parameters and test error of the CIFAR ResNets.
* shortcuts — options A/B/C at equal budget (the CIFAR counterpart of Table 3).
* responses — Fig. 7: std of each 3x3 layer's response (after BN, before the addition
  and ReLU) on the test set, by layer index and sorted by magnitude.

Every training run lives in ``OUT/runs/NAME`` and is reused: a finished run (with
results.json) is skipped, an interrupted one resumed, so a reproduction can be stopped
and started again at any point. ``--iters`` scales the paper's 64k-iteration schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.errors import ResnetlabError
from resnetlab.training.run_folder import CHECKPOINTS, RunFolder

PAPER_ITERS = 64_000
RECIPE_NOTES = {
    "paper": "the paper's §4.2 recipe (lr 0.1, /10 at 50% and 75% of the run)",
    "paper-short": (
        "recipe `paper-short`: the paper's §4.2 optimiser, data and split, with a linear "
        "warm-up over the first 10% and a linear decay to zero in place of the /10 steps"
    ),
}
SMOKE = dict(iters=12, batch_size=16, eval_points=3, val_size=8)


@dataclass
class RunSpec:
    name: str  # folder name under OUT/runs
    model: str
    shortcut: str | None = None


@dataclass
class RunOutcome:
    spec: RunSpec
    run_dir: Path
    params: int
    final_train_error: float | None
    test_error: float | None
    rows: list[dict[str, Any]]


def _train_config(args: argparse.Namespace, spec: RunSpec, out: Path) -> Any:
    from resnetlab.training.recipes import build_config

    overrides: dict[str, Any] = dict(
        data=args.data,
        data_dir=args.data_dir,
        iters=args.iters,
        seed=args.seed,
        shortcut=spec.shortcut,
        out=str(out / "runs" / spec.name),
        log_every=args.log_every,
        device=args.device,
    )
    if args.eval_points is not None:
        overrides["eval_points"] = args.eval_points
    if args.smoke:
        overrides.update(
            SMOKE, compile="off", channels_last="off", iters=args.iters or SMOKE["iters"]
        )
    return build_config(args.recipe, spec.model, overrides)


def run_all(args: argparse.Namespace, specs: list[RunSpec], out: Path) -> list[RunOutcome]:
    """Train every spec not finished yet (resuming interrupted ones), then collect results."""
    from resnetlab.models import build_model, count_parameters
    from resnetlab.training.loop import train
    from resnetlab.training.metrics import read_metrics

    outcomes = []
    for i, spec in enumerate(specs, 1):
        cfg = _train_config(args, spec, out)
        folder = RunFolder(cfg.out)
        _check_same_recipe(folder, cfg)
        if folder.is_finished():
            print(f"[{i}/{len(specs)}] {spec.name}: finished earlier, reusing {folder.path}")
        else:
            resume = folder.config.exists()
            print(
                f"[{i}/{len(specs)}] {spec.name}: {'resuming' if resume else 'training'} "
                f"({cfg.iters} iterations) -> {folder.path}",
                flush=True,
            )
            result = train(cfg, resume=resume)
            if not result.finished:
                raise ResnetlabError(
                    f"{spec.name} stopped at iteration {result.iteration}; "
                    "run the same command again to resume"
                )
        rows = read_metrics(folder.metrics)
        doc = json.loads(folder.results.read_text())
        with torch.device("meta"):
            params = count_parameters(build_model(json.loads(folder.config.read_text())["model"]))
        train_errs = [r["train_error"] for r in rows if r.get("train_error") is not None]
        test = doc.get("test")
        outcomes.append(
            RunOutcome(
                spec,
                folder.path,
                params,
                train_errs[-1] if train_errs else None,
                1 - test["top1_acc"] if test else None,
                rows,
            )
        )
    return outcomes


# What makes two runs comparable; the rest (output folder, device, speed settings,
# logging) may differ between an interrupted run and its resumption.
_RECIPE_FIELDS = (
    "model", "data", "recipe", "shortcut", "iters", "batch_size", "lr", "momentum",
    "nesterov", "weight_decay", "schedule", "milestones", "lr_decay", "warmup",
    "warmup_iters", "label_smoothing", "val_size", "normalize", "augment", "seed",
)  # fmt: skip


def _check_same_recipe(folder: RunFolder, cfg: Any) -> None:
    """Refuse to reuse or resume a run trained with another recipe, length or seed."""
    if not folder.config.exists():
        return
    saved = json.loads(folder.config.read_text()).get("train", {})
    diffs = [
        f"{k} {saved.get(k)!r} -> {getattr(cfg, k)!r}"
        for k in _RECIPE_FIELDS
        if k in saved and saved[k] != getattr(cfg, k)
    ]
    if diffs:
        raise ResnetlabError(
            f"{folder.path} holds a run with other settings ({'; '.join(diffs)}); "
            "give another --out or remove that folder"
        )


def _write_report(out: Path, lines: list[str]) -> None:
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"report: {out / 'report.md'}")


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _paper_error(model: str) -> str:
    from resnetlab.models import paper_figures

    err = paper_figures(model).cifar10_test_error
    return "-" if err is None else f"{err:.2f}"


def _header(args: argparse.Namespace, what: str) -> str:
    scale = (
        "smoke test (numbers meaningless)"
        if args.smoke
        else (
            f"{args.iters or PAPER_ITERS} iterations ({(args.iters or PAPER_ITERS) / PAPER_ITERS:.3g} x the paper's 64k)"
        )
    )
    return (
        f"# {what}\n\n"
        f"- data: `{args.data}`\n- schedule: {RECIPE_NOTES[args.recipe]}, scaled to {scale}\n"
        f"- command: `{shlex.join(['resnetlab', *sys.argv[1:]])}`\n\n"
        "Paper values are for the original CIFAR-10 at 64k iterations; a different scale or "
        "lossy JPEG data shifts the absolute errors, so compare the trends.\n\n"
    )


def degradation(args: argparse.Namespace, out: Path) -> None:
    from resnetlab.experiments.figures import plot_degradation

    # ResNets train first: their comparison is the one in doubt at small budgets, so
    # a user watching the run learns it before the plain nets' hour.
    outcomes = run_all(args, _specs(args), out)
    outcomes.sort(key=lambda o: o.spec.model.startswith("resnet"))  # table: plain first
    plot_degradation(outcomes, out / "degradation.png")
    lines = [
        _header(args, "Degradation: plain vs residual nets (Fig. 6)"),
        "![Fig. 6](degradation.png)\n",
        "| model | params | final training error % | test error % | paper test error % |",
        "|---|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.spec.model} | {o.params:,} | {_pct(o.final_train_error)} | "
            f"{_pct(o.test_error)} | {_paper_error(o.spec.model)} |"
        )
    lines += ["", _degradation_verdict(outcomes, args.depths)]
    _write_report(out, lines)


def _degradation_verdict(outcomes: list[RunOutcome], depths: list[int]) -> str:
    by = {o.spec.model: o for o in outcomes}
    lo, hi = min(depths), max(depths)
    parts = []
    for kind, want in (("plain", "above"), ("resnet", "at or below")):
        a, b = by[f"{kind}{lo}"].final_train_error, by[f"{kind}{hi}"].final_train_error
        if a is None or b is None:
            continue
        holds = b > a if kind == "plain" else b <= a
        parts.append(
            f"{kind}-{hi}'s final training error ({_pct(b)}%) is {'' if holds else 'NOT '}"
            f"{want} {kind}-{lo}'s ({_pct(a)}%)"
        )
    return "Result: " + "; ".join(parts) + "."


def cifar_table(args: argparse.Namespace, out: Path) -> None:
    outcomes = run_all(args, _specs(args), out)
    lines = [
        _header(args, "CIFAR-10 ResNets (Table 6)"),
        "| model | depth | params | test error % | paper params | paper test error % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    from resnetlab.models import model_config, paper_figures

    for o in outcomes:
        fig = paper_figures(o.spec.model)
        paper_params = "-" if fig.params_millions is None else f"{fig.params_millions}M"
        lines.append(
            f"| {o.spec.model} | {model_config(o.spec.model).depth} | {o.params:,} | "
            f"{_pct(o.test_error)} | {paper_params} | {_paper_error(o.spec.model)} |"
        )
    _write_report(out, lines)


def shortcuts(args: argparse.Namespace, out: Path) -> None:
    from resnetlab.experiments.figures import plot_runs

    outcomes = run_all(args, _specs(args), out)
    plot_runs(
        {o.spec.name: o.rows for o in outcomes},
        out / "shortcuts.png",
        title=f"{args.model}: shortcut options A/B/C",
    )
    lines = [
        _header(args, f"Shortcut options A/B/C on {args.model} (cf. Table 3)"),
        "![shortcuts](shortcuts.png)\n",
        "| option | params | final training error % | test error % |",
        "|---|---:|---:|---:|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.spec.shortcut} | {o.params:,} | {_pct(o.final_train_error)} | "
            f"{_pct(o.test_error)} |"
        )
    _write_report(out, lines)


def responses(args: argparse.Namespace, out: Path) -> None:
    from resnetlab.experiments.figures import plot_responses
    from resnetlab.experiments.responses import layer_response_stds

    checkpoints = _response_checkpoints(args, out)
    stds = {}
    for ckpt in checkpoints:
        name = ckpt.parent.parent.name if ckpt.parent.name == CHECKPOINTS else ckpt.stem
        print(f"responses of {name} ({ckpt})", flush=True)
        stds[name] = layer_response_stds(
            ckpt,
            args.data,
            data_dir=args.data_dir,
            limit=SMOKE["iters"] * 8 if args.smoke else None,
        )
    out.mkdir(parents=True, exist_ok=True)
    plot_responses(stds, out / "responses.png")
    (out / "responses.json").write_text(json.dumps(stds, indent=1) + "\n")
    lines = [
        f"# Layer responses (Fig. 7)\n\n- data: `{args.data}` (test split)\n"
        f"- checkpoints: {', '.join(f'`{c}`' for c in checkpoints)}\n",
        "![Fig. 7](responses.png)\n",
        "| model | 3x3 layers | mean std | max std |",
        "|---|---:|---:|---:|",
    ]
    for name, s in stds.items():
        lines.append(f"| {name} | {len(s)} | {sum(s) / len(s):.3f} | {max(s):.3f} |")
    _write_report(out, lines)


EXPERIMENTS = {
    "degradation": degradation,
    "cifar-table": cifar_table,
    "shortcuts": shortcuts,
    "responses": responses,
}


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    """The training runs an experiment needs (none for responses, which reads checkpoints)."""
    if args.experiment == "degradation":
        # ResNets train first: their comparison is the one in doubt at small budgets, so
        # a user watching the run learns it before the plain nets' hour.
        kinds = ("resnet", "plain")
        return [RunSpec(f"{k}{d}", f"{k}{d}") for k in kinds for d in args.depths]
    if args.experiment == "cifar-table":
        return [RunSpec(m, m) for m in args.models]
    if args.experiment == "shortcuts":
        return [RunSpec(f"{args.model}-{s}", args.model, shortcut=s) for s in ("A", "B", "C")]
    return []


def _response_checkpoints(args: argparse.Namespace, out: Path) -> list[Path]:
    """The checkpoints given, or the degradation runs' best (else last) ones."""
    checkpoints = [Path(c) for c in args.checkpoints or []]
    for c in checkpoints:
        if not c.is_file():
            raise ResnetlabError(f"checkpoint not found: {c}")
    if not checkpoints:
        runs_dir = out.parent / "degradation" / "runs"
        folders = [RunFolder(d) for d in sorted(runs_dir.glob("*")) if d.is_dir()]
        checkpoints = [
            f.best if f.best.exists() else f.last for f in folders if f.checkpoint_to_resume()
        ]
    if not checkpoints:
        raise ResnetlabError(
            f"no checkpoints given and none found under {out.parent / 'degradation' / 'runs'}; "
            "run 'reproduce degradation' first"
        )
    return checkpoints


def _check(args: argparse.Namespace, out: Path) -> None:
    """Every user error found before anything is written or trained."""
    from resnetlab.data.datasets import NAMED

    if args.experiment == "responses":
        _response_checkpoints(args, out)
    if args.data not in NAMED and not Path(args.data).exists():
        raise ResnetlabError(f"no dataset at {args.data} (a name: {', '.join(NAMED)}, or a folder)")
    for spec in _specs(args):
        _train_config(args, spec, out)  # validates model, depth, length


def run(args: argparse.Namespace) -> int:
    if args.smoke and args.iters is None:
        args.iters = SMOKE["iters"]
    # a smoke run must never land in (or be refused by) the committed reports
    default_root = Path("runs") / "smoke" if args.smoke else Path("reports")
    out = Path(args.out or default_root / args.experiment)
    _check(args, out)
    out.mkdir(parents=True, exist_ok=True)
    EXPERIMENTS[args.experiment](args, out)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce", help="the paper's evidence: degradation | cifar-table | shortcuts | responses"
    )
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument(
        "--data", default="cifar10", help="cifar10 | PATH (e.g. ../shared/data/cifar10-jpeg)"
    )
    p.add_argument("--data-dir")
    p.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20, 32, 44, 56],
        help="degradation: depths of the plain/resnet pairs",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
        help="cifar-table: models",
    )
    p.add_argument("--model", default="resnet20", help="shortcuts: the model")
    p.add_argument("--checkpoints", nargs="*", default=[], help="responses: checkpoints to analyse")
    p.add_argument("--iters", type=int, help="iterations per run (the schedule scales)")
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPE_NOTES),
        default="paper",
        help="paper (default) | paper-short (warm-up + linear decay, for short budgets)",
    )
    p.add_argument(
        "--eval-points",
        type=int,
        help="evaluations (curve points) per run; default: the recipe's 40",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--log-every", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny scale: checks the plumbing (< 2 min)")
    p.add_argument(
        "--out",
        help="report folder (default reports/EXPERIMENT; with --smoke runs/smoke/EXPERIMENT)",
    )
    p.set_defaults(func=run)
