"""advlab demo: the whole story on the MNIST copy inside the package, in one run folder and report.

It trains (or reuses) the MNIST model, evaluates it, then runs every demo section that other
subcommand modules offer: a module joins the demo by defining ``demo_section(ctx)`` and an integer
``DEMO_ORDER``. Sections read what they need from the DemoContext and add to ctx.run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.cli.common import add_device_arg, add_out_arg, add_progress_arg, device_from, positive_int
from advlab.data import ImageDataset, load_dataset
from advlab.report.figures import training_curve_figure
from advlab.report.run import RunDir
from advlab.report.sections import add_clean_section
from advlab.training import default_config, train_model


@dataclass
class DemoContext:
    run: RunDir
    model: nn.Module
    meta: dict
    train_data: ImageDataset
    test_data: ImageDataset
    device: torch.device
    quick: bool
    progress: bool
    data_dir: str | None = None
    timings: dict = field(default_factory=dict)


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
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def demo_sections() -> list:
    import advlab.cli as package

    sections = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"advlab.cli.{info.name}")
        if hasattr(module, "demo_section"):
            sections.append((getattr(module, "DEMO_ORDER", 100), info.name, module.demo_section))
    return sorted(sections)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    config = default_config("mnist", model=args.model, epochs=args.epochs, train_subset=args.train_subset)
    train_data = load_dataset("mnist", "train", args.data_dir)
    test_data = load_dataset("mnist", "test", args.data_dir)
    with RunDir(args.out, "demo", {"train_config": config.to_dict(), "quick": args.quick,
                                   "device": str(device)}, overwrite=args.overwrite) as run_dir:
        model, meta, path, cached = train_model(config, device, args.data_dir, progress=args.progress,
                                                train_data=train_data, test_data=test_data)
        print(f"{'reused' if cached else 'trained'} {config.model}: test accuracy {meta['test_accuracy']:.4f} "
              f"({path})")
        curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"), f"{config.model} on MNIST")
        how = "from the cache" if cached else f"{meta['train_seconds']:.0f} s"
        run_dir.add_section("Model", f"{config.model} trained on MNIST for {config.epochs} epochs ({how}); "
                            f"checkpoint {path}.",
                            figures=[(curve.name, "training loss and accuracy")], key="model")
        run_dir.metrics = {"checkpoint": str(path), "test_accuracy": meta["test_accuracy"]}
        run_dir.metrics["clean"] = add_clean_section(run_dir, model, meta, test_data.head(args.n), device, config.model)
        ctx = DemoContext(run_dir, model, meta, train_data, test_data, device, args.quick, args.progress,
                          args.data_dir)
        for _, name, section in demo_sections():
            start = time.perf_counter()
            print(f"demo: {name} ...")
            section(ctx)
            ctx.timings[name] = time.perf_counter() - start
        run_dir.metrics["section_seconds"] = ctx.timings
        out = run_dir.commit()
    print(f"report: {(out / 'report.html').resolve()}")
    return 0
