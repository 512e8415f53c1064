"""advlab backdoor: poison, train, detect from representations, remove, retrain, and compare.

The whole pipeline of the lecture's last part (Hayase et al. 2021): a few participants slip
triggered images labelled 'deer' into the training set; the model learns the backdoor; a defense
finds the poisons from the model's own representations of the 'deer' images, removes them, and the
model is retrained without them. Reports clean accuracy and attack success before and after each
defense, detection true and false positives, and the lecture's figures.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    dataset_split,
    declare_output_folder,
    device_from,
    positive_float,
    positive_int,
    probability,
    seed_int,
)
from advlab.data import ImageDataset
from advlab.detection import DETECTORS, detect, extract_features
from advlab.detection.representations import PENULTIMATE, describe_layer
from advlab.detection.spectre import MAX_K, pca_scores, whiten_robustly
from advlab.errors import AdvlabError
from advlab.poisoning import (
    DEFAULT_TARGET,
    PoisonedDataset,
    attack_success_rate,
    clean_accuracy,
    make_trigger,
    poison_dataset,
    save_poisoned_folder,
    triggered_test_set,
)
from advlab.poisoning.triggers import LOCATIONS, PATTERNS, TRIGGERS
from advlab.report.backdoor_figures import projection_figure, score_histogram_figure
from advlab.report.figures import image_grid_figure
from advlab.report.run import RunDir
from advlab.training import default_config, train_model

DEMO_ORDER = 60
DEFENSES = tuple(DETECTORS)


@dataclass
class BackdoorSettings:
    """Everything the pipeline needs besides data and device."""

    dataset: str = "cifar10"
    trigger: str = "patch"
    trigger_options: dict = field(default_factory=dict)
    target: str | None = None
    source: str | None = None
    n_poison: int = 500
    defenses: tuple[str, ...] = ("spectre",)
    retrain: tuple[str, ...] | None = None  # None: retrain after every defense
    train_overrides: dict = field(default_factory=dict)
    train_subset: int | None = None
    layer: str = PENULTIMATE
    scan: str = "target"  # "target": the target class only (SPECTRE's setting); "all": every class
    k: int | None = None
    max_k: int | None = MAX_K
    seed: int = 0
    use_cache: bool = True
    data_dir: str | None = None


def default_target(classes: list[str]) -> str:
    return DEFAULT_TARGET if DEFAULT_TARGET in classes else classes[0]


def digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _train(config, data: ImageDataset, test: ImageDataset, device, progress: bool, use_cache: bool, what: str):
    start = time.perf_counter()
    model, meta, path, cached = train_model(config, device, train_data=data, test_data=test, progress=progress,
                                            use_cache=use_cache)
    seconds = time.perf_counter() - start
    print(f"backdoor: {what}: {'cached' if cached else f'trained in {seconds:.0f} s'}, clean accuracy "
          f"{meta['test_accuracy']:.4f} ({path.name})")
    return model, meta, {"checkpoint": str(path), "cached": cached, "seconds": seconds}


def _evaluate(model, test: ImageDataset, poisoned: PoisonedDataset, device) -> dict:
    target = poisoned.target
    return {"clean_accuracy": clean_accuracy(model, test, device),
            "attack_success": attack_success_rate(model, test, poisoned.trigger, target, poisoned.source, device)}


def run_pipeline(settings: BackdoorSettings, train: ImageDataset, test: ImageDataset, device: torch.device,
                 run_dir: RunDir, progress: bool = True, prefix: str = "") -> dict:
    """Poison, train, detect, retrain; add sections and figures to run_dir; return the metrics."""
    for name in settings.defenses:
        if name not in DEFENSES:
            raise AdvlabError(f"unknown defense {name!r}; choose from {', '.join(DEFENSES)}")
    if settings.scan not in ("target", "all"):
        raise AdvlabError(f"--scan must be target or all, got {settings.scan!r}")
    if settings.train_subset:
        if settings.train_subset > len(train):
            raise AdvlabError(f"--train-subset {settings.train_subset} exceeds the {len(train)} training images")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))
        train = train.subset(order[: settings.train_subset].sort().values, name=f"{train.name}-{settings.train_subset}")
    target = settings.target or default_target(train.classes)
    trigger = make_trigger(settings.trigger, **settings.trigger_options)
    poisoned = poison_dataset(train, trigger, target, n_poison=settings.n_poison, source=settings.source,
                              seed=settings.seed)
    target_index, target_name = poisoned.target, train.classes[poisoned.target]
    subset_note = {"subset": {"n": settings.train_subset, "seed": settings.seed}} if settings.train_subset else {}
    base = default_config(settings.dataset, **settings.train_overrides)

    def config_with(recipe: dict):
        return default_config(settings.dataset, **settings.train_overrides, recipe={**recipe, **subset_note})

    print(f"backdoor: {poisoned.n_poison} poisons ({trigger.name}) -> '{target_name}' among {len(train)} "
          f"training images; {base.model}, {base.epochs} epochs")
    metrics: dict = {"poisoning": poisoned.describe(), "train_config": base.to_dict(), "layer": settings.layer,
                     "scan": settings.scan}
    recipe = {"method": "backdoor", "poisoning": poisoned.describe()}
    model, _, info = _train(config_with(recipe), poisoned.data, test, device, progress, settings.use_cache,
                            "poisoned model")
    metrics["poisoned"] = {**_evaluate(model, test, poisoned, device), **info}
    print(f"backdoor: poisoned model: attack success {metrics['poisoned']['attack_success']:.4f}")

    # Representations of the scanned classes only (un-augmented images, eval mode).
    labels = poisoned.data.labels.numpy()
    rows = np.flatnonzero(labels == target_index) if settings.scan == "target" else np.arange(len(labels))
    start = time.perf_counter()
    features = extract_features(model, poisoned.data.subset(torch.from_numpy(rows)), settings.layer, device=device,
                                progress=progress)
    metrics["layer_description"] = describe_layer(model, settings.layer)
    metrics["features_shape"] = list(features.shape)
    metrics["features_seconds"] = time.perf_counter() - start
    truth = poisoned.poisoned.numpy()
    budget = {target_index: poisoned.n_poison} if settings.scan == "target" else poisoned.n_poison
    retrain = settings.defenses if settings.retrain is None else settings.retrain
    detections, class_scores = {}, {}
    for name in settings.defenses:
        start = time.perf_counter()
        options = {"m": budget}
        if name == "spectre":
            options.update(k=settings.k, max_k=settings.max_k)
        result = detect(name, features, labels[rows], **options)
        removed = np.zeros(len(labels), dtype=bool)
        removed[rows[result.removed]] = True
        entry = {"seconds": time.perf_counter() - start, "removed": int(removed.sum()),
                 "true_positives": int((removed & truth).sum()), "false_positives": int((removed & ~truth).sum()),
                 "poisons_missed": int((~removed & truth).sum()),
                 "per_class": {str(c): v for c, v in result.per_class.items()}}
        print(f"backdoor: {name}: removed {entry['removed']}, {entry['true_positives']} of {poisoned.n_poison} "
              f"poisons, {entry['false_positives']} clean ({entry['seconds']:.1f} s)")
        in_target = labels[rows] == target_index
        class_scores[name] = result.scores[in_target]
        if name in retrain and not removed.any():  # the same data and seed train the same weights
            entry["after"] = {**metrics["poisoned"], "note": "nothing removed: the poisoned model is the retrained one"}
        elif name in retrain:
            kept = poisoned.without(removed)
            retrain_recipe = {"method": "backdoor-retrain", "poisoning": poisoned.describe(), "defense": name,
                              "layer": settings.layer, "removed": digest(np.flatnonzero(removed))}
            retrained, _, info = _train(config_with(retrain_recipe), kept, test, device, progress,
                                        settings.use_cache, f"retrained after {name}")
            entry["after"] = {**_evaluate(retrained, test, poisoned, device), **info}
            print(f"backdoor: after {name}: clean accuracy {entry['after']['clean_accuracy']:.4f}, attack success "
                  f"{entry['after']['attack_success']:.4f}")
        detections[name] = entry
    metrics["defenses"] = detections
    # the same recipe on the unpoisoned set, last (detection results come first on a slow machine); it
    # shares the cache with `advlab train` when no subset is taken
    clean_config = config_with({"method": "standard"}) if subset_note else base
    clean_model, _, clean_info = _train(clean_config, train, test, device, progress, settings.use_cache,
                                        "unpoisoned model")
    metrics["unpoisoned"] = {**_evaluate(clean_model, test, poisoned, device), **clean_info}
    _report(run_dir, metrics, poisoned, test, features[labels[rows] == target_index],
            truth[rows][labels[rows] == target_index], class_scores, settings, prefix)
    return metrics


def _report(run_dir: RunDir, metrics: dict, poisoned: PoisonedDataset, test: ImageDataset, target_features,
            target_truth, class_scores: dict, settings: BackdoorSettings, prefix: str) -> None:
    target_name = poisoned.data.classes[poisoned.target]
    desc = poisoned.describe()
    columns = ["model", "clean accuracy", "attack success", "removed", "poisons removed (TP)", "clean removed (FP)"]
    rows = [["unpoisoned", metrics["unpoisoned"]["clean_accuracy"], metrics["unpoisoned"]["attack_success"],
             "", "", ""],
            ["poisoned, no defense", metrics["poisoned"]["clean_accuracy"], metrics["poisoned"]["attack_success"],
             "", "", ""]]
    for name, entry in metrics["defenses"].items():
        after = entry.get("after", {})
        rows.append([f"after {name}", after.get("clean_accuracy", "not retrained"), after.get("attack_success", ""),
                     entry["removed"], entry["true_positives"], entry["false_positives"]])
    others = torch.nonzero(test.labels != poisoned.target).flatten()
    picks = test.subset(others[torch.linspace(0, len(others) - 1, 6).long()])  # spread over the (maybe sorted) set
    examples = triggered_test_set(picks, poisoned.trigger, poisoned.target)
    shown = torch.cat([picks.tensors()[0], examples.tensors()[0]])
    grid = image_grid_figure(shown, ["clean"] * 6 + ["triggered"] * 6, run_dir.figure_path(f"{prefix}triggers.png"),
                             cols=6, suptitle=f"{poisoned.trigger.name} trigger")
    text = (f"{desc['n_poison']} of {desc['n']} training images ({100 * desc['n_poison'] / desc['n']:.2f}%) carry "
            f"the {poisoned.trigger.name} trigger {poisoned.trigger.describe()} and the label '{target_name}' "
            f"(taken from {'every other class' if desc['source'] is None else desc['source']}). Model "
            f"{metrics['train_config']['model']}, {metrics['train_config']['epochs']} epochs. Attack success = share "
            f"of triggered test images of the other classes predicted '{target_name}'. Detection on "
            f"{metrics['layer_description']} ({metrics['features_shape'][1]} dims), scanning "
            f"{'the target class' if settings.scan == 'target' else 'every class'} with m = {desc['n_poison']}; "
            f"each defense removes round(1.5 m) per class (activation clustering: its flagged cluster, capped).")
    run_dir.add_section(f"Backdoor ({poisoned.trigger.name} trigger)", text,
                        table={"columns": columns, "rows": rows},
                        figures=[(grid.name, "test images without and with the trigger")], key=f"{prefix}backdoor")
    figures = []
    if len(target_features) > 7:
        before = pca_scores(target_features, 6)
        m = int(target_truth.sum()) or desc["n_poison"]
        after, _ = whiten_robustly(before, m) if before.shape[1] > 1 else (None, None)
        fig = projection_figure(before, after, target_truth, run_dir.figure_path(f"{prefix}projection.png"),
                                f"'{target_name}' training images: {metrics['layer_description']}")
        figures.append((fig.name, f"top-6 PCA projection of the '{target_name}' representations (blue clean, red "
                        "poisoned), before and after whitening with the robust covariance of clean + poisoned"))
    if class_scores:
        fig = score_histogram_figure(class_scores, target_truth, run_dir.figure_path(f"{prefix}scores.png"),
                                     f"detector scores on '{target_name}'")
        figures.append((fig.name, "detector scores, clean against poisoned (log counts)"))
    run_dir.add_section("Representations of the target class", "Middle-to-late-layer representations of the "
                        f"'{target_name}' training images, clean and poisoned marked (the lecture's figure).",
                        figures=figures, key=f"{prefix}backdoor_figures")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backdoor", help="poison, train, detect (SPECTRE, spectral, clustering), retrain, compare",
                       description="Backdoor poisoning and its defenses end to end: poison the training set, train, "
                       "extract representations, detect and remove the poisons, retrain, and report clean accuracy "
                       "and attack success before and after. Trained models are cached by their full recipe.")
    add_data_args(p, dataset="cifar10")
    p.add_argument("--trigger", choices=TRIGGERS, default="patch", help="trigger (default: %(default)s)")
    p.add_argument("--patch-size", type=positive_int, default=3, help="patch side in pixels (default: %(default)s)")
    p.add_argument("--patch-location", choices=LOCATIONS, default="bottom-right")
    p.add_argument("--patch-pattern", choices=PATTERNS, default="checkerboard")
    p.add_argument("--blend-alpha", type=probability, default=0.1,
                   help="noise/blend trigger weight (default: %(default)s)")
    p.add_argument("--amplitude", type=probability, default=20 / 255, help="periodic trigger amplitude in [0, 1] pixel "
                   "units (default: 20/255, Barni et al. 2019)")
    p.add_argument("--cycles", type=positive_float(), default=6.0,
                   help="periodic trigger cycles across the image (default: 6)")
    p.add_argument("--pixels", type=int, choices=(1, 2, 3), default=1, help="pixel trigger: SPECTRE's 1-3 pixels")
    p.add_argument("--target", default=None, help="target class name or index (default: deer, else class 0)")
    p.add_argument("--source", default=None, help="take poisons from this class only (default: every other class)")
    p.add_argument("--n-poison", type=positive_int, default=500, help="number of poisoned images (default: 500)")
    p.add_argument("--defense", default="spectre", help="comma-separated defenses from spectre, spectral, "
                   "clustering, or 'all' (default: spectre)")
    p.add_argument("--retrain", default=None, help="comma-separated defenses to retrain after, 'none', or (default) "
                   "all requested ones")
    p.add_argument("--layer", default=PENULTIMATE, help="representation layer: 'penultimate' (the input of the last "
                   "linear layer) or a module name (default: %(default)s)")
    p.add_argument("--scan", choices=("target", "all"), default="target", help="classes the defenses examine "
                   "(default: the target class, SPECTRE's setting)")
    p.add_argument("--k", type=positive_int, default=None, help="SPECTRE's PCA dimension (default: chosen by op_k)")
    p.add_argument("--max-k", type=positive_int, default=MAX_K, help="cap on SPECTRE's k sweep (default: %(default)s)")
    p.add_argument("--model", default=None, help="architecture (default: the data set's default)")
    p.add_argument("--width", type=positive_int, default=None, help="cifar_cnn base width (default: 32); 16 trains "
                   "about 3x faster on a CPU")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--lr", type=positive_float(), default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--train-subset", type=positive_int, default=None, help="train on this many random images")
    p.add_argument("--n-test", type=positive_int, default=None, help="evaluate on a fixed random subset of N "
                   "test images (default: all)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even when the cache has a model")
    p.add_argument("--save-poisoned", default=None, help="also write the poisoned set as an image folder with a "
                   "separate manifest.json of the poisoned files")
    declare_output_folder(p, "save_poisoned")
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _names(text: str | None, allowed, what: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text == "all":
        return tuple(allowed)
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise AdvlabError(f"unknown {what} {', '.join(bad) or repr(text)}; choose from {', '.join(allowed)}, all")
    return names


def trigger_options(args: argparse.Namespace) -> dict:
    if args.trigger == "patch":
        return {"size": args.patch_size, "location": args.patch_location, "pattern": args.patch_pattern}
    if args.trigger == "noise":
        return {"alpha": args.blend_alpha}
    if args.trigger == "blend":
        raise AdvlabError("the blend trigger needs an image; from the command line use --trigger noise "
                          "(Chen et al. 2017's random-noise pattern) or the Python API with BlendTrigger(image=...)")
    if args.trigger == "periodic":
        return {"amplitude": args.amplitude, "cycles": args.cycles}
    return {"pixels": args.pixels}


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    defenses = _names(args.defense, DEFENSES, "defense") or ()
    overrides = {k: v for k, v in {"model": args.model, "epochs": args.epochs, "lr": args.lr,
                                   "batch_size": args.batch_size}.items() if v is not None}
    if args.width is not None:
        overrides["model_extra"] = {"width": args.width}
    settings = BackdoorSettings(dataset=args.dataset, trigger=args.trigger, trigger_options=trigger_options(args),
                                target=args.target, source=args.source, n_poison=args.n_poison, defenses=defenses,
                                retrain=_names(args.retrain, defenses, "defense to retrain"),
                                train_overrides=overrides, train_subset=args.train_subset, layer=args.layer,
                                scan=args.scan, k=args.k, max_k=args.max_k, seed=args.seed, use_cache=not args.force,
                                data_dir=args.data_dir)
    train, test = dataset_split(args, "train"), dataset_split(args, "test")
    if args.n_test and args.n_test < len(test):  # a fixed random subset: folder copies are sorted by class
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.n_test]
        test = test.subset(order.sort().values, name=f"{test.name}-{args.n_test}")
    config = {k: v for k, v in vars(settings).items()}
    with RunDir(args.out, "backdoor", {"settings": config, "device": str(device)}, overwrite=args.overwrite) as run_dir:
        run_dir.metrics = run_pipeline(settings, train, test, device, run_dir, args.progress)
        if args.save_poisoned:
            target = settings.target or default_target(train.classes)
            data = train
            if settings.train_subset:
                order = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))
                data = train.subset(order[: settings.train_subset].sort().values)
            poisoned = poison_dataset(data, make_trigger(settings.trigger, **settings.trigger_options), target,
                                      n_poison=settings.n_poison, source=settings.source, seed=settings.seed)
            folder = save_poisoned_folder(poisoned, args.save_poisoned)
            run_dir.metrics["poisoned_folder"] = str(folder)
        out = run_dir.commit()
    _print_summary(run_dir.metrics)
    print(f"report: {out / 'report.html'}")
    return 0


def _print_summary(metrics: dict) -> None:
    def line(name, entry):
        return f"  {name:<24} clean {entry['clean_accuracy']:.4f}  attack success {entry['attack_success']:.4f}"

    print(line("unpoisoned", metrics["unpoisoned"]))
    print(line("poisoned, no defense", metrics["poisoned"]))
    for name, entry in metrics["defenses"].items():
        caught = f"  (removed {entry['true_positives']} poisons, {entry['false_positives']} clean)"
        if "after" in entry:
            print(line(f"after {name}", entry["after"]) + caught)
        else:
            print(f"  {name:<24} not retrained{caught}")


def demo_section(ctx) -> None:
    """The pipeline on MNIST at a small budget: the MNIST CNN on 6,000 images, 1% poisons with a 3x3
    patch, all three defenses, each followed by retraining (LeNet is too small to pick up a 1%
    backdoor in 2 epochs). Quick mode: LeNet, 2,000 images, 1 epoch, retraining after SPECTRE only."""
    quick = ctx.quick
    settings = BackdoorSettings(dataset="mnist", trigger="patch", trigger_options={"size": 3}, target="0",
                                n_poison=20 if quick else 60, defenses=DEFENSES,
                                retrain=("spectre",) if quick else None,
                                train_overrides={"model": "lenet", "epochs": 1, "lr": 3e-3} if quick
                                else {"model": "mnist_cnn", "epochs": 2},
                                train_subset=2000 if quick else 6000, max_k=9 if quick else MAX_K)
    test = ctx.test_data
    if quick:  # a fixed random fifth of the test set: evaluation dominates the quick budget
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:2000].sort().values)
    metrics = run_pipeline(settings, ctx.train_data, test, ctx.device, ctx.run, ctx.progress, prefix="backdoor_")
    ctx.run.metrics["backdoor"] = metrics
