"""advlab physical3d / advlab tshirt: the rest of the physical world. A 3D object whose texture is
optimized by EOT through a differentiable renderer (Athalye et al. 2018), and a universal patch that
survives cloth folds modelled by thin plate splines (Xu et al. 2020, the adversarial T-shirt).

They are commands of their own rather than modes of ``advlab physical``: their inputs (a texture, a
pose and lighting distribution, a wearer class, deformation strengths) and their measurements
(shares of random viewpoints; success with and without deformation) share nothing with the
destruction-rate table that ``advlab physical`` writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from advlab.attacks.physical import PrintPhotoSimulation
from advlab.attacks.physical.eot3d import compare_textures, texture_from_image
from advlab.attacks.physical.render import SHAPES, Renderer, ViewDistribution, check_texture
from advlab.attacks.physical.tshirt import MAX_STRENGTH, ClothDeformation, compare_tshirts, strength_grid
from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    add_out_arg,
    add_progress_arg,
    check_model_fits,
    dataset_split,
    device_from,
    finite_float,
    nonnegative_int,
    positive_int,
    resolve_model,
    seed_int,
)
from advlab.cli.physical import default_model, number_list, pick
from advlab.errors import AdvlabError
from advlab.report.physical_figures import (
    rotation_curve_figure,
    strength_curve_figure,
    texture_figure,
    view_grid_figure,
)
from advlab.report.run import RunDir

DEMO_ORDER = 81
# Athalye et al. 2018: the 3D-printed turtle, classified as the target ("rifle") in 82% of 100 photos.
ATHALYE_TURTLE = 0.82
# Xu et al. 2020: attack success of the TPS-trained T-shirt against a person detector.
XU_DIGITAL, XU_PHYSICAL = 0.74, 0.57


def number_tuple(count: int):
    """An argparse type: exactly `count` comma-separated numbers."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}") from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("physical3d", help="a 3D object whose texture fools the classifier from most viewpoints "
                       "(EOT through a renderer)",
                       description="Render a textured object (an ellipsoid shell or a sphere) from random poses, "
                       "lightings and background images with camera noise; optimize its texture toward a target "
                       "class by Expectation over Transformation within an Linf bound, and measure the share of "
                       "held-out random viewpoints classified as the target and as the true class for the original "
                       "texture, a texture optimized on one fixed view, and the EOT texture.")
    add_model_spec_args(p)
    p.add_argument("--model", default=None, help="a model spec (see advlab attack --help) (default: cifar_cnn on "
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
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run_physical3d)

    q = sub.add_parser("tshirt", help="an adversarial T-shirt: a universal patch trained over thin plate spline "
                       "cloth deformations", description="Train a universal patch worn by the images of one class "
                       "(printer colour, TPS cloth folds, rigid placement on the chest and camera transformations), "
                       "so that the classifier no longer sees that class (or sees --target); compare it with the same "
                       "patch trained with rigid transformations only, on held-out images, with and without "
                       "deformation, and against the deformation strength.")
    q.add_argument("--model", default=None, help=MODEL_SPEC_HELP + " (default: the data set's)")
    add_model_spec_args(q)
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
    add_device_arg(q)
    add_out_arg(q)
    add_progress_arg(q)
    q.set_defaults(func=run_tshirt)


def load_texture(path: str, channels: int) -> torch.Tensor:
    """A texture file as (C, H, W) floats; refuses what is not an image in [0, 1]."""
    file = Path(path)
    if not file.is_file():
        raise AdvlabError(f"texture file {path} does not exist")
    if file.suffix.lower() == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise AdvlabError(f"cannot read {path} as a NumPy array ({exc})") from None
        if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
            raise AdvlabError(f"{path} must hold floats shaped (H, W, C) or (C, H, W), got {array.dtype} "
                              f"{array.shape}")
        texture = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if texture.shape[0] not in (1, 3) and texture.shape[-1] in (1, 3):
            texture = texture.permute(2, 0, 1)
    else:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                texture = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
        except OSError as exc:
            raise AdvlabError(f"cannot read {path} as an image ({exc})") from None
        texture = texture[None] if texture.dim() == 2 else texture.permute(2, 0, 1)
    check_texture(texture, channels)
    if min(texture.shape[1:]) < 4:
        raise AdvlabError(f"texture {path} is too small ({tuple(texture.shape)}); give at least 4 x 4 pixels")
    return texture.contiguous()


def class_images(data, cls: int, n: int) -> torch.Tensor:
    idx = (data.labels == cls).nonzero().flatten()[:n]
    return data.subset(idx)[:][0]


