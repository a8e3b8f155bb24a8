"""``resnetlab sweep``: recipe variants, several seeds each, and whether they differ.

One run of a short recipe moves by about a third of a point from seed to seed (#16's
`fast` runs), as much as most single changes to it: one run per variant cannot tell
them apart. A sweep trains every variant with every seed, each an ordinary
``resnetlab train`` run in its own folder (so each is resumable and reproducible on its
own), ``--parallel`` of them at once (several fit on one GPU), then writes the mean,
spread and per-seed scores of each variant beside the first one's:

    OUT/VARIANT-seedS/   the runs          OUT/logs/   each run's output
    OUT/sweep.json       flags and scores  OUT/sweep.md, OUT/sweep.png   the comparison

A finished run is reused when its recorded flags are the ones asked for now and they
still mean the same setting (a recipe's defaults may have changed since), so the same
command continues a stopped sweep; an unfinished run is resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from resnetlab.atomic import write_text_atomic
from resnetlab.errors import ResnetlabError
from resnetlab.training.config import TrainConfig, setting_differences
from resnetlab.training.run_folder import RunFolder

# set by the sweep for each run, so not accepted among the flags it is given
_OWN_FLAGS = ("--seed", "--out", "--resume", "--stop-at")
RECORD = "sweep.json"


@dataclass
class Variant:
    name: str
    flags: list[str]


@dataclass
class Job:
    variant: Variant
    seed: int
    folder: Path
    argv: list[str]  # the train flags, without --resume
    score: float | None = None  # top-1 accuracy, 0..1
    split: str = ""
    seconds: float | None = None
    status: str = "pending"  # pending | reused | finished | failed: ... | stopped
    config: TrainConfig | None = None  # the setting its flags mean today

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.seed}"


class _TrainArgs(argparse.ArgumentParser):
    """The train command's parser, raising instead of exiting (to name the variant)."""

    def error(self, message: str) -> NoReturn:
        raise ResnetlabError(message)


def parse_variant(text: str) -> Variant:
    name, sep, flags = text.partition("=")
    if not sep or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ResnetlabError(
            f"--variant {text!r}: expected NAME=FLAGS, NAME of letters, digits, '-', '_' or "
            "'.' (e.g. base= or 'ls01=--label-smoothing 0.1')"
        )
    try:
        return Variant(name, shlex.split(flags))
    except ValueError as e:
        raise ResnetlabError(f"--variant {name}: {e}") from None


def check_flags(
    variant: Variant, common: list[str], seed: int, out: Path
) -> tuple[list[str], TrainConfig]:
    """The variant's full train flags, checked as ``train`` would check them (parser,
    recipe, model, values), so a bad flag stops the sweep before its first run; and the
    config they make."""
    from resnetlab.training.train_command import add_train_arguments, new_run_config

    given = [*common, *variant.flags]
    own = sorted({f.split("=")[0] for f in given if f.split("=")[0] in _OWN_FLAGS})
    if own:
        raise ResnetlabError(f"the sweep sets {', '.join(own)} for each run; leave it out")
    argv = [*given, "--seed", str(seed), "--out", str(out)]
    parser = _TrainArgs(prog="resnetlab train")
    add_train_arguments(parser)
    try:
        cfg = new_run_config(parser.parse_args(argv))
        cfg.validate()
    except ResnetlabError as e:
        raise ResnetlabError(f"variant {variant.name}: {e}") from None
    return argv, cfg


def plan(args: argparse.Namespace) -> list[Job]:
    common = list(args.train_args)
    if common[:1] == ["--"]:
        common = common[1:]
    variants = [parse_variant(v) for v in args.variant or ["base="]]
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        raise ResnetlabError(f"two variants share a name: {', '.join(names)}")
    if len(set(args.seeds)) < len(args.seeds):
        raise ResnetlabError(f"--seeds repeats a seed: {args.seeds}")
    if args.parallel < 1:
        raise ResnetlabError(f"--parallel must be >= 1, got {args.parallel}")
    out = Path(args.out)
    jobs = []
    for v in variants:
        for seed in args.seeds:
            folder = out / f"{v.name}-seed{seed}"
            argv, cfg = check_flags(v, common, seed, folder)
            jobs.append(Job(v, seed, folder, argv, config=cfg))
    return jobs


def _recorded(out: Path) -> dict[str, list[str]]:
    path = out / RECORD
    if not path.is_file():
        return {}
    try:
        return {r["folder"]: r["flags"] for r in json.loads(path.read_text())["runs"]}
    except (ValueError, KeyError, TypeError):
        raise ResnetlabError(
            f"{path} is not a sweep record; remove it or choose another --out"
        ) from None


