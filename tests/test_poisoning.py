"""Triggers change only the pixels they should; poisoned sets, metrics, the image-folder export,
and the backdoor pipeline end to end on a tiny MNIST budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from advlab.cli.main import main
from advlab.data import ImageDataset, read_image_folder
from advlab.errors import AdvlabError
from advlab.poisoning import (
    BlendTrigger,
    PatchTrigger,
    PeriodicTrigger,
    PixelTrigger,
    attack_success_rate,
    make_trigger,
    poison_dataset,
    save_poisoned_folder,
    triggered_test_set,
)
from advlab.poisoning.triggers import SPECTRE_PIXELS


def images(n=8, c=3, size=32, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1


def small_dataset(n=200, c=1, size=28, classes=10, seed=0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 200, (n, c, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return ImageDataset(x, y, [str(i) for i in range(classes)], "tiny")


def test_patch_changes_only_its_square():
    x = images()
    trigger = PatchTrigger(size=3, location="bottom-right", pattern="checkerboard", margin=1)
    out = trigger(x)
    changed = (out != x).any(0).any(0)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[28:31, 28:31] = True
    assert not changed[~inside].any()
    expected = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(out[:, :, 28:31, 28:31], expected.expand(8, 3, 3, 3))
    corner = PatchTrigger(size=2, location=(0, 5), pattern="white")(x)
    assert torch.equal(corner[:, :, 0:2, 5:7], torch.ones(8, 3, 2, 2))
    assert torch.equal(corner[:, :, 2:], x[:, :, 2:])
    with pytest.raises(AdvlabError, match="leaves"):
        PatchTrigger(size=3, location=(30, 30))(x)


def test_blend_is_the_convex_combination_with_a_fixed_pattern():
    x = images()
    trigger = BlendTrigger(alpha=0.2, seed=3)
    pattern = trigger.pattern(3, 32, 32)
    torch.testing.assert_close(trigger(x), 0.8 * x + 0.2 * pattern)
    torch.testing.assert_close(trigger(x[:1]), trigger(x)[:1])  # the same pattern every call
    image = torch.zeros(3, 32, 32)
    torch.testing.assert_close(BlendTrigger(alpha=0.5, image=image)(x), 0.5 * x)


def test_periodic_adds_the_same_sine_to_every_row():
    x = torch.full((2, 1, 28, 28), 0.5)
    out = PeriodicTrigger(amplitude=20 / 255, cycles=6)(x)
    expected = 0.5 + 20 / 255 * torch.sin(2 * torch.pi * 6 * torch.arange(28) / 28)
    torch.testing.assert_close(out[0, 0], expected.expand(28, 28))
    clipped = PeriodicTrigger(amplitude=0.5)(torch.ones(1, 1, 8, 8))
    assert clipped.max() <= 1.0 and clipped.min() >= 0.5


def test_pixel_trigger_sets_reference_pixels():
    x = images(n=50)
    trigger = make_trigger("pixel", pixels=3)
    test_out = trigger(x)
    changed = (test_out != x).any(1)
    for (px, py), rgb in SPECTRE_PIXELS:
        assert changed[:, py, px].all()
        torch.testing.assert_close(test_out[:, :, py, px], (torch.tensor(rgb) / 255).expand(50, 3))
    assert changed.sum() == 3 * 50
    # training poisons carry exactly one of the three pixels each, chosen at random
    train_out = trigger(x, training=True, generator=torch.Generator().manual_seed(0))
    per_image = (train_out != x).any(1).flatten(1).sum(1)
    assert (per_image == 1).all()
    chosen = torch.stack([(train_out != x).any(1)[:, py, px] for (px, py), _ in SPECTRE_PIXELS], 1)
    assert (chosen.sum(0) > 0).all()
    assert PixelTrigger()(images(2, c=1))[:, 0, 16, 11].allclose(torch.tensor(42 / 255))


def test_triggers_refuse_bad_input():
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        PatchTrigger()(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(AdvlabError, match="unknown trigger"):
        make_trigger("laser")
    with pytest.raises(AdvlabError, match="location"):
        PatchTrigger(location="middle")


def test_poison_dataset_relabels_and_marks_only_the_poisons():
    data = small_dataset()
    trigger = PatchTrigger(size=3)
    poisoned = poison_dataset(data, trigger, target="0", n_poison=20, seed=1)
    mask = poisoned.poisoned
    assert mask.sum() == 20 and len(poisoned.data) == len(data)
    assert (poisoned.data.labels[mask] == 0).all()
    assert (data.labels[mask] != 0).all()  # drawn from the other classes
    assert torch.equal(poisoned.data.images[~mask], data.images[~mask])
    assert torch.equal(poisoned.data.labels[~mask], data.labels[~mask])
    diff = (poisoned.data.images[mask] != data.images[mask]).any(0).any(0)
    assert not diff[:24].any() and not diff[:, :24].any()  # only the bottom-right patch
    by_fraction = poison_dataset(data, trigger, target=0, fraction=0.05, source="3")
    assert by_fraction.n_poison == 10 and (data.labels[by_fraction.poisoned] == 3).all()
    with pytest.raises(AdvlabError, match="n_poison"):
        poison_dataset(data, trigger, target=0, n_poison=500)
    with pytest.raises(AdvlabError, match="same class"):
        poison_dataset(data, trigger, target=0, n_poison=5, source=0)
    with pytest.raises(AdvlabError, match="unknown class"):
        poison_dataset(data, trigger, target="deer", n_poison=5)


class PatchDetector(nn.Module):
    """Predicts class 0 when the bottom-right checkerboard is present, else class 1."""

    def forward(self, x):
        patch = x[:, 0, 24:27, 24:27]
        hit = (patch - torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])).abs().amax((1, 2)) < 1e-6
        logits = torch.zeros(len(x), 10)
        logits[hit, 0] = 1.0
        logits[~hit, 1] = 1.0
        return logits


def test_attack_success_rate_counts_triggered_non_target_images():
    data = small_dataset()
    trigger = PatchTrigger(size=3)
    assert attack_success_rate(PatchDetector(), data, trigger, target=0) == 1.0
    assert attack_success_rate(PatchDetector(), data, PatchTrigger(size=3, location="top-left"), target=0) == 0.0
    triggered = triggered_test_set(data, trigger, target=0)
    assert len(triggered) == 180 and (triggered.labels != 0).all()
    assert len(triggered_test_set(data, trigger, target=0, source=2)) == 20


def test_poisoned_folder_has_images_and_a_separate_manifest(tmp_path):
    data = small_dataset(n=40)
    poisoned = poison_dataset(data, PatchTrigger(size=3), target="0", n_poison=4)
    out = save_poisoned_folder(poisoned, tmp_path / "poisoned")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["poisoned_files"]) == 4 and manifest["target"] == "0"
    assert all(f.startswith("images/0/") for f in manifest["poisoned_files"])
    assert not any(p.suffix == ".json" for p in (out / "images").rglob("*"))
    back = read_image_folder(out / "images", size=28, channels=1, classes=data.classes)
    assert len(back) == 40
    assert sorted(back.images.flatten(1).sum(1).tolist()) == sorted(poisoned.data.images.flatten(1).sum(1).tolist())
    with pytest.raises(AdvlabError, match="exists"):
        save_poisoned_folder(poisoned, out)


def test_backdoor_cli_end_to_end_on_mnist(tmp_path, capsys):
    out = tmp_path / "run"
    # softmax regression trains in a blink; its "penultimate" representation is the flattened image
    code = main(["backdoor", "--dataset", "mnist", "--model", "linear", "--epochs", "2", "--lr", "0.01",
                 "--train-subset", "1000", "--n-test", "1000", "--target", "0", "--n-poison", "40", "--patch-size", "4",
                 "--defense", "all", "--retrain", "spectre", "--max-k", "9", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["poisoning"]["n_poison"] == 40
    for name in ("spectre", "spectral", "clustering"):
        entry = metrics["defenses"][name]
        assert entry["true_positives"] + entry["false_positives"] == entry["removed"] <= 60
    assert "after" in metrics["defenses"]["spectre"] and "after" not in metrics["defenses"]["spectral"]
    for key in ("unpoisoned", "poisoned"):
        assert 0.0 <= metrics[key]["attack_success"] <= 1.0 and metrics[key]["clean_accuracy"] > 0.5
    assert (out / "figures" / "projection.png").is_file() and (out / "report.html").is_file()
    assert "attack success" in capsys.readouterr().out


def test_backdoor_cli_user_errors(tmp_path, capsys):
    code = main(["backdoor", "--dataset", "mnist", "--defense", "magic", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown defense" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    code = main(["backdoor", "--dataset", "mnist", "--target", "deer", "--model", "linear", "--epochs", "1",
                 "--train-subset", "200", "--n-poison", "5", "--out", str(tmp_path / "r2")])
    assert code == 2 and "unknown class" in capsys.readouterr().err
    assert not np.any([p.name.startswith("r2") for p in tmp_path.iterdir()])


BACKDOOR_FACTORY = '''
import torch
from torch import nn


def small(num_classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, num_classes))


def frozen(num_classes=10):
    model = small(num_classes)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
'''


def test_backdoor_fine_tunes_a_foreign_model_spec_and_reads_its_named_layer(tmp_path, capsys):
    factory = tmp_path / "nets.py"
    factory.write_text(BACKDOOR_FACTORY)
    out = tmp_path / "run"
    code = main(["backdoor", "--dataset", "mnist", "--model", f"{factory}:small", "--epochs", "2", "--lr", "0.01",
                 "--train-subset", "600", "--n-test", "300", "--target", "0", "--n-poison", "30", "--patch-size", "4",
                 "--layer", "2", "--retrain", "none", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_config"]["model"] == f"{factory}:small"
    assert "output of 2 (ReLU)" in metrics["layer_description"]
    assert metrics["features_shape"][1] == 32  # the hidden layer named by --layer, not the flattened image
    for key in ("poisoned", "unpoisoned"):
        assert metrics[key]["fine_tuned_from"] == f"{factory}:small" and metrics[key]["clean_accuracy"] > 0.5
    assert metrics["batch_size"]["batch_size"] == 500 and "fine-tuned" in captured.out


@pytest.mark.parametrize("extra, message", [
    (["--model", "{factory}:frozen"], "has no trainable parameters"),
    (["--model", "{factory}:small", "--layer", "nope"], "unknown layer 'nope'"),
    (["--model", "{factory}:small", "--width", "8"], "--width sets cifar_cnn's width"),
    (["--model", "linear", "--weights", "w.safetensors"], "--weights applies to a model spec"),
])
def test_backdoor_refuses_a_spec_it_cannot_train_in_one_line(tmp_path, capsys, extra, message):
    factory = tmp_path / "nets.py"
    factory.write_text(BACKDOOR_FACTORY)
    out = tmp_path / "run"
    code = main(["backdoor", "--dataset", "mnist", *[a.replace("{factory}", str(factory)) for a in extra],
                 "--epochs", "1", "--train-subset", "200", "--n-poison", "5", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()