def object_section(run_dir: RunDir, model, result: dict, renderer: Renderer, target: int, true_class: int,
                   classes: list[str], label: str, eps: float, steps: int, samples: int, views: int,
                   per_angle: int) -> None:
    """Table, view grid, rotation curve and textures of a compare_textures result."""
    textures, rows = result["textures"], result["rows"]
    sampled = renderer.sample(8, torch.Generator().manual_seed(4242))
    shown, titles, marks = {}, {}, {}
    with torch.no_grad():
        for name, tex in textures.items():
            images = renderer(tex, sampled)
            preds = model(images).argmax(1).tolist()
            shown[name] = renderer(tex, sampled, full_resolution=True)
            titles[name] = [classes[p] for p in preds]
            marks[name] = [p == target for p in preds]
    grid = view_grid_figure(shown, titles, run_dir.figure_path("object_views.png"),
                            f"{label}: held-out views of each texture (prediction above; red: the target "
                            f"'{classes[target]}')", marks)
    curve = rotation_curve_figure(result["curves"], run_dir.figure_path("object_rotation.png"), classes[target],
                                  classes[true_class], ATHALYE_TURTLE)
    tex_fig = texture_figure(textures, run_dir.figure_path("object_textures.png"), f"textures (Linf change <= "
                             f"{eps * 255:.0f}/255)")
    table = [[r["texture"], r["target_rate"], r["true_rate"], classes[r["fixed_view_prediction"]],
              round(r["linf_change"] * 255, 1)] for r in rows]
    table.append(["Athalye et al. 2018 (3D-printed turtle, 100 photos)", ATHALYE_TURTLE, "-", "-", "-"])
    run_dir.add_section(
        "Physical world: 3D adversarial object",
        f"{label}: an object of true class '{classes[true_class]}' rendered from random poses (rotation about every "
        "axis, distance, translation), ambient + directional Lambertian lighting, background images and camera "
        f"noise; textures optimized toward '{classes[target]}' with Linf change <= {eps * 255:.0f}/255 for "
        f"{steps} Adam steps: on one fixed view, or by EOT over {samples} fresh views per step. Measured on "
        f"{views} held-out random views (other backgrounds, other draws); the curve turns the object about its "
        f"vertical axis, {per_angle} random distances, lights and backgrounds per angle.",
        table={"columns": ["texture", f"views as '{classes[target]}'", f"views as '{classes[true_class]}'",
                           "fixed view's prediction", "Linf change (/255)"], "rows": table},
        figures=[(grid.name, "held-out views with predictions"), (curve.name, "share against rotation angle"),
                 (tex_fig.name, "the textures")], key="physical3d")


def make_renderers(args_or_cfg: dict, train_bg: torch.Tensor, test_bg: torch.Tensor, size: int
                   ) -> tuple[Renderer, Renderer]:
    views = ViewDistribution(rotation=tuple(args_or_cfg["rotation"]), distance=tuple(args_or_cfg["distance"]),
                             translation=args_or_cfg["translation"], noise=args_or_cfg["noise"])
    return tuple(Renderer(bg, size=size, supersample=args_or_cfg["supersample"], shape=args_or_cfg["shape"],
                          views=views) for bg in (train_bg, test_bg))


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
    if args.texture:
        texture = load_texture(args.texture, channels)
    else:
        candidates = (train.labels == true_class).nonzero().flatten()
        if not 0 <= args.texture_index < len(candidates):
            raise AdvlabError(f"--texture-index must be in 0..{len(candidates) - 1} for class {args.object_class}")
        texture = texture_from_image(train.subset(candidates[args.texture_index:args.texture_index + 1])[:][0][0])
    spec = args.model or default_model(args.dataset)
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
    for r in result["rows"]:
        print(f"{r['texture']:12s}: {r['target_rate']:.3f} of {r['views']} held-out views as "
              f"'{test.classes[target]}', {r['true_rate']:.3f} as '{test.classes[true_class]}'")
    print(f"(Athalye et al.'s 3D-printed turtle: {ATHALYE_TURTLE:.0%} as the target)")
    print(f"report: {out / 'report.html'}")
    return 0