def check_reuse(jobs: list[Job], out: Path) -> None:
    """A folder that already holds a run must be this job's: same flags as recorded,
    and the same setting as they make now."""
    recorded = _recorded(out)
    for job in jobs:
        if not RunFolder(job.folder).holds_run():
            continue
        before = recorded.get(job.folder.name)
        if before is None:
            raise ResnetlabError(
                f"{job.folder} holds a run this sweep did not record; remove it or choose "
                "another --out"
            )
        if before != job.argv:
            raise ResnetlabError(
                f"{job.folder} was trained with other flags ({shlex.join(before)}); "
                "remove it or give the variant another name"
            )
        saved = RunFolder(job.folder).config
        diffs = setting_differences(TrainConfig.load(saved), job.config) if job.config else []
        if diffs:
            raise ResnetlabError(
                f"{job.folder} was trained with the same flags but another setting "
                f"({'; '.join(diffs)}; has the recipe changed since?); "
                "remove it or choose another --out"
            )


def read_score(job: Job) -> None:
    doc = json.loads(RunFolder(job.folder).results.read_text())
    job.split = "test" if doc.get("test") else "val"
    job.score = float(doc[job.split]["top1_acc"])
    job.seconds = doc.get("train_seconds")


def reuse_finished(job: Job) -> bool:
    """Take a finished run's score from its folder; False if it has not finished."""
    if not RunFolder(job.folder).is_finished():
        return False
    read_score(job)
    job.status = "reused"
    return True


# -- running --------------------------------------------------------------------------


