"""The reports of ``resnetlab reproduce``: what was run, at which scale, on what, and
what the numbers say about the paper's claims.

Everything in a report comes from its command and its runs' own files (config.json,
metrics.csv, results.json, responses.json), and from other seeds of those runs that the
pool holds (the seed-to-seed spread that a depth step must exceed), nothing from the
clock or from the machine that writes it: with the pool unchanged, rerunning the command
rewrites the same bytes. A report may be partial (``--report-only``): missing runs are
named, and each verdict says what it rests on.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.atomic import write_text_atomic
from resnetlab.errors import ResnetlabError
from resnetlab.experiments.reproduce import (
    PAPER_ITERS,
    RECIPE_NOTES,
    RunOutcome,
    RunSpec,
    _check_same_recipe,
    read_outcome,
)
from resnetlab.training.config import TrainConfig
from resnetlab.training.run_folder import CHECKPOINTS, WEIGHTS, RunFolder

# Table 3: ResNet-34 on ImageNet, top-1 error % (10-crop, val) with shortcut options
# A, B (§3.3) and C (§4.1); the paper compares the options on ImageNet only.
PAPER_TABLE3 = {"A": 25.03, "B": 24.52, "C": 24.19}
SHORTCUT_OPTIONS = {
    "A": "zero-padding for increasing dimensions, all shortcuts parameter-free",
    "B": "projections for increasing dimensions, the others identity",
    "C": "all shortcuts are projections",
}
NOTES = "notes.md"  # hand-written notes in a report folder, kept in the report


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    pool: Path
    command: str
    setting: TrainConfig  # the report's training setting (its first run's config)


# -- formatting ---------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def _link(ctx: Context, o: RunOutcome, text: str | None = None) -> str:
    """The run's name (or ``text``) linked to its folder, relative to the report."""
    rel = Path(os.path.relpath(o.path, ctx.out)).as_posix()
    return f"[{text or o.spec.name}]({rel})"


def _name_cell(ctx: Context, o: RunOutcome) -> str:
    return _link(ctx, o) if o.finished else f"{o.spec.name} ({o.status})"


def _paper_error(model: str) -> float | None:
    from resnetlab.models import paper_figures

    return paper_figures(model).cifar10_test_error


def _values(points: list[tuple[int, float]], unit: str = "%") -> str:
    return (
        " / ".join(_pct(v) if unit == "%" else f"{v:.3f}" for _, v in points)
        + (unit if unit == "%" else "")
        + " at depth "
        + " / ".join(str(d) for d, _ in points)
    )


@dataclass
class SeedSpread:
    """The largest test-error difference between seeds of one run in the pool: how far
    apart two runs that differ only in their seed already are at this scale."""

    error: float  # a fraction, as the runs' errors
    between: str  # which runs, for the report: "resnet20 / resnet20-seed1"


def _seed_spread(ctx: Context, outcomes: list[RunOutcome]) -> SeedSpread | None:
    """Seeds of the report's finished runs that the pool also holds (``NAME-seedK``,
    trained with the same setting but for the seed, as ``reproduce shortcuts --seeds``
    makes them); None when it holds none."""
    spread: SeedSpread | None = None
    for o in outcomes:
        if not o.finished or o.test_error is None or o.config is None or o.spec.seed:
            continue
        errors = {o.spec.name: o.test_error}
        for path in sorted(ctx.pool.glob(f"{o.spec.name}-seed*")):
            seed = path.name.removeprefix(f"{o.spec.name}-seed")
            if not seed.isdigit():
                continue
            folder = RunFolder(path)
            try:
                _check_same_recipe(folder, dataclasses.replace(o.config, seed=int(seed)))
            except ResnetlabError:
                continue  # another setting: not a seed of this run
            sibling = read_outcome(RunSpec(o.spec.model, o.spec.shortcut, int(seed)), folder)
            if sibling.finished and sibling.test_error is not None:
                errors[path.name] = sibling.test_error
        if len(errors) > 1:
            diff = max(errors.values()) - min(errors.values())
            if spread is None or diff > spread.error:
                spread = SeedSpread(diff, " / ".join(errors))
    return spread


