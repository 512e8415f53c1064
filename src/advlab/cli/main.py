"""Entry point: discovers every subcommand module in advlab.cli and turns user errors into one line.

A subcommand module defines ``add_parser(subparsers)`` that registers its parser and sets
``func=run``; ``run(args)`` returns an exit code. User mistakes (AdvlabError) print one line on
stderr and exit 2; Ctrl-C (even while torch is still being imported) exits 130 with one line, and
SIGTERM ends a run the same way (143), so run folders under construction are removed.
Destinations (run folder, output files) are checked before the command does any work.

This module imports nothing heavy at the top: the console script imports it first, and an
interrupt during that import would otherwise end in a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from advlab import __version__

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


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


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that cleanups (partial run folders) run."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a test's worker thread)
        previous = None
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("advlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`advlab ... | head`): stop quietly like other Unix tools; point stdout at
        # /dev/null so that the interpreter's final flush does not print a traceback either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Terminated:
        print("advlab: terminated (SIGTERM); run the same command again to resume a training run", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    from advlab.errors import AdvlabError  # imports torch: inside the interrupt handling of main()

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        from advlab.cli.common import check_destinations

        check_destinations(args)
        return int(args.func(args) or 0)
    except AdvlabError as exc:
        print(f"advlab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