def run_jobs(
    jobs: list[Job], out: Path, parallel: int, record: Callable[[list[Job]], None]
) -> bool:
    """Train the jobs not finished yet, ``parallel`` at a time; False if stopped."""
    from resnetlab.training.launch import die_with_parent, signals_forwarded

    (out / "logs").mkdir(parents=True, exist_ok=True)
    todo = []
    for job in jobs:
        if reuse_finished(job):
            print(f"{job.label}: finished earlier, reusing {job.folder}", flush=True)
        else:
            todo.append(job)
    running: dict[subprocess.Popen[bytes], tuple[Job, float, Any]] = {}
    stop: list[int] = []  # the signals received: launch nothing more
    done_count = len(jobs) - len(todo)
    with signals_forwarded(lambda: list(running), stop.append):
        while todo or running:
            while todo and len(running) < parallel and not stop:
                job = todo.pop(0)
                resume = RunFolder(job.folder).holds_run()
                argv = [sys.executable, "-m", "resnetlab", "train", *job.argv]
                argv += ["--resume"] if resume else []
                log = (out / "logs" / f"{job.folder.name}.log").open("ab")
                what = "resuming" if resume else "training"
                print(f"{job.label}: {what} -> {job.folder} (log: {log.name})", flush=True)
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent,
                )  # fmt: skip
                running[proc] = (job, time.monotonic(), log)
                job.status = "running"
                record(jobs)
            for proc in [p for p in running if p.poll() is not None]:
                job, started, log = running.pop(proc)
                log.close()
                if proc.returncode == 0 and RunFolder(job.folder).is_finished():
                    read_score(job)
                    job.status = "finished"
                    done_count += 1
                    print(
                        f"[{done_count}/{len(jobs)}] {job.label}: {job.split} top-1 "
                        f"{100 * (job.score or 0):.2f}% ({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
                elif stop:
                    job.status = "stopped"
                else:
                    job.status = f"failed: {_last_line(Path(log.name))}"
                    print(f"{job.label}: {job.status} (exit status {proc.returncode})",
                          flush=True)  # fmt: skip
                record(jobs)
            if stop and not running:
                break
            time.sleep(0.2)
    return not stop


def _last_line(path: Path) -> str:
    """A failed run's last words: its one-line error, or a traceback's last line."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip().removeprefix("error: ") if lines else "no output"


# -- the comparison ---------------------------------------------------------------------


def summarize(jobs: list[Job]) -> list[dict[str, Any]]:
    """Per variant: the scores by seed, their mean and sample standard deviation, and the
    difference of the mean to the first variant's with its standard error."""
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(j.variant.name for j in jobs):
        mine = [j for j in jobs if j.variant.name == name]
        scores = [j.score for j in mine if j.score is not None]
        row: dict[str, Any] = {
            "variant": name,
            "flags": shlex.join(mine[0].variant.flags),
            "scores": {j.seed: j.score for j in mine},
            "n": len(scores),
            "mean": statistics.fmean(scores) if scores else None,
            "std": statistics.stdev(scores) if len(scores) > 1 else None,
        }
        if rows and row["mean"] is not None and rows[0]["mean"] is not None:
            first = rows[0]
            row["diff"] = row["mean"] - first["mean"]
            if row["std"] is not None and first["std"] is not None:
                row["diff_se"] = math.sqrt(
                    row["std"] ** 2 / row["n"] + first["std"] ** 2 / first["n"]
                )
        rows.append(row)
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def write_report(out: Path, jobs: list[Job], command: str) -> list[dict[str, Any]]:
    rows = summarize(jobs)
    seeds = list(dict.fromkeys(j.seed for j in jobs))
    split = next((j.split for j in jobs if j.split), "test")
    lines = [
        f"# Sweep: {len(rows)} variant(s) x {len(seeds)} seed(s)",
        "",
        f"- command: `{command}`",
        f"- finished: {sum(j.score is not None for j in jobs)} of {len(jobs)} runs",
        f"- score: {split} top-1 accuracy (%) of each run's chosen model (its results.json)",
        "",
        "![sweep](sweep.png)",
        "",
        "| variant | flags | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | std | vs first |",
        "|---|---|" + "---:|" * (len(seeds) + 3),
    ]  # fmt: skip
    for row in rows:
        cells = [_pct(row["scores"].get(s)) for s in seeds]
        vs = "-"
        if "diff" in row:
            vs = f"{100 * row['diff']:+.2f}"
            if "diff_se" in row:
                se = 100 * row["diff_se"]
                beyond = abs(row["diff"]) > 2 * row["diff_se"]
                vs += f" ± {se:.2f} ({'beyond' if beyond else 'within'} 2 SE)"
        lines.append(
            f"| {row['variant']} | `{row['flags'] or '(none)'}` | {' | '.join(cells)} | "
            f"{_pct(row['mean'])} | {_pct(row['std'])} | {vs} |"
        )
    lines += [
        "",
        "std: the sample standard deviation over seeds. vs first: the difference of the "
        "mean to the first variant's, ± its standard error; a difference within twice its "
        "standard error is not evidence of an effect.",
        "",
    ]
    write_text_atomic(out / "sweep.md", "\n".join(lines))
    _plot(out / "sweep.png", rows, split)
    return rows


def _plot(path: Path, rows: list[dict[str, Any]], split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows) + 2), 3.8), dpi=110)
    for i, row in enumerate(rows):
        ys = [100 * s for s in row["scores"].values() if s is not None]
        ax.plot([i] * len(ys), ys, "o", color="tab:blue", alpha=0.7)
        if row["mean"] is not None:
            ax.hlines(100 * row["mean"], i - 0.25, i + 0.25, color="black", linewidth=2)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=20)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(f"{split} top-1 (%)")
    ax.set_title("each seed (dots) and the mean (bar)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def command_line(args: argparse.Namespace, jobs: list[Job]) -> str:
    words = ["resnetlab", "sweep", "--out", args.out, "--seeds", *map(str, args.seeds)]
    for v in dict.fromkeys(j.variant.name for j in jobs):
        flags = next(j.variant.flags for j in jobs if j.variant.name == v)
        words += ["--variant", f"{v}={shlex.join(flags)}"]
    if args.parallel != 1:
        words += ["--parallel", str(args.parallel)]
    common = [a for a in args.train_args if a != "--"]
    return shlex.join([*words, "--", *common])


def run(args: argparse.Namespace) -> int:
    jobs = plan(args)
    out = Path(args.out)
    check_reuse(jobs, out)
    command = command_line(args, jobs)

    def record(current: list[Job]) -> None:
        doc = {
            "command": command,
            "runs": [
                dict(
                    folder=j.folder.name,
                    variant=j.variant.name,
                    seed=j.seed,
                    flags=j.argv,
                    status=j.status,
                    score=j.score,
                    split=j.split,
                    train_seconds=j.seconds,
                )
                for j in current
            ],
        }
        write_text_atomic(out / RECORD, json.dumps(doc, indent=1))

    # One sweep per folder: a second one would overwrite this one's record and report.
    lock = RunFolder(out)
    lock.acquire()
    try:
        record(jobs)
        complete = True
        if not args.report_only:
            complete = run_jobs(jobs, out, args.parallel, record)
        else:
            for job in jobs:
                reuse_finished(job)
        record(jobs)
        rows = write_report(out, jobs, command)
    finally:
        lock.release()
    for row in rows:
        if row["mean"] is None:
            print(f"{row['variant']}: no finished run yet")
        else:
            print(f"{row['variant']}: mean {_pct(row['mean'])}% over {row['n']} seed(s), "
                  f"std {_pct(row['std'])}")  # fmt: skip
    print(f"report: {out / 'sweep.md'}")
    if not complete:
        raise ResnetlabError("sweep stopped; run the same command again to continue it")
    failed = [j for j in jobs if j.status.startswith("failed")]
    if failed:
        raise ResnetlabError(
            f"{len(failed)} run(s) failed, first {failed[0].label}: {failed[0].status[8:]} "
            f"(log: {out / 'logs' / (failed[0].folder.name + '.log')})"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="train recipe variants over several seeds and compare them",
        description="Train each --variant with each of --seeds (resnetlab train runs, "
        "flags after -- shared by all) and compare their means. Example: resnetlab sweep "
        "--out runs/sweep-ls --seeds 0 1 2 --variant base= --variant "
        "'ls02=--label-smoothing 0.2' -- --model resnet20 --data cifar10 --recipe fast",
    )
    p.add_argument("--out", required=True, help="the sweep's folder (runs, logs, report)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--variant",
        action="append",
        help="NAME=FLAGS, repeatable; the first is the one the others are compared to "
        "(default: one variant, base=, with no flags of its own)",
    )
    p.add_argument(
        "--parallel", type=int, default=1,
        help="runs at once (several share a GPU; on a CPU they share its cores)",
    )  # fmt: skip
    p.add_argument(
        "--report-only", action="store_true", help="train nothing; report the finished runs"
    )
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the train flags")
    p.set_defaults(func=run)
