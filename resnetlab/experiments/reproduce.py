"""``resnetlab reproduce``: the paper's CIFAR evidence, one command per figure or table.

* degradation — Fig. 6: plain-N and resnet-N trained alike; plain nets get worse with
  depth, residual nets better (§4.2). The ResNet panel also has ResNet-110, as the
  paper's (``--resnet-only-depths``).
* cifar-table — Table 6: depth, parameters and test error of the CIFAR ResNets.
* shortcuts — options A/B/C (§3.3) at equal budget, over seeds (the CIFAR counterpart
  of Table 3).
* responses — Fig. 7: std of each 3x3 layer's response (after BN, before the addition
  and ReLU) on the test set, by layer index and sorted by magnitude.

The reports share one pool of runs (``--runs``, default ``cifar-runs`` beside the
report folders): resnet20 trained for Fig. 6 is the same run as Table 6's and option A's
first seed. A finished run (with results.json) is reused, an interrupted one resumed,
so a reproduction can be stopped and started again at any point and built up across
sessions. A run that finishes saves its Fig. 7 statistics (responses.json) beside its
metrics, so the figures need no weights once the runs are committed. Every run of a
report has the report's one training setting, process layout included; a pool folder
holding a run with another setting is refused, never mixed in.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnetlab.atomic import write_text_atomic
from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig, setting_differences
from resnetlab.training.run_folder import RunFolder

PAPER_ITERS = 64_000
RECIPE_NOTES = {
    "paper": "the paper's §4.2 recipe (lr 0.1, /10 at 50% and 75% of the run)",
    "paper-short": (
        "recipe `paper-short`: the paper's §4.2 optimiser, data and split, with a linear "
        "warm-up over the first 10% and a linear decay to zero in place of the /10 steps"
    ),
}
SMOKE = dict(iters=12, batch_size=16, eval_points=3, val_size=8)
SMOKE_RESPONSE_IMAGES = 96
POOL = "cifar-runs"  # the runs' folder, beside the report folders
RESPONSES = "responses.json"  # a run's Fig. 7 statistics, in its folder
# One process: the layout of the runs committed first (BN over all 128 images of a
# batch). The trainer's own default (one process per core) may change with the machine;
# a report pins its layout so that its runs never mix BN batch sizes.
DEFAULT_PROCS = 1
EXPERIMENTS = ("degradation", "cifar-table", "shortcuts", "responses")


@dataclass(frozen=True)
class RunSpec:
    """One run of the pool. ``shortcut`` None is the preset's (A for the CIFAR ResNets,
    §4.2; none for plain nets), so the option-A run is the same run as Fig. 6's."""

    model: str
    shortcut: str | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        """Folder name: ``resnet20``, ``resnet20-B``, ``resnet20-C-seed1``."""
        parts = [self.model, *([self.shortcut] if self.shortcut else [])]
        return "-".join(parts + ([f"seed{self.seed}"] if self.seed else []))

    @property
    def family(self) -> str:
        return "plain" if self.model.startswith("plain") else "resnet"

    @property
    def depth(self) -> int:
        from resnetlab.models import model_config

        return model_config(self.model).depth

    @property
    def option(self) -> str:
        from resnetlab.models import model_config

        return self.shortcut or str(model_config(self.model).shortcut)


def make_spec(model: str, shortcut: str | None = None, seed: int = 0) -> RunSpec:
    """A spec with the preset's own shortcut written as None (one name per run)."""
    from resnetlab.models import PRESETS, model_config

    if model not in PRESETS:
        raise ResnetlabError(f"unknown model {model!r}; see 'resnetlab models'")
    if shortcut is not None and shortcut == model_config(model).shortcut:
        shortcut = None
    return RunSpec(model, shortcut, seed)