def _trend(
    points: list[tuple[int, float]],
    rises: bool,
    unit: str = "%",
    spread: SeedSpread | None = None,
) -> str:
    """Verdict on "the value rises (falls) with depth", from (depth, value) points; with
    a seed spread (a % value's), steps and an overall change within it are named as not
    evidence on their own."""
    if len(points) < 2:
        return "not testable yet (fewer than two depths finished)."
    sign = 1 if rises else -1
    steps = list(itertools.pairwise(points))
    good = [sign * (b[1] - a[1]) > 0 for a, b in steps]
    word = "rises" if rises else "falls"
    values = _values(points, unit)
    change = abs(points[-1][1] - points[0][1])
    noise, named, beyond = "", "", ""
    if spread is not None:
        noise = f"the seed-to-seed spread ({100 * spread.error:.2f} points, {spread.between})"
        if change <= spread.error:
            return (
                f"**not evidence either way**: {values}; from {points[0][0]} to "
                f"{points[-1][0]} layers it changes by no more than {noise}."
            )
        named = ", ".join(f"{a[0]}→{b[0]} ({100 * abs(b[1] - a[1]):.2f} points)"
                          for a, b in steps if abs(b[1] - a[1]) <= spread.error)  # fmt: skip
        beyond = f" by {100 * change:.2f} points, more than {noise}"
    if all(good):
        return (
            f"**supported**: {values}; it {word} at every step"
            + (f"; within {noise}, so not evidence alone: {named}" if named else "")
            + (f", each step more than {noise}" if noise and not named else "")
            + "."
        )
    if sign * (points[-1][1] - points[0][1]) > 0:
        bad = ", ".join(f"{a[0]}→{b[0]}" for (a, b), g in zip(steps, good) if not g)
        return (
            f"**partly supported**: {values}; the deepest is {'above' if rises else 'below'} "
            f"the shallowest{beyond}, but not at every step (not {bad})"
            + (f"; within that spread, so not evidence alone: {named}." if named else ".")
        )
    return f"**not supported at this scale**: {values}; it does not {word[:-1]} with depth."


def _header(ctx: Context, title: str, outcomes: list[RunOutcome]) -> list[str]:
    """Command, runs, data, scale, schedule, layout, machine and wall time."""
    args, setting = ctx.args, ctx.setting
    done = [o for o in outcomes if o.finished]
    missing = [o for o in outcomes if not o.finished]
    runs = f"- runs: `{ctx.pool.as_posix()}/`, {len(done)} of {len(outcomes)} finished"
    if missing:
        runs += "; " + ", ".join(f"{o.spec.name}: {o.status}" for o in missing)
    data = done[0].saved.get("data", {}) if done else {}
    n_train, n_val, n_test = (data.get(k) for k in ("train_images", "val_images", "test_images"))
    if n_train:
        chosen = (
            f"{n_val:,} held out for validation (each run's model is the one chosen on them)"
            if n_val
            else "no validation split (each run's last model)"
        )
        data_line = (
            f"- data: `{args.data}` ({data.get('name', '?')}): {n_train:,} training images, "
            f"{chosen}, {n_test or 0:,} test images"
        )
    else:
        data_line = f"- data: `{args.data}` (its split sizes are known once a run has read it)"
    iters, batch = setting.iters, setting.batch_size
    scale = f"{iters:,} iterations of batch {batch}"
    if n_train:
        scale += f" = {iters * batch / n_train:.1f} epochs of the {n_train:,} training images"
    scale += f", {iters / PAPER_ITERS:.4g} of the paper's {PAPER_ITERS:,} iterations (§4.2)"
    if args.smoke:
        scale = "smoke test, the numbers are meaningless: " + scale
    procs = setting.procs
    per = batch // (procs * setting.accum_steps)
    layout = (
        f"- process layout: {procs} process{'es (DDP, one thread each)' if procs > 1 else ''} "
        f"per run; BN statistics over {per} images per process (batch {batch} / {procs}); "
        "the same in every run (checked whenever a run is reused or resumed)"
    )
    return [
        f"# {title}",
        "",
        f"- command: `{ctx.command}`",
        runs,
        data_line,
        f"- scale: {scale}",
        f"- schedule: {RECIPE_NOTES[setting.recipe]}; {setting.eval_points} evaluations per "
        "run (the curves' points, and the candidates for the model chosen on validation)",
        layout,
        _machine_line(done),
        _wall_time_line(done),
        "",
        "Paper values are for the original CIFAR-10 at 64k iterations; a shorter schedule "
        "or lossy JPEG data shifts the absolute errors, so compare the trends.",
        "",
    ]


