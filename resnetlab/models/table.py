"""``resnetlab models``: every preset with its size and cost beside the paper's."""

from __future__ import annotations

import argparse
import json

from resnetlab.models.complexity import describe
from resnetlab.models.presets import list_models


def _fmt_paper(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g}{unit}"


def run(args: argparse.Namespace) -> int:
    names = args.names or [n for n in list_models() if args.all or n != "resnet1202"]
    rows = [describe(n) for n in names]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = f"{'model':<11}{'depth':>6} {'block':<11}{'shortcut':<9}{'input':>6}"
    header += f"{'params':>13}{'paper':>8}{'mult-adds':>14}{'paper':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        madds = int(r["mult_adds"])  # type: ignore[call-overload]
        madds_str = f"{madds / 1e9:.2f}G" if madds >= 1e9 else f"{madds / 1e6:.1f}M"
        print(
            f"{r['name']:<11}{r['depth']:>6} {r['block']:<11}{r['shortcut']:<9}{r['input']:>6}"
            f"{r['params']:>13,}{_fmt_paper(r['paper_params_millions'], 'M'):>8}"  # type: ignore[arg-type]
            f"{madds_str:>14}{_fmt_paper(r['paper_mult_adds_billions'], 'G'):>8}"  # type: ignore[arg-type]
        )
    if not args.names and not args.all:
        print("(resnet1202 omitted for speed; add --all)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list model presets with parameters and multiply-adds")
    p.add_argument("names", nargs="*", help="presets to show (default: all)")
    p.add_argument("--all", action="store_true", help="include resnet1202 (slow to count)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)
