"""The demo (`advlab demo`): the whole story on the MNIST copy inside the package, in one run folder.

`run_demo` trains (or reuses) the MNIST model, evaluates it, then runs every section of this package
in order: a module here joins the demo by defining ``demo_section(ctx)`` and an integer
``DEMO_ORDER``. Sections read what they need from the DemoContext, call library functions, and add
to ctx.run (sections, figures, metrics).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.data import ImageDataset, load_dataset
from advlab.report.figures import training_curve_figure
from advlab.report.run import RunDir
from advlab.training import TrainConfig, train_model


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


def demo_sections() -> list:
    """(order, name, demo_section) of every module of this package that offers a section, in order."""
    import advlab.demo as package

    sections = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"advlab.demo.{info.name}")
        if hasattr(module, "demo_section"):
            sections.append((getattr(module, "DEMO_ORDER", 100), info.name, module.demo_section))
    return sorted(sections)


def load_mnist(data_dir: str | None = None) -> tuple[ImageDataset, ImageDataset]:
    """The demo's data: MNIST from data_dir, else the copy inside the package."""
    return load_dataset("mnist", "train", data_dir), load_dataset("mnist", "test", data_dir)


def run_demo(run_dir: RunDir, config: TrainConfig, train_data: ImageDataset, test_data: ImageDataset,
             device: torch.device, quick: bool = False, progress: bool = True, data_dir: str | None = None,
             n: int | None = None) -> dict:
    """Train (or reuse) config's model on train_data, add its training curve and clean accuracy on the
    first n test images, run every section; return run_dir.metrics (the sections' metrics and each
    section's seconds). quick: tiny budgets everywhere."""
    from advlab.report.sections import add_clean_section

    model, meta, path, cached = train_model(config, device, data_dir, progress=progress,
                                            train_data=train_data, test_data=test_data)
    print(f"{'reused' if cached else 'trained'} {config.model}: test accuracy {meta['test_accuracy']:.4f} ({path})")
    curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"), f"{config.model} on MNIST")
    how = "from the cache" if cached else f"{meta['train_seconds']:.0f} s"
    run_dir.add_section("Model", f"{config.model} trained on MNIST for {config.epochs} epochs ({how}); "
                        f"checkpoint {path}.", figures=[(curve.name, "training loss and accuracy")], key="model")
    run_dir.metrics = {"checkpoint": str(path), "test_accuracy": meta["test_accuracy"]}
    run_dir.metrics["clean"] = add_clean_section(run_dir, model, meta, test_data.head(n), device, config.model)
    ctx = DemoContext(run_dir, model, meta, train_data, test_data, device, quick, progress, data_dir)
    for _, name, section in demo_sections():
        start = time.perf_counter()
        print(f"demo: {name} ...")
        section(ctx)
        ctx.timings[name] = time.perf_counter() - start
    run_dir.metrics["section_seconds"] = ctx.timings
    return run_dir.metrics
