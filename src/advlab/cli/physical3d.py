"""advlab physical3d / advlab tshirt: the rest of the physical world. A 3D object whose texture is
optimized by EOT through a differentiable renderer (Athalye et al. 2018), and a universal patch that
survives cloth folds modelled by thin plate splines (Xu et al. 2020, the adversarial T-shirt).

They are commands of their own rather than modes of ``advlab physical``: their inputs (a texture, a
pose and lighting distribution, a wearer class, deformation strengths) and their measurements
(shares of random viewpoints; success with and without deformation) share nothing with the
destruction-rate table that ``advlab physical`` writes. The library calls behind them:
`advlab.attacks.physical.eot3d.compare_textures`, `advlab.attacks.physical.tshirt.compare_tshirts`,
and `advlab.report.physical.object_section` / `tshirt_section`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from advlab.attacks.physical import PrintPhotoSimulation
from advlab.attacks.physical.eot3d import compare_textures
from advlab.attacks.physical.render import SHAPES, ViewDistribution
from advlab.attacks.physical.tshirt import MAX_STRENGTH, ClothDeformation, compare_tshirts, strength_grid
from advlab.cli.common import (
    add_data_args,
    add_run_args,
    check_model_fits,
    dataset_split,
    device_from,
    finite_float,
    nonnegative_int,
    number_list,
    number_tuple,
    positive_int,
    resolve_model,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.evaluation.physical import class_texture, load_texture, make_renderers, pick
from advlab.report.physical import (
    ATHALYE_TURTLE,
    XU_DIGITAL,
    XU_PHYSICAL,
    object_lines,
    object_section,
    tshirt_lines,
    tshirt_section,
)
from advlab.report.run import RunDir
from advlab.training import default_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("physical3d", help="a 3D object whose texture fools the classifier from most viewpoints "
                       "(EOT through a renderer)",
                       description="Render a textured object (an ellipsoid shell or a sphere) from random poses, "
                       "lightings and background images with camera noise; optimize its texture toward a target "
                       "class by Expectation over Transformation within an Linf bound, and measure the share of "
                       "held-out random viewpoints classified as the target and as the true class for the original "
                       "texture, a texture optimized on one fixed view, and the EOT texture.")
    p.add_argument("--model", default=None, help="a checkpoint or an architecture name (default: cifar_cnn on "
                   "cifar10, trained once and cached)")
    p.add_argument("--object-class", default="frog", help="the object's true class; its texture is a training image "
                   "of that class wrapped around it (default: %(default)s)")
    p.add_argument("--texture-index", type=nonnegative_int, default=0,
                   help="which training image of that class (default: 0)")
    p.add_argument("--texture", default=None, help="a texture file instead: PNG/JPEG, or .npy floats in [0, 1] "
                   "shaped (H, W, C) or (C, H, W)")
    p.add_argument("--target", default="airplane", help="target class, by name or index (default: %(default)s)")
    p.add_argument("--eps", type=number_list, default=[16 / 255], help="Linf bound on the texture's change, e.g. "
                   "16/255 (default: 16/255)")
    p.add_argument("--steps", type=positive_int, default=200, help="optimization steps (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=16, help="views per EOT step (default: %(default)s)")
    p.add_argument("--lr", type=finite_float, default=None, help="Adam step on the texture (default: eps / 8)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="shell", help="the object (default: %(default)s)")
    p.add_argument("--rotation", type=number_tuple(3), default=(180.0, 180.0, 180.0),
                   help="max |angle| about x,y,z in degrees (default: 180,180,180: any orientation)")
    p.add_argument("--distance", type=number_tuple(2), default=ViewDistribution.distance,
                   help="near,far distance in object radii (default: 2.2,3.0)")
    p.add_argument("--translation", type=finite_float, default=ViewDistribution.translation,
                   help="max shift across the view, share of the distance (default: %(default)s)")
    p.add_argument("--noise", type=finite_float, default=ViewDistribution.noise, help="max camera noise std")
    p.add_argument("--supersample", type=positive_int, default=2, help="render at this multiple of the input "
                   "side, then average down (default: %(default)s)")
    p.add_argument("--backgrounds", type=positive_int, default=200, help="background images for the optimization "
                   "(train split); as many others from the test split for the measurement (default: %(default)s)")
    p.add_argument("--views", type=positive_int, default=500, help="held-out random views measured per texture")
    p.add_argument("--per-angle", type=positive_int, default=20, help="views per angle of the rotation curve")
    p.add_argument("--seed", type=seed_int, default=0, help="seed (default: %(default)s)")
    add_data_args(p, "cifar10")
    add_run_args(p, run_physical3d)

    q = sub.add_parser("tshirt", help="an adversarial T-shirt: a universal patch trained over thin plate spline "
                       "cloth deformations", description="Train a universal patch worn by the images of one class "
                       "(printer colour, TPS cloth folds, rigid placement on the chest and camera transformations), "
                       "so that the classifier no longer sees that class (or sees --target); compare it with the same "
                       "patch trained with rigid transformations only, on held-out images, with and without "
                       "deformation, and against the deformation strength.")
    q.add_argument("--model", default=None, help="a checkpoint or an architecture name (default: the data set's)")
    q.add_argument("--wearer", default="automobile", help="the class wearing the patch, by name or index (default: "
                   "%(default)s)")
    q.add_argument("--target", default=None, help="make the wearer read as this class (default: evasion, any "
                   "other class)")
    q.add_argument("--size", type=finite_float, default=0.15,
                   help="patch area as a share of the image (default: %(default)s)")
    q.add_argument("--train-strength", type=finite_float, default=0.08, help="TPS strength while training: max "
                   f"control-point shift as a share of the patch side, 0..{MAX_STRENGTH} (default: %(default)s)")
    q.add_argument("--test-strength", type=finite_float, default=0.08,
                   help="TPS strength of the deformed test conditions "
                   "(default: %(default)s)")
    q.add_argument("--strengths", type=str, default=None, help="comma-separated strengths of the curve (default: "
                   f"6 points from 0 to {MAX_STRENGTH})")
    q.add_argument("--grid", type=positive_int, default=4, help="TPS control points per side (default: %(default)s)")
    q.add_argument("--steps", type=positive_int, default=300, help="Adam steps per patch (default: %(default)s)")
    q.add_argument("--lr", type=finite_float, default=0.05, help="Adam learning rate (default: %(default)s)")
    q.add_argument("--n-train", type=positive_int, default=5000, help="training images scanned for the wearer class")
    q.add_argument("--n-test", type=positive_int, default=2000, help="test images scanned for the wearer class")
    q.add_argument("--draws", type=positive_int, default=5, help="fresh deformations and placements per test image")
    q.add_argument("--no-photo", dest="photo", action="store_false", help="skip the print-and-photo simulation")
    q.add_argument("--seed", type=seed_int, default=0, help="seed (default: %(default)s)")
    add_data_args(q, "cifar10")
    add_run_args(q, run_tshirt)


def run_physical3d(args: argparse.Namespace) -> int:
    device = device_from(args)
    if len(args.eps) != 1 or args.eps[0] > 1:
        raise AdvlabError(f"give one texture eps in (0, 1] (e.g. 16/255), got {args.eps}")
    eps = args.eps[0]
    if args.lr is not None and not 0 < args.lr <= 10:
        raise AdvlabError(f"--lr must be in (0, 10], got {args.lr}")
    view_config = {"rotation": args.rotation, "distance": args.distance, "translation": args.translation,
                   "noise": args.noise, "supersample": args.supersample, "shape": args.shape}
    ViewDistribution(rotation=tuple(args.rotation), distance=tuple(args.distance), translation=args.translation,
                     noise=args.noise)  # refuse impossible ranges before loading anything
    train, test = dataset_split(args, "train"), dataset_split(args, "test")
    target = test.class_index(args.target)
    true_class = test.class_index(args.object_class)
    if target == true_class:
        raise AdvlabError("--target must differ from --object-class")
    channels, size = test.shape[0], test.shape[-1]
    texture = (load_texture(args.texture, channels) if args.texture
               else class_texture(train, true_class, args.texture_index, args.object_class))
    spec = args.model or default_config(args.dataset).model
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, test, spec)
    train_bg = pick(train, args.backgrounds, True, args.seed)[:][0]
    test_bg = pick(test, args.backgrounds, True, args.seed)[:][0]
    train_renderer, test_renderer = make_renderers(view_config, train_bg.to(device), test_bg.to(device), size)
    config = {"model": spec, "dataset": args.dataset, "object_class": true_class, "target": target, "eps": eps,
              "texture": args.texture or f"train image {args.texture_index} of class {true_class}",
              "steps": args.steps, "samples": args.samples, "lr": args.lr, "views": args.views,
              "per_angle": args.per_angle, "backgrounds": args.backgrounds, "seed": args.seed,
              "view_distribution": train_renderer.views.to_dict(), **view_config}
    with RunDir(args.out, "physical3d", config, overwrite=args.overwrite) as run_dir:
        result = compare_textures(model, train_renderer, test_renderer, texture.to(device), target, true_class, eps,
                                  args.steps, args.samples, args.lr, args.views, per_angle=args.per_angle,
                                  seed=args.seed, progress=args.progress)
        object_section(run_dir, model, result, test_renderer, target, true_class, test.classes,
                       f"{Path(spec).stem} on {args.dataset}", eps, args.steps, args.samples, args.views,
                       args.per_angle)
        run_dir.metrics["physical3d"] = {"rows": result["rows"], "curves": result["curves"], "cost": result["cost"],
                                         "reference": {"athalye_turtle_target_rate": ATHALYE_TURTLE}}
        out = run_dir.commit()
    print("\n".join(object_lines(result["rows"], test.classes[target], test.classes[true_class])))
    print(f"report: {out / 'report.html'}")
    return 0


def parse_strengths(text: str | None) -> list[float]:
    if text is None:
        return strength_grid()
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AdvlabError(f"--strengths must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 <= v <= MAX_STRENGTH for v in values):
        raise AdvlabError(f"deformation strengths must lie in [0, {MAX_STRENGTH}], got {text!r}")
    return values


def run_tshirt(args: argparse.Namespace) -> int:
    device = device_from(args)
    for value in (args.train_strength, args.test_strength):  # refuse out-of-range strengths before any work
        ClothDeformation(value, args.grid)
    strengths = parse_strengths(args.strengths)
    if not 0 < args.size <= 0.5:
        raise AdvlabError(f"--size must be a share of the image area in (0, 0.5], got {args.size:g}")
    if not 0 < args.lr <= 10:
        raise AdvlabError(f"--lr must be in (0, 10], got {args.lr}")
    test = pick(dataset_split(args, "test"), args.n_test, True, args.seed)
    train = pick(dataset_split(args, "train"), args.n_train, True, args.seed)
    source = test.class_index(args.wearer)
    target = None if args.target is None else test.class_index(args.target)
    if target == source:
        raise AdvlabError("--target must differ from --wearer")
    spec = args.model or default_config(args.dataset).model
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, test, spec)
    train_x, train_y = (t.to(device) for t in train[:])
    test_x, test_y = (t.to(device) for t in test[:])
    summary = {"size": args.size, "train_strength": args.train_strength, "test_strength": args.test_strength,
               "grid": args.grid, "steps": args.steps}
    config = {"model": spec, "dataset": args.dataset, "wearer": source, "target": target, "lr": args.lr,
              "strengths": strengths, "n_train": len(train_x), "n_test": len(test_x), "draws": args.draws,
              "photo": args.photo, "seed": args.seed, **summary}
    with RunDir(args.out, "tshirt", config, overwrite=args.overwrite) as run_dir:
        result = compare_tshirts(model, train_x, train_y, test_x, test_y, source, target, args.size, args.steps,
                                 args.lr, args.train_strength, args.test_strength, strengths, args.grid, args.draws,
                                 args.seed, PrintPhotoSimulation() if args.photo else None, args.progress)
        tshirt_section(run_dir, model, result, test_x, test_y, test.classes, f"{Path(spec).stem} on {args.dataset}",
                       summary)
        run_dir.metrics["tshirt"] = {"rows": result["rows"], "curves": result["curves"], "cost": result["cost"],
                                     "reference": {"xu_digital": XU_DIGITAL, "xu_physical": XU_PHYSICAL}}
        out = run_dir.commit()
    print("\n".join(tshirt_lines(result["rows"])))
    print(f"report: {out / 'report.html'}")
    return 0
