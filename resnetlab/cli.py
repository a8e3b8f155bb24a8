"""The ``resnetlab`` command: one sub-command per capability.

Each sub-command lives next to the code it drives and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the parsed
``argparse.Namespace`` and returning an exit status). Modules are imported only when
the command line names them, so ``resnetlab models`` starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from resnetlab.errors import ResnetlabError

# sub-command -> "module" defining register(subparsers), or "module:function"
COMMANDS: dict[str, str] = {
    "models": "resnetlab.models.table",
    "train": "resnetlab.training.train_command",
    "eval": "resnetlab.training.eval_command:register_eval",
    "predict": "resnetlab.training.eval_command:register_predict",
    "bench": "resnetlab.benchmarks",
    "import": "resnetlab.interop.import_cli",
    "export": "resnetlab.interop.export",
    "reproduce": "resnetlab.experiments.reproduce",
    "sweep": "resnetlab.experiments.sweep",
}


class _Parser(argparse.ArgumentParser):
    """argparse held to the CLI's contract for user errors: one line, ``error: ...``,
    exit status 2 (argparse's own prints the usage first and prefixes the program name).
    Sub-command parsers inherit it (argparse creates them with the parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from resnetlab import __version__

    parser = _Parser(
        prog="resnetlab",
        description="Deep residual learning (He et al. 2015): models, training, evidence.",
    )
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if only is None or name == only:
            mod, _, func = module.partition(":")
            getattr(importlib.import_module(mod), func or "register")(sub)
        else:  # cheap placeholder so --help lists every command
            sub.add_parser(name, help=f"see 'resnetlab {name} --help'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from resnetlab.runtime import set_openmp_defaults

    set_openmp_defaults()  # before any command module imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ResnetlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
