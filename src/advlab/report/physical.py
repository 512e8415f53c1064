"""Report sections of the physical-world runs (`advlab.evaluation.physical`, the 3D object and the
T-shirt of `advlab.attacks.physical`), with the published figures they are set beside."""

from __future__ import annotations

import torch

from advlab.attacks.physical import PrintPhotoSimulation, place_patch
from advlab.attacks.physical.patch import sample_placements
from advlab.attacks.physical.render import Renderer
from advlab.attacks.physical.tshirt import ClothDeformation
from advlab.report.physical_figures import (
    destruction_rate_figure,
    patch_figure,
    patch_size_figure,
    rotation_curve_figure,
    strength_curve_figure,
    texture_figure,
    view_grid_figure,
)
from advlab.report.run import RunDir

# Kurakin, Goodfellow and Bengio 2016, table (photos of printouts, Inception v3, top-1, average case).
KURAKIN_PHOTO = {"Kurakin fast eps 8/255": 0.333, "Kurakin iterative eps 8/255": 0.521}
# Athalye et al. 2018: the 3D-printed turtle, classified as the target ("rifle") in 82% of 100 photos.
ATHALYE_TURTLE = 0.82
# Xu et al. 2020: attack success of the TPS-trained T-shirt against a person detector.
XU_DIGITAL, XU_PHYSICAL = 0.74, 0.57


def destruction_section(run_dir: RunDir, rows: list[dict], label: str, steps: int, samples: int, n: int) -> None:
    columns = ["attack", "eps", "digital success", "qualifying", "destroyed", "destruction rate",
               "accuracy after photo"]
    table = [[r["attack"], round(r["eps"], 4), 1 - r["adv_accuracy"], r["qualifying"], r["destroyed"],
              r["destruction_rate"], r["photo_adv_accuracy"]] for r in rows]
    fig = destruction_rate_figure(rows, run_dir.figure_path("destruction_rates.png"),
                                  f"{label}: destroyed by the print-and-photo simulation", KURAKIN_PHOTO)
    clean = rows[0]
    run_dir.add_section(
        "Physical world: destruction rates",
        f"{label}: FGSM, PGD ({steps} steps) and EOT-PGD ({steps} steps x {samples} sampled print-and-photo "
        f"transformations) on {n} test images; each result passes through a "
        "print-and-photo simulation none of them optimized (real JPEG, bicubic rotation, crop and resample, gamma, "
        "colour gain, sensor noise). Destruction rate (Kurakin et al. 2016): among images classified correctly "
        "when clean and misclassified when attacked, the share the simulation turns back to correct. Clean "
        f"accuracy {clean['clean_accuracy']:.3f}, after the simulation {clean['photo_clean_accuracy']:.3f}. Grey "
        "lines: Kurakin et al.'s rates for photographed printouts (Inception v3, eps 8/255).",
        table={"columns": columns, "rows": table},
        figures=[(fig.name, "destruction rate per attack and eps")], key="physical")


def patch_section(run_dir: RunDir, model, rows, patches, test_x, test_y, target: int, target_name: str,
                  label: str, steps: int) -> None:
    largest = max(patches)
    keep = test_y != target
    x = test_x[keep][:8]
    placement = sample_placements(len(x), x.shape[2], x.shape[3], patches[largest].shape[-1],
                                  generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        patched, _ = place_patch(x, patches[largest], placement)
        photo = PrintPhotoSimulation()(patched, seed=99)
        preds = model(photo).argmax(1).tolist()
    fig = patch_figure(patches, photo, [f"pred {p}" for p in preds], run_dir.figure_path("patch.png"),
                       f"patches toward '{target_name}'; below: the {largest:.0%} patch, photographed")
    curve = patch_size_figure(rows, run_dir.figure_path("patch_size.png"), f"'{target_name}'")
    table = [[r["size"], r["side"], r["success_rate"], r["photo_success_rate"], r["random_patch_rate"]]
             for r in rows]
    run_dir.add_section(
        "Physical world: universal patch",
        f"{label}: one patch per size, trained for {steps} Adam steps on training images at random positions, "
        "scales (0.8-1.2) and rotations (+-20 degrees) under sampled print-and-photo transformations, toward "
        f"class '{target_name}'. Success: share of held-out test images (not of the target class) x fresh "
        "placements predicted as the target, digitally and after the separate print-and-photo simulation; a "
        "random patch of the same size is the baseline.",
        table={"columns": ["size (area share)", "side (px)", "success", "success after photo", "random patch"],
               "rows": table},
        figures=[(fig.name, "the patches and photographed examples"), (curve.name, "success against patch size")],
        key="patch")


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


def destruction_lines(rows: list[dict]) -> list[str]:
    """The destruction table as printed lines."""
    return [f"{r['attack']:5s} eps {r['eps']:.4g}: digital success {1 - r['adv_accuracy']:.3f}, destruction rate "
            f"{r['destruction_rate']:.3f} ({r['destroyed']}/{r['qualifying']}), misclassified after photo "
            f"{r['survives_photo']:.3f}" for r in rows]


def patch_lines(rows: list[dict]) -> list[str]:
    """The patch sweep as printed lines."""
    return [f"patch {r['size']:.0%} ({r['side']} px): success {r['success_rate']:.3f}, after photo "
            f"{r['photo_success_rate']:.3f}, random patch {r['random_patch_rate']:.3f}" for r in rows]


def object_lines(rows: list[dict], target_name: str, true_name: str) -> list[str]:
    """compare_textures' rows as printed lines, with Athalye et al.'s figure."""
    return [f"{r['texture']:12s}: {r['target_rate']:.3f} of {r['views']} held-out views as '{target_name}', "
            f"{r['true_rate']:.3f} as '{true_name}'" for r in rows] + \
        [f"(Athalye et al.'s 3D-printed turtle: {ATHALYE_TURTLE:.0%} as the target)"]


def tshirt_lines(rows: list[dict]) -> list[str]:
    """compare_tshirts' rows as printed lines, with Xu et al.'s figures."""
    lines = []
    for r in rows:
        photo = f", deformed + photo {r['deformed_photo']:.3f}" if "deformed_photo" in r else ""
        lines.append(f"{r['patch']:18s}: success undeformed {r['undeformed']:.3f}, deformed {r['deformed']:.3f}"
                     f"{photo} (random patch {r['random_deformed']:.3f})")
    return lines + [f"(Xu et al. 2020, TPS-trained T-shirt vs a person detector: {XU_DIGITAL:.0%} digital, "
                    f"{XU_PHYSICAL:.0%} physical)"]