def tshirt_section(run_dir: RunDir, model, result: dict, test_x: torch.Tensor, test_y: torch.Tensor,
                   classes: list[str], label: str, args_summary: dict) -> None:
    rows, wearers, patches = result["rows"], result["wearers"], result["patches"]
    wearer = wearers["TPS"]
    goal = f"not '{classes[wearer.source]}'" if wearer.target is None else f"'{classes[wearer.target]}'"
    x = test_x[test_y == wearer.source][:8]
    deformation = ClothDeformation(args_summary["test_strength"], args_summary["grid"])
    shown, titles, marks = {}, {}, {}
    with torch.no_grad():
        for name, patch in patches.items():
            generator = torch.Generator().manual_seed(77)
            images = wearer.wear(patch, x, deformation, generator)
            preds = model(images).argmax(1).tolist()
            shown[f"{name}-trained"] = images
            titles[f"{name}-trained"] = [classes[p] for p in preds]
            marks[f"{name}-trained"] = [(p != wearer.source) if wearer.target is None else p == wearer.target
                                        for p in preds]
        folds = deformation(patches["TPS"], 4, torch.Generator().manual_seed(5))
    patch_fig = texture_figure({"TPS-trained patch": patches["TPS"], "rigid-trained patch": patches["rigid"],
                                **{f"printed + folded {i + 1}": f for i, f in enumerate(folds)}},
                               run_dir.figure_path("tshirt_patch.png"), "the patches; a few printed, folded copies")
    grid = view_grid_figure(shown, titles, run_dir.figure_path("tshirt_placements.png"),
                            f"held-out '{classes[wearer.source]}' images wearing the deformed patch (strength "
                            f"{deformation.strength:g}; red: {goal})", marks)
    curve = strength_curve_figure(result["curves"], run_dir.figure_path("tshirt_strength.png"),
                                  args_summary["train_strength"], f"attack success ({goal})")
    columns = ["patch", "undeformed", f"TPS-deformed ({deformation.strength:g})"]
    has_photo = "deformed_photo" in rows[0]
    if has_photo:
        columns.append("deformed + photo simulation")
    table = [[r["patch"], r["undeformed"], r["deformed"]] + ([r["deformed_photo"]] if has_photo else [])
             for r in rows]
    table.append(["random patch (baseline)", rows[0]["random_undeformed"], rows[0]["random_deformed"]]
                 + ([rows[0]["random_deformed_photo"]] if has_photo else []))
    table.append(["Xu et al. 2020, TPS (person detector: digital / physical)", "-", XU_DIGITAL]
                 + ([XU_PHYSICAL] if has_photo else []))
    run_dir.add_section(
        "Physical world: adversarial T-shirt",
        f"{label}: a universal patch ({args_summary['size']:.0%} of the image) worn by '{classes[wearer.source]}' "
        f"images, goal {goal}; trained {args_summary['steps']} Adam steps over the printer colour map, TPS cloth "
        f"folds (strength {args_summary['train_strength']:g}, a {args_summary['grid']}x{args_summary['grid']} "
        "grid), a rigid placement on the chest and the sampled camera transformations, against the same patch "
        "trained without TPS. Attack success on held-out test images of the class that the model classifies "
        f"correctly ({rows[0]['images']} images x {rows[0]['draws']} fresh draws).",
        table={"columns": columns, "rows": table},
        figures=[(patch_fig.name, "the patches and folded copies"), (grid.name, "deformed placements"),
                 (curve.name, "success against deformation strength")], key="tshirt")


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
    spec = args.model or default_model(args.dataset)
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
    for r in result["rows"]:
        photo = f", deformed + photo {r['deformed_photo']:.3f}" if "deformed_photo" in r else ""
        print(f"{r['patch']:18s}: success undeformed {r['undeformed']:.3f}, deformed {r['deformed']:.3f}{photo} "
              f"(random patch {r['random_deformed']:.3f})")
    print(f"(Xu et al. 2020, TPS-trained T-shirt vs a person detector: {XU_DIGITAL:.0%} digital, "
          f"{XU_PHYSICAL:.0%} physical)")
    print(f"report: {out / 'report.html'}")
    return 0


def demo_section(ctx) -> None:
    """A 3D object and a T-shirt on the demo's MNIST model, in seconds: a tiny texture, few steps."""
    quick = ctx.quick
    classes = ctx.test_data.classes
    train_bg = ctx.train_data.head(16 if quick else 64)[:][0].to(ctx.device)
    test_bg = ctx.test_data.subset(slice(1000, 1016 if quick else 1064))[:][0].to(ctx.device)
    config = {"rotation": (180.0, 180.0, 180.0), "distance": (2.2, 3.0), "translation": 0.08, "noise": 0.02,
              "supersample": 2, "shape": "shell"}
    size = ctx.test_data.shape[-1]
    train_renderer, test_renderer = make_renderers(config, train_bg, test_bg, size)
    true_class, target = 0, 3
    source = ctx.train_data.subset((ctx.train_data.labels == true_class).nonzero().flatten()[:1])[:][0][0]
    texture = texture_from_image(source, 16, 32).to(ctx.device)
    steps, samples, views, per_angle, turn = (4, 4, 24, 2, 90) if quick else (40, 8, 200, 8, 45)
    eps = 0.3
    result = compare_textures(ctx.model, train_renderer, test_renderer, texture, target, true_class, eps, steps,
                              samples, None, views, angles=list(range(0, 361, turn)), per_angle=per_angle,
                              progress=ctx.progress)
    object_section(ctx.run, ctx.model, result, test_renderer, target, true_class, classes, "demo model on MNIST",
                   eps, steps, samples, views, per_angle)
    tx, ty = (t.to(ctx.device) for t in ctx.train_data.head(600 if quick else 3000)[:])
    hx, hy = (t.to(ctx.device) for t in ctx.test_data.subset(slice(2000, 2200 if quick else 3000))[:])
    patch_steps = 4 if quick else 60
    tshirt = compare_tshirts(ctx.model, tx, ty, hx, hy, source=1, size=0.2, steps=patch_steps, lr=0.1,
                             strengths=[0.0, 0.15] if quick else [0.0, 0.05, 0.1, 0.15], draws=1 if quick else 2,
                             progress=ctx.progress)
    tshirt_section(ctx.run, ctx.model, tshirt, hx, hy, classes, "demo model on MNIST",
                   {"size": 0.2, "train_strength": 0.08, "test_strength": 0.08, "grid": 4, "steps": patch_steps})
    ctx.run.metrics["physical3d"] = {"rows": result["rows"], "curves": result["curves"]}
    ctx.run.metrics["tshirt"] = {"rows": tshirt["rows"], "curves": tshirt["curves"]}
