"""advlab leaderboard: every recorded evaluation and certification as one table.

    advlab leaderboard [--sort COLUMN] [--ascending] [--dataset NAME] [--protocol NAME] [--out RUN]

Markdown on the terminal; in the run folder, leaderboard.html (sortable by a click on any column),
leaderboard.json and the usual report. The records are those advlab evaluate and advlab certify
wrote into the cache folder's database (advlab.evaluation.records).
"""

from __future__ import annotations

import argparse

from advlab.cli.common import add_out_arg
from advlab.evaluation.records import RecordStore
from advlab.report.leaderboard import add_leaderboard, leaderboard_table, markdown, sort_table
from advlab.report.run import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="the recorded evaluations as a sortable table",
                       description="Render every evaluation advlab evaluate and advlab certify recorded (in the "
                       "cache folder's database; ADVLAB_CACHE moves it) as a table: model, training recipe and "
                       "cost, protocol, images, clean accuracy, robust accuracy per eps and protocol, certified "
                       "accuracy per radius, and the gradient-masking diagnostics that fired. Markdown on the "
                       "terminal; a sortable HTML page in the run folder.")
    p.add_argument("--sort", default=None, metavar="COLUMN",
                   help="column to sort by, as printed (default: the first robust column)")
    p.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    p.add_argument("--dataset", default=None, help="only records of this data set")
    p.add_argument("--protocol", default=None, help="only records of this protocol (e.g. classic, certify)")
    add_out_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = RecordStore()
    table = leaderboard_table(store.all(), args.dataset, args.protocol)
    if not table["rows"]:
        print(f"no recorded evaluations{' matching the filters' if args.dataset or args.protocol else ''} in "
              f"{store.path}; run advlab evaluate or advlab certify first")
        return 0
    table = sort_table(table, args.sort, descending=not args.ascending)
    text = markdown(table)
    config = {"records": str(store.path), "sort": table["sorted_by"], "descending": table["descending"],
              "dataset": args.dataset, "protocol": args.protocol}
    with RunDir(args.out, "leaderboard", config, overwrite=args.overwrite) as run_dir:
        add_leaderboard(run_dir, table)
        out = run_dir.commit()
    print(text)
    print(f"\nsorted by {table['sorted_by']} ({'descending' if table['descending'] else 'ascending'}); "
          f"sortable page: {out / 'leaderboard.html'}")
    return 0
