"""Entry point: discovers every subcommand module in advlab.cli and turns user errors into one line.

A subcommand module defines ``add_parser(subparsers)`` that registers its parser and sets
``func=run``; ``run(args)`` returns an exit code. User mistakes (AdvlabError) print one line on
stderr and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from advlab import __version__
from advlab.errors import AdvlabError

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) that points to --help."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="advlab", description="Adversarial machine learning: attack, defend, certify and audit "
                    "PyTorch classifiers. Images are float in [0, 1]; models normalize their own input.")
    parser.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    import advlab.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main", "common"):
            continue
        module = importlib.import_module(f"advlab.cli.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except AdvlabError as exc:
        print(f"advlab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("advlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