def _machine(env: dict[str, Any]) -> str:
    torch_version = env.get("torch", "?")
    gpu, cpu = env.get("accelerator"), env.get("cpu")
    if gpu:
        fp32 = "TF32 off" if gpu.get("conv_fp32") == "ieee" else "TF32 convolutions"
        return f"{gpu.get('name', '?')} GPU (fp32, {fp32}), torch {torch_version}"
    if cpu:
        return (
            f"{cpu.get('model', '?')} ({cpu.get('isa') or 'ISA unknown'}, "
            f"{cpu.get('cores', '?')} cores), torch {torch_version}"
        )
    return (
        "CPU not recorded (the run predates that record; its config.json says only "
        f"{env.get('machine', '?')}), torch {torch_version}"
    )


def _machine_line(done: list[RunOutcome]) -> str:
    """Every machine the runs used; a run resumed on another machine is named under
    each, as part of the run."""
    groups: dict[str, list[str]] = {}
    for o in done:
        envs = [*o.saved.get("environments_before", []), o.saved.get("environment", {})]
        descs = list(dict.fromkeys(_machine(e) for e in envs))
        for desc in descs:
            part = " (part of the run)" if len(descs) > 1 else ""
            groups.setdefault(desc, []).append(o.spec.name + part)
    if not groups:
        return "- machine: no run finished yet"
    if len(groups) == 1:
        return f"- machine: {next(iter(groups))}"
    return "- machine: " + "; ".join(f"{d}: {', '.join(names)}" for d, names in groups.items())


def _wall_time_line(done: list[RunOutcome]) -> str:
    timed = [o.train_seconds for o in done if o.train_seconds is not None]
    untimed = [o.spec.name for o in done if o.train_seconds is None]
    parts = []
    if timed:
        many = len(timed) > 1
        parts.append(
            f"{_duration(sum(timed))} for {'the ' if not untimed else ''}{len(timed)} "
            f"run{'s' if many else ''} that record{'' if many else 's'} it (training with "
            "its evaluations, summed from each run's results.json)"
        )
    if untimed:
        parts.append(f"not recorded by {', '.join(untimed)} (trained before runs recorded it)")
    return "- wall time: " + ("; ".join(parts) if parts else "no run finished yet")


def _footer(ctx: Context, outcomes: list[RunOutcome]) -> list[str]:
    lines = []
    missing = [o.spec.name for o in outcomes if not o.finished]
    if missing:
        lines += [
            "",
            f"Partial report: {len(missing)} of {len(outcomes)} runs not finished "
            f"({', '.join(missing)}); the verdicts above rest on the finished ones. The "
            "command trains the rest (and resumes an interrupted one).",
        ]
    notes = ctx.out / NOTES
    if notes.is_file():
        lines += ["", f"## Notes (written by hand, {NOTES})", "", notes.read_text().rstrip()]
    return lines


def _write(ctx: Context, lines: list[str]) -> None:
    path = ctx.out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    print(f"report: {path}")


def _by_depth(outcomes: list[RunOutcome], family: str, attr: str) -> list[tuple[int, float]]:
    return sorted(
        (o.spec.depth, v)
        for o in outcomes
        if o.finished and o.spec.family == family and (v := getattr(o, attr)) is not None
    )


# -- degradation (Fig. 6) -----------------------------------------------------------------


