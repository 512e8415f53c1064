"""advlab demo: the whole story on the MNIST copy inside the package, in one run folder and report;
the command behind `advlab.demo.run_demo` (the sections live in the advlab.demo package)."""

from __future__ import annotations

import argparse

from advlab.cli.common import add_run_args, device_from, positive_int
from advlab.demo import load_mnist, run_demo
from advlab.report.run import RunDir
from advlab.training import default_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train or reuse the MNIST model and show every part in one report",
                       description="Run the demo on the MNIST copy shipped with advlab: train (or reuse) "
                       "mnist_cnn, evaluate it, run each demo section, and write a run folder with report.html.")
    p.add_argument("--model", default="mnist_cnn", help="architecture to train (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the recipe's 3)")
    p.add_argument("--train-subset", type=positive_int, default=None, help="train on this many images")
    p.add_argument("--n", type=positive_int, default=None, help="test images for clean accuracy (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny budgets everywhere (for tests and a first look)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST IDX files (default: the embedded copy)")
    add_run_args(p, run)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    config = default_config("mnist", model=args.model, epochs=args.epochs, train_subset=args.train_subset)
    train_data, test_data = load_mnist(args.data_dir)
    with RunDir(args.out, "demo", {"train_config": config.to_dict(), "quick": args.quick,
                                   "device": str(device)}, overwrite=args.overwrite) as run_dir:
        run_demo(run_dir, config, train_data, test_data, device, args.quick, args.progress, args.data_dir, args.n)
        out = run_dir.commit()
    print(f"report: {(out / 'report.html').resolve()}")
    return 0
