"""advlab report: render a run folder's self-contained HTML page."""

from __future__ import annotations

import argparse

from advlab.report.html import write_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render RUN_DIR/report.html from a run folder",
                       description="Render a run folder (config.json, metrics.json, report.json, figures/) "
                       "into one self-contained HTML page (images inlined).")
    p.add_argument("run_dir", help="a run folder written by any advlab command")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(write_report(args.run_dir))
    return 0