def degradation(ctx: Context, outcomes: list[RunOutcome]) -> None:
    from resnetlab.experiments.figures import plot_degradation

    ordered = sorted(outcomes, key=lambda o: (o.spec.family == "resnet", o.spec.depth))
    plot_degradation(ordered, ctx.out / "degradation.png")
    lines = _header(ctx, "Degradation: plain vs residual nets (Fig. 6)", outcomes)
    lines += [
        "![Fig. 6](degradation.png)",
        "",
        "Left: plain nets; right: ResNets (the paper's left and middle panels); one colour "
        "per depth; dashed: training error, bold: test error.",
        "",
        "| model | depth | params | final training error % | test error % | paper test error % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in ordered:
        paper = _paper_error(o.spec.model) if o.spec.family == "resnet" else None
        lines.append(
            f"| {_name_cell(ctx, o)} | {o.spec.depth} | "
            f"{'-' if o.params is None else f'{o.params:,}'} | {_pct(o.final_train_error)} | "
            f"{_pct(o.test_error)} | {'-' if paper is None else f'{paper:.2f}'} |"
        )
    lines += [
        "",
        "Final training error: the error on the augmented training batches since the "
        f"previous evaluation (the last 1/{ctx.setting.eval_points} of the run). Test error: "
        "the model chosen on the validation split. Paper: Table 6 (the paper gives the "
        "plain nets' errors only as curves).",
        "",
        "## Conclusions",
        "",
        "Computed from the table; each of the paper's claims, then what these runs say.",
        "",
    ]
    plain_train = _by_depth(outcomes, "plain", "final_train_error")
    res_train = _by_depth(outcomes, "resnet", "final_train_error")
    res_test = _by_depth(outcomes, "resnet", "test_error")
    lines += [
        "- Plain nets degrade: the deeper plain net has the higher training error (§4.2, "
        f"Fig. 6 left): {_trend(plain_train, rises=True)}",
        "- Residual learning overcomes it: the deeper ResNet has the lower training error "
        f"(Fig. 6 middle): {_trend(res_train, rises=False)}",
        "- Deeper ResNets generalise better: lower test error with depth (Table 6): "
        f"{_trend(res_test, rises=False, spread=_seed_spread(ctx, outcomes))}",
        "- At equal depth the ResNet has the lower training error (Fig. 6, §4.2): "
        f"{_paired(plain_train, res_train, 'training error', '%')}",
    ]
    _write(ctx, lines + _footer(ctx, outcomes))


def _paired(
    plain: list[tuple[int, float]], res: list[tuple[int, float]], what: str, unit: str
) -> str:
    """Verdict on "the ResNet's value is below the plain net's at each depth"."""
    p, r = dict(plain), dict(res)
    depths = sorted(set(p) & set(r))
    if not depths:
        return "not testable yet (no depth with both nets finished)."

    def diff(d: int) -> str:
        return f"{100 * (r[d] - p[d]):+.2f}" if unit == "%" else f"{r[d] - p[d]:+.3f}"

    below = [d for d in depths if r[d] < p[d]]
    detail = (
        f"ResNet minus plain {what} at depth {' / '.join(map(str, depths))}: "
        f"{' / '.join(diff(d) for d in depths)}{' points' if unit == '%' else ''}"
    )
    if len(below) == len(depths):
        return f"**supported** at {len(depths)} of {len(depths)} depths; {detail}."
    if below:
        return f"**partly supported**: at {len(below)} of {len(depths)} depths; {detail}."
    return f"**not supported at this scale**: at none of {len(depths)} depths; {detail}."


# -- cifar-table (Table 6) ----------------------------------------------------------------


def _params_match(ours: int, paper_millions: float) -> bool:
    """Our count rounded as the paper rounds it (0.27M, 1.7M)."""
    decimals = len(repr(paper_millions).partition(".")[2])
    return f"{ours / 1e6:.{decimals}f}" == f"{paper_millions:.{decimals}f}"


def cifar_table(ctx: Context, outcomes: list[RunOutcome]) -> None:
    from resnetlab.models import paper_figures

    lines = _header(ctx, "CIFAR-10 ResNets (Table 6)", outcomes)
    lines += [
        "| model | depth | params | test error % | paper params | paper test error % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    gaps, matches, compared = [], [], 0
    test_errors = _by_depth(outcomes, "resnet", "test_error")
    for o in sorted(outcomes, key=lambda o: o.spec.depth):
        fig = paper_figures(o.spec.model)
        paper_params = "-" if fig.params_millions is None else f"{fig.params_millions}M"
        err = fig.cifar10_test_error
        lines.append(
            f"| {_name_cell(ctx, o)} | {o.spec.depth} | "
            f"{'-' if o.params is None else f'{o.params:,}'} | {_pct(o.test_error)} | "
            f"{paper_params} | {'-' if err is None else f'{err:.2f}'} |"
        )
        if o.finished and o.params is not None and fig.params_millions is not None:
            compared += 1
            if _params_match(o.params, fig.params_millions):
                matches.append(o.spec.name)
        if o.test_error is not None and err is not None:
            gaps.append(100 * o.test_error - err)
    lines += [
        "",
        "Test error: the model chosen on the validation split. Paper: Table 6 (64k "
        "iterations, original images; ResNet-110's 6.43 is the best of 5 runs, mean "
        "6.61 ± 0.16).",
        "",
        "## Conclusions",
        "",
        "Computed from the table; each of the paper's claims, then what these runs say.",
        "",
        "- Deeper ResNets have lower test error (Table 6: 8.75% at 20 layers to 6.43% at "
        f"110): {_trend(test_errors, rises=False, spread=_seed_spread(ctx, outcomes))}",
    ]
    if compared:
        verdict = "**supported**" if len(matches) == compared else "**not supported**"
        lines.append(
            f"- Parameter counts as in Table 6: {verdict}: {len(matches)} of {compared} "
            "finished models round to the paper's figure."
        )
    if gaps:
        lines.append(
            f"- Absolute test errors: {min(gaps):.2f} to {max(gaps):.2f} points above the "
            f"paper's; not comparable at {ctx.setting.iters / PAPER_ITERS:.4g} of its "
            "schedule on these data, only the ordering is."
        )
    _write(ctx, lines + _footer(ctx, outcomes))


# -- shortcuts (§3.3, Table 3) ------------------------------------------------------------


def shortcuts(ctx: Context, outcomes: list[RunOutcome]) -> None:
    from resnetlab.experiments.figures import plot_runs

    seeds = list(dict.fromkeys(o.spec.seed for o in outcomes))
    model = outcomes[0].spec.model

    def label(o: RunOutcome) -> str:  # the option, not the folder (A's is plain "resnet20")
        return f"option {o.spec.option}" + (f", seed {o.spec.seed}" if len(seeds) > 1 else "")

    plot_runs(
        {label(o): o.rows for o in outcomes if o.finished},
        ctx.out / "shortcuts.png",
        title=f"{model}: shortcut options A/B/C",
    )
    lines = _header(ctx, f"Shortcut options A/B/C on {model} (§4.1, cf. Table 3)", outcomes)
    lines += [
        "![shortcuts](shortcuts.png)",
        "",
        "| option | shortcuts | params | "
        + " | ".join(f"test error %, seed {s}" for s in seeds)
        + " | mean | paper (Table 3) |",
        "|---|---|---:|" + "---:|" * len(seeds) + "---:|---:|",
    ]
    means: dict[str, float] = {}
    spreads: list[float] = []
    for option in ("A", "B", "C"):
        runs = [o for o in outcomes if o.spec.option == option]
        params = next((o.params for o in runs if o.params is not None), None)
        cells = [_link(ctx, o, _pct(o.test_error)) if o.finished else o.status for o in runs]
        errors = [o.test_error for o in runs if o.test_error is not None]
        mean = "-"
        if errors:
            means[option] = sum(errors) / len(errors)
            mean = _pct(means[option])
            if len(errors) < len(runs):
                mean += f" ({len(errors)} of {len(runs)} seeds)"
        if len(errors) >= 2:
            spreads.append(max(errors) - min(errors))
        lines.append(
            f"| {option} | {SHORTCUT_OPTIONS[option]} | "
            f"{'-' if params is None else f'{params:,}'} | {' | '.join(cells)} | {mean} | "
            f"{PAPER_TABLE3[option]:.2f} |"
        )
    spread = max(spreads) if spreads else None
    lines += [
        "",
        "Test error: the model chosen on the validation split. Paper: Table 3, ResNet-34 on "
        "ImageNet (top-1 error, 10-crop); the paper does not compare the options on CIFAR.",
        "",
        "## Conclusions",
        "",
        "Computed from the table; each of the paper's claims, then what these runs say. "
        "Seed-to-seed spread: "
        + ("not known yet (fewer than two seeds of an option)" if spread is None else
           f"{100 * spread:.2f} points (the largest difference between two seeds of one "
           "option); a difference between options within it is not evidence either way")
        + ".",
        "",
        "- B is slightly better than A (§4.1, Table 3: 24.52 vs 25.03%; the zero-padded "
        f"dimensions of A have no residual learning): {_better(means, 'B', 'A', spread)}",
        "- C is marginally better than B (§4.1, Table 3: 24.19 vs 24.52%; attributed to the "
        f"extra parameters of the projections): {_better(means, 'C', 'B', spread)}",
        "- The differences are small, so projection shortcuts are not essential for "
        f"addressing degradation (§4.1): {_small(means, spread)}",
    ]  # fmt: skip
    _write(ctx, lines + _footer(ctx, outcomes))


def _better(means: dict[str, float], a: str, b: str, spread: float | None) -> str:
    """Verdict on "option ``a`` has a lower mean test error than ``b``"."""
    if a not in means or b not in means:
        return "not testable yet."
    diff = 100 * (means[b] - means[a])  # > 0: a better, as the paper says
    if round(diff, 2) == 0:
        return f"**not supported**: {a}'s and {b}'s means are equal (to 0.01 points)."
    fact = f"{a}'s mean is {abs(diff):.2f} points {'below' if diff > 0 else 'above'} {b}'s"
    if spread is None:
        way = "the paper's" if diff > 0 else "the opposite"
        return f"{fact}, {way} direction; no seed spread yet to judge it by."
    within = abs(diff) <= 100 * spread
    if diff > 0 and not within:
        return f"**supported**: {fact}, more than the seed-to-seed spread."
    if diff > 0:
        return f"**not evidence either way**: {fact} (the paper's direction), within the spread."
    if not within:
        return f"**not supported at this scale**: {fact}, more than the seed-to-seed spread."
    return f"**not evidence either way**: {fact} (the opposite direction), within the spread."


def _small(means: dict[str, float], spread: float | None) -> str:
    if len(means) < 2:
        return "not testable yet."
    largest = 100 * (max(means.values()) - min(means.values()))
    fact = f"the options' means are at most {largest:.2f} points apart"
    if spread is None:
        return f"{fact}; no seed spread yet to judge it by."
    if largest <= 100 * spread:
        return f"**supported**: {fact}, within the seed-to-seed spread."
    return f"**not supported at this scale**: {fact}, more than the seed-to-seed spread."


# -- responses (Fig. 7) -------------------------------------------------------------------


def responses(ctx: Context, outcomes: list[RunOutcome]) -> None:
    from resnetlab.experiments.figures import plot_responses

    ordered = sorted(outcomes, key=lambda o: (o.spec.family == "resnet", o.spec.depth))
    stds = {o.spec.name: o.responses["stds"] for o in ordered if o.responses}
    plot_responses(stds, ctx.out / "responses.png")
    write_text_atomic(ctx.out / "responses.json", json.dumps(stds, indent=1) + "\n")
    lines = _header(ctx, "Layer responses (Fig. 7)", outcomes)
    lines += [
        "![Fig. 7](responses.png)",
        "",
        "The std of each 3x3 layer's response (its BN output, before ReLU and the addition), "
        "by layer index (top) and sorted by magnitude (bottom); plain nets dashed, ResNets "
        "solid. Measured once per run, from the model chosen on validation, and saved in the "
        "run's responses.json.",
        "",
        "| model | depth | 3x3 layers | mean std | max std | measured on |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in ordered:
        r = o.responses
        if r:
            s = r["stds"]
            lines.append(
                f"| {_link(ctx, o)} | {o.spec.depth} | {len(s)} | {sum(s) / len(s):.3f} | "
                f"{max(s):.3f} | {r['images']:,} {r['split']} images |"
            )
        else:
            status = o.status if not o.finished else "no statistics: weights not here"
            lines.append(f"| {o.spec.name} ({status}) | {o.spec.depth} | - | - | - | - |")
    mean = {
        fam: sorted(
            (o.spec.depth, sum(o.responses["stds"]) / len(o.responses["stds"]))
            for o in outcomes
            if o.responses and o.spec.family == fam
        )
        for fam in ("plain", "resnet")
    }
    lines += [
        "",
        "## Conclusions",
        "",
        "Computed from the table; each of the paper's claims, then what these runs say.",
        "",
        "- ResNets have generally smaller responses than their plain counterparts (§4.2, "
        f"Fig. 7), by mean std: {_paired(mean['plain'], mean['resnet'], 'mean std', '')}",
        "- The deeper ResNet has smaller responses: with more layers, each layer of a ResNet "
        f"modifies the signal less (§4.2, Fig. 7), by mean std: {_trend(mean['resnet'], rises=False, unit='')}",
    ]
    lost = [o.spec.name for o in outcomes if o.finished and not o.responses]
    if lost:
        lines += [
            "",
            f"No statistics for {', '.join(lost)}: finished before runs saved them, and "
            "their weights are not here. Retraining them (their folders removed) or "
            "`--checkpoints` with their weights would measure them.",
        ]
    _write(ctx, lines + _footer(ctx, outcomes))


def responses_from_checkpoints(
    args: argparse.Namespace, out: Path, checkpoints: list[Path], command: str
) -> None:
    """Fig. 7 of the weights given with ``--checkpoints`` (any runs, any setting)."""
    from resnetlab.experiments.figures import plot_responses
    from resnetlab.experiments.reproduce import SMOKE_RESPONSE_IMAGES
    from resnetlab.experiments.responses import layer_response_stds

    stds = {}
    for ckpt in checkpoints:
        if ckpt.parent.name == CHECKPOINTS:  # RUN/checkpoints/best.pt
            name = ckpt.parent.parent.name
        else:  # RUN/model.safetensors, or any other file by its own name
            name = ckpt.parent.name if ckpt.name == WEIGHTS else ckpt.stem
        while name in stds:
            name += "'"
        print(f"responses of {name} ({ckpt})", flush=True)
        stds[name] = layer_response_stds(
            ckpt,
            args.data,
            data_dir=args.data_dir,
            limit=SMOKE_RESPONSE_IMAGES if args.smoke else None,
        )
    plot_responses(stds, out / "responses.png")
    write_text_atomic(out / "responses.json", json.dumps(stds, indent=1) + "\n")
    lines = [
        f"# Layer responses (Fig. 7)\n\n- command: `{command}`\n"
        f"- data: `{args.data}` (test split)\n"
        f"- weights: {', '.join(f'`{c}`' for c in checkpoints)}\n",
        "![Fig. 7](responses.png)\n",
        "| model | 3x3 layers | mean std | max std |",
        "|---|---:|---:|---:|",
    ]
    for name, s in stds.items():
        lines.append(f"| {name} | {len(s)} | {sum(s) / len(s):.3f} | {max(s):.3f} |")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    print(f"report: {out / 'report.md'}")


REPORTS: dict[str, Callable[[Context, list[RunOutcome]], None]] = {
    "degradation": degradation,
    "cifar-table": cifar_table,
    "shortcuts": shortcuts,
    "responses": responses,
}