@dataclass
class RunOutcome:
    """What a report needs of one run; everything but ``spec`` and ``path`` is read
    from the run's own files, so reports need no weights."""

    spec: RunSpec
    path: Path
    status: str  # finished | not run yet | unfinished (iteration N of M)
    params: int | None = None
    final_train_error: float | None = None
    test_error: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, Any] | None = None
    train_seconds: float | None = None
    config: TrainConfig | None = None
    saved: dict[str, Any] = field(default_factory=dict)  # config.json as written

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def _train_config(args: argparse.Namespace, spec: RunSpec, pool: Path) -> TrainConfig:
    from resnetlab.training.recipes import build_config

    overrides: dict[str, Any] = dict(
        data=args.data,
        data_dir=args.data_dir,
        iters=args.iters,
        seed=spec.seed,
        shortcut=spec.shortcut,
        out=str(pool / spec.name),
        log_every=args.log_every,
        device=args.device,
        procs=args.procs,
        # fp32 on every device: the committed runs are CPU fp32, and a figure must not
        # mix in bf16 runs because one of them was trained on a GPU
        amp="off",
        compile=args.compile,
    )
    if args.eval_points is not None:
        overrides["eval_points"] = args.eval_points
    if args.smoke:
        overrides.update(
            SMOKE, compile="off", channels_last="off", iters=args.iters or SMOKE["iters"]
        )
    return build_config(args.recipe, spec.model, overrides)


def _check_same_recipe(folder: RunFolder, cfg: TrainConfig) -> None:
    """Refuse to reuse or resume a run trained with another setting: recipe, length,
    seed, evaluation points or process layout. A config written before ``procs``
    existed gives its recorded world size instead (TrainConfig.load)."""
    if not folder.config.exists():
        return
    diffs = setting_differences(TrainConfig.load(folder.config), cfg)
    if diffs:
        raise ResnetlabError(
            f"{folder.path} holds a run with other settings ({'; '.join(diffs)}); "
            "give the command the run's settings, another --runs, or remove that folder"
        )


def _specs(args: argparse.Namespace) -> list[RunSpec]:
    """The runs an experiment needs, in training order."""
    seed = args.seeds[0]
    if args.experiment in ("degradation", "responses"):
        # ResNets train first: their comparison is the one in doubt at small budgets, so
        # a user watching the run learns it before the plain nets' hours.
        resnets = list(dict.fromkeys([*args.depths, *args.resnet_only_depths]))
        return [make_spec(f"resnet{d}", seed=seed) for d in resnets] + [
            make_spec(f"plain{d}", seed=seed) for d in args.depths
        ]
    if args.experiment == "cifar-table":
        return [make_spec(m, seed=seed) for m in dict.fromkeys(args.models)]
    # shortcuts: every option at the first seed before the second, so that a partial
    # report already compares them
    return [make_spec(args.model, s, seed) for seed in args.seeds for s in ("A", "B", "C")]


# -- running ------------------------------------------------------------------------------


def run_all(
    args: argparse.Namespace, checked: list[tuple[RunSpec, TrainConfig]], *, train: bool
) -> list[RunOutcome]:
    """Train every run not finished yet (resuming interrupted ones) unless ``train`` is
    off, save the Fig. 7 statistics of finished runs that lack them, then read them all."""
    outcomes = []
    for i, (spec, cfg) in enumerate(checked, 1):
        folder = RunFolder(cfg.out)
        tag = f"[{i}/{len(checked)}] {spec.name}"
        if folder.is_finished():
            print(f"{tag}: finished earlier, reusing {folder.path}", flush=True)
        elif not train:
            state = "not run yet" if not folder.config.exists() else "unfinished"
            print(f"{tag}: {state}, left as it is (--report-only)", flush=True)
        else:
            _train_one(cfg, folder, tag, command_line(args))
        if folder.is_finished():
            _ensure_responses(args, folder, tag)
        outcomes.append(read_outcome(spec, folder))
    return outcomes


def _train_one(cfg: TrainConfig, folder: RunFolder, tag: str, again: str) -> None:
    """One run to its end: in this process (procs 1) or in ``procs`` DDP workers. A run
    stopped midway names ``again`` (this experiment's command), not ``train --resume``,
    so that it resumes with the checks that keep a report's runs alike."""
    resume = folder.config.exists()
    print(
        f"{tag}: {'resuming' if resume else 'training'} ({cfg.iters} iterations, "
        f"{cfg.procs} process{'es' if cfg.procs > 1 else ''}) -> {folder.path}",
        flush=True,
    )
    if cfg.procs > 1:
        from resnetlab.training.launch import describe, train_workers

        print(f"process layout: {describe(cfg)}", flush=True)
        code = train_workers(cfg, resume, continue_with=again)
        if code == 0 and folder.is_finished():
            return
        raise ResnetlabError(
            f"{tag.split('] ')[-1]} stopped before its end (workers' exit status {code}); "
            "run the same command again to resume"
        )
    from resnetlab.training.loop import train

    result = train(cfg, resume=resume, continue_with=again)
    if not result.finished:
        raise ResnetlabError(
            f"{tag.split('] ')[-1]} stopped at iteration {result.iteration}; "
            "run the same command again to resume"
        )


