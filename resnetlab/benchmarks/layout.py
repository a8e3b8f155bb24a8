"""``resnetlab bench layout``: how to spend a CPU's cores on training, measured.

Each layout runs as fresh worker processes started by ``training/launch.py`` (so that
thread counts and the OpenMP wait policy are set before torch starts, the same way for
every layout): P processes x T threads, P * T = the cores, the global batch split over
the P processes as the trainer splits it. Every worker runs the trainer's own pieces on
in-memory data: the in-memory loader's batched §4.2 augmentation, the speed choices,
DDP (gloo) when P > 1, and ``train_step``. Layouts alternate over ``--rounds`` so that
a machine's drift hits all of them alike.

``--compete busy|torch`` measures every layout again while a competing job runs (see
``competitor.py``), so the quiet and the shared figures come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

from resnetlab.benchmarks import competitor
from resnetlab.errors import ResnetlabError
from resnetlab.training import launch

WORKER = "resnetlab.benchmarks.layout_worker"


def layouts(cores: int) -> list[tuple[int, int, str]]:
    """(processes, threads, OpenMP wait policy) using every core: 1 x cores, ..., cores x 1.
    A layout with several threads per process is measured with libgomp's default policy
    (spin a while, then sleep) and with PASSIVE (sleep at once); with one thread there is
    no OpenMP team and so nothing to choose."""
    out: list[tuple[int, int, str]] = []
    for p in range(1, cores + 1):
        if cores % p == 0:
            t = cores // p
            out += [(p, t, "default"), (p, t, "PASSIVE")] if t > 1 else [(p, t, "-")]
    return out


def layout_name(procs: int, threads: int, policy: str) -> str:
    return f"{procs}x{threads}" + (f" {policy}" if policy != "-" else "")


def measure_layout(
    model: str,
    procs: int,
    threads: int,
    policy: str,
    *,
    batch_size: int,
    seconds: float,
    data: str | None,
    compile_mode: str = "auto",
) -> dict[str, Any]:
    """Run one layout once; rank 0's report (the group's images/s)."""
    spec = json.dumps(
        dict(model=model, batch_size=batch_size, seconds=seconds, data=data, compile=compile_mode)
    )
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy not in ("default", "-"):
        base["OMP_WAIT_POLICY"] = policy
    with tempfile.TemporaryFile("w+") as report:
        code = launch.run_workers(
            launch.python_command(WORKER, [spec]),
            procs,
            threads,
            base,
            wait_policy=None,
            rank0_stdout=report,
        )
        report.seek(0)
        lines = report.read().strip().splitlines()
    if code or not lines:
        raise RuntimeError(f"layout {procs}x{threads} failed (exit status {code}); see above")
    return dict(json.loads(lines[-1]))


def compare(
    models: list[str],
    *,
    cores: int,
    batch_size: int,
    seconds: float,
    rounds: int,
    data: str | None,
    compete: str,
    log: Any = print,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "cores": cores,
        "batch_size": batch_size,
        "seconds": seconds,
        "rounds": rounds,
        "data": data or "synthetic (random uint8 images, 32x32, in memory)",
        "compete": compete,
        "machine": competitor.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "models": {},
    }
    conditions = ["quiet"] + ([compete] if compete != "none" else [])
    for model in models:
        per: dict[str, dict[str, list[float]]] = {}
        for condition in conditions:
            with competitor.running(condition if condition != "quiet" else "none"):
                for r in range(rounds):
                    for procs, threads, policy in layouts(cores):
                        key = layout_name(procs, threads, policy)
                        res = measure_layout(
                            model,
                            procs,
                            threads,
                            policy,
                            batch_size=batch_size,
                            seconds=seconds,
                            data=data,
                        )
                        ips = float(res["images_per_s"])
                        per.setdefault(key, {}).setdefault(condition, []).append(ips)
                        log(
                            f"{model} {condition:5s} round {r + 1}/{rounds} {key:>10s} "
                            f"(processes x threads): {ips:7.1f} img/s"
                        )
        summary = {
            key: {c: {"runs": v, "mean": statistics.fmean(v)} for c, v in by_cond.items()}
            for key, by_cond in per.items()
        }
        best = max(summary, key=lambda k: float(statistics.fmean(per[k]["quiet"])))
        report["models"][model] = {"layouts": summary, "fastest_quiet": best}
    return report


def run(args: argparse.Namespace) -> int:
    from resnetlab.benchmarks import check_args

    for m in args.models:
        check_args(model=m)
    check_args(
        positive={"--seconds": args.seconds, "--batch-size": args.batch_size},
        non_negative={"--rounds": args.rounds},
    )
    cores = args.cores or launch.cpu_cores()
    if any(args.batch_size % p for p, _, _ in layouts(cores)):
        raise ResnetlabError(
            f"--batch-size {args.batch_size} does not split over {cores} processes"
        )
    r = compare(
        args.models,
        cores=cores,
        batch_size=args.batch_size,
        seconds=args.seconds,
        rounds=max(1, args.rounds),
        data=args.data,
        compete=args.compete,
        log=(lambda _: None) if args.json else (lambda s: print(s, flush=True)),
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"\n{r['machine']}; global batch {args.batch_size}, {r['data']}")
    for model, m in r["models"].items():
        for key, by_cond in m["layouts"].items():
            quiet = by_cond["quiet"]["mean"]
            line = f"  {model:10s} {key:>10s}  quiet {quiet:7.1f} img/s"
            if args.compete in by_cond:
                shared = by_cond[args.compete]["mean"]
                line += f"  with {args.compete} {shared:7.1f} img/s ({100 * shared / quiet:.0f}%)"
            print(line)
        print(f"  {model}: fastest on a quiet machine: {m['fastest_quiet']}")
    return 0


def register(topics: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = topics.add_parser(
        "layout", help="training img/s: processes x threads layouts of the CPU's cores"
    )
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--data", default=None, help="in-memory dataset (default: synthetic)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the layouts")
    p.add_argument("--cores", type=int, default=0, help="default: the cores this process may use")
    p.add_argument(
        "--compete",
        choices=competitor.KINDS,
        default="none",
        help="measure again while a competing job runs",
    )
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=run)