def chosen_weights(folder: RunFolder) -> Path | None:
    """The model chosen on validation: model.safetensors (written from best.pt when the
    run finished), else best.pt; last.pt only for a run without a validation split."""
    if folder.weights.is_file():
        return folder.weights
    if folder.best.is_file():
        return folder.best
    no_val = folder.config.is_file() and TrainConfig.load(folder.config).val_size == 0
    return folder.last if no_val and folder.last.is_file() else None


def _ensure_responses(args: argparse.Namespace, folder: RunFolder, tag: str) -> None:
    """Fig. 7 statistics of a finished run, measured once from its weights and saved in
    its folder (committed with it; the weights are not)."""
    from resnetlab.experiments.responses import measure_responses

    path = folder.path / RESPONSES
    if path.is_file():
        return
    weights = chosen_weights(folder)
    if weights is None:
        print(f"{tag}: no {RESPONSES} and no weights to measure them from", flush=True)
        return
    limit = SMOKE_RESPONSE_IMAGES if args.smoke else None
    stds, images, split = measure_responses(weights, args.data, data_dir=args.data_dir, limit=limit)
    doc = {
        "what": "std of each 3x3 layer's response (after BN, before ReLU and addition), "
        "Fig. 7 (§4.2)",
        "weights": weights.relative_to(folder.path).as_posix(),
        "split": split,
        "images": images,
        "stds": stds,
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    print(f"{tag}: layer responses measured on {images} {split} images -> {path}", flush=True)


def read_outcome(spec: RunSpec, folder: RunFolder) -> RunOutcome:
    """A run as its files describe it, finished or not."""
    import torch

    from resnetlab.models import build_model, count_parameters
    from resnetlab.training.metrics import read_metrics

    if not folder.config.is_file():
        return RunOutcome(spec, folder.path, "not run yet")
    saved = json.loads(folder.config.read_text())
    cfg = TrainConfig.load(folder.config)
    rows = read_metrics(folder.metrics) if folder.metrics.is_file() else []
    if not folder.is_finished():
        at = rows[-1]["iteration"] if rows else 0
        status = f"unfinished (iteration {at:,} of {cfg.iters:,})" if at else "not run yet"
        return RunOutcome(spec, folder.path, status, rows=rows, config=cfg, saved=saved)
    doc = json.loads(folder.results.read_text())
    with torch.device("meta"):
        params = count_parameters(build_model(saved["model"]))
    train_errs = [r["train_error"] for r in rows if r.get("train_error") is not None]
    test = doc.get("test")
    responses_path = folder.path / RESPONSES
    return RunOutcome(
        spec,
        folder.path,
        "finished",
        params=params,
        final_train_error=train_errs[-1] if train_errs else None,
        test_error=1 - test["top1_acc"] if test else None,
        rows=rows,
        responses=json.loads(responses_path.read_text()) if responses_path.is_file() else None,
        train_seconds=doc.get("train_seconds"),
        config=cfg,
        saved=saved,
    )


# -- the command --------------------------------------------------------------------------


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates a report, every setting written out (so a later
    change of a default cannot change what it does); --report-only and logging left out."""
    words = ["resnetlab", "reproduce", args.experiment]
    if args.smoke:
        words.append("--smoke")
    words += ["--data", args.data]
    if args.data_dir:
        words += ["--data-dir", args.data_dir]
    if args.experiment == "responses" and args.checkpoints:
        words += ["--checkpoints", *args.checkpoints]
    else:
        if args.experiment in ("degradation", "responses"):
            words += ["--depths", *map(str, args.depths)]
            words += ["--resnet-only-depths", *map(str, args.resnet_only_depths)]
        elif args.experiment == "cifar-table":
            words += ["--models", *args.models]
        else:
            words += ["--model", args.model]
        if args.experiment == "shortcuts" or args.seeds != [0]:
            words += ["--seeds", *map(str, args.seeds)]
        words += ["--recipe", args.recipe]
        if args.iters is not None:
            words += ["--iters", str(args.iters)]
        if args.eval_points is not None:
            words += ["--eval-points", str(args.eval_points)]
        words += ["--procs", str(args.procs)]
        if args.device != "auto":
            words += ["--device", args.device]
        if args.runs:
            words += ["--runs", args.runs]
    if args.out:
        words += ["--out", args.out]
    return shlex.join(words)


def _response_checkpoints(args: argparse.Namespace) -> list[Path]:
    checkpoints = [Path(c) for c in args.checkpoints]
    for c in checkpoints:
        if not c.is_file():
            raise ResnetlabError(f"checkpoint not found: {c}")
    return checkpoints


def _check(args: argparse.Namespace, pool: Path) -> list[tuple[RunSpec, TrainConfig]]:
    """Every user error found before anything is written or trained: the flags, each
    run's config, the layout, and the settings of every run already in the pool."""
    from resnetlab.data.datasets import NAMED

    if args.experiment == "responses" and args.checkpoints:
        _response_checkpoints(args)
    if args.data not in NAMED and not Path(args.data).exists():
        raise ResnetlabError(f"no dataset at {args.data} (a name: {', '.join(NAMED)}, or a folder)")
    if args.experiment == "responses" and args.checkpoints:
        return []
    if args.procs < 1:
        raise ResnetlabError(f"--procs must be >= 1 (got {args.procs})")
    if args.experiment != "shortcuts" and len(args.seeds) != 1:
        raise ResnetlabError(f"{args.experiment} uses one seed; only shortcuts averages over seeds")
    checked = []
    for spec in _specs(args):
        cfg = _train_config(args, spec, pool)  # validates model, depth, length
        if cfg.procs > 1:
            from resnetlab.training.launch import resolve_layout

            resolve_layout(cfg)  # CUDA, or a batch that does not split over the processes
        _check_same_recipe(RunFolder(cfg.out), cfg)
        checked.append((spec, cfg))
    return checked


def run(args: argparse.Namespace) -> int:
    from resnetlab.experiments import report

    if args.smoke and args.iters is None:
        args.iters = SMOKE["iters"]
    if args.seeds is None:  # §3.3's comparison is small: two seeds show the spread
        args.seeds = [0, 1] if args.experiment == "shortcuts" else [0]
    # a smoke run must never land in (or be refused by) the committed reports
    default_root = Path("runs") / "smoke" if args.smoke else Path("reports")
    out = Path(args.out or default_root / args.experiment)
    pool = Path(args.runs) if args.runs else out.parent / POOL
    checked = _check(args, pool)
    out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "responses" and args.checkpoints:
        report.responses_from_checkpoints(
            args, out, _response_checkpoints(args), command_line(args)
        )
        return 0
    outcomes = run_all(args, checked, train=not args.report_only)
    ctx = report.Context(args, out, pool, command_line(args), setting=checked[0][1])
    report.REPORTS[args.experiment](ctx, outcomes)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce", help="the paper's evidence: degradation | cifar-table | shortcuts | responses"
    )
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument(
        "--data", default="cifar10", help="cifar10 | PATH (e.g. ../shared/data/cifar10-jpeg)"
    )
    p.add_argument("--data-dir")
    p.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20, 32, 44, 56],
        help="degradation, responses: depths of the plain/resnet pairs (Fig. 6 left)",
    )
    p.add_argument(
        "--resnet-only-depths",
        type=int,
        nargs="*",
        default=[110],
        help="degradation, responses: ResNets without a plain twin (Fig. 6 has ResNet-110 "
        "and no plain-110); give the flag alone for none",
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
        help="cifar-table: models",
    )
    p.add_argument("--model", default="resnet20", help="shortcuts: the model")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="shortcuts: seeds per option (default 0 1); the others: one seed (default 0)",
    )
    p.add_argument(
        "--checkpoints",
        nargs="*",
        default=[],
        help="responses: analyse these weights instead of the pool's runs",
    )
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
    p.add_argument(
        "--procs",
        type=int,
        default=DEFAULT_PROCS,
        help="training processes per run (DDP, BN over batch/procs images each); default 1, "
        "the committed runs' layout, whatever the trainer's own default: a report never "
        "mixes layouts",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile (speed only, not part of a run's setting; runs are fp32 always)",
    )
    p.add_argument("--log-every", type=int, default=0)
    p.add_argument(
        "--runs",
        help=f"the pool of runs the reports share (default {POOL}/ beside the report folder)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the runs finished so far (the others marked), train nothing",
    )
    p.add_argument("--smoke", action="store_true", help="tiny scale: checks the plumbing (< 2 min)")
    p.add_argument(
        "--out",
        help="report folder (default reports/EXPERIMENT; with --smoke runs/smoke/EXPERIMENT)",
    )
    p.set_defaults(func=run)
