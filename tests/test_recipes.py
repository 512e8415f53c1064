"""Recipes for a user's folder (issue 19): chosen from what the data is, said and recorded, and
never flipping unless asked."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from advlab.cli.main import main
from advlab.data import load_dataset
from advlab.training import choose_recipe, default_config, random_crop_flip


def gray_digits(root, per_class=6, size=12):
    rng = np.random.default_rng(0)
    for label in ("left", "right"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 40, (size, size), dtype=np.uint8)
            pixels[:, : size // 2] += 200 if label == "left" else 0
            pixels[:, size // 2:] += 200 if label == "right" else 0
            Image.fromarray(pixels, "L").save(root / label / f"{i}.png")
    return root


def test_the_recipe_follows_channels_size_and_number_of_images():
    gray = choose_recipe((1, 28, 28), 60_000)
    assert gray.name == "grayscale-small" and gray.fields["model"] == "mnist_cnn" and not gray.fields["augment"]
    assert gray.fields["epochs"] == 3 and choose_recipe((1, 28, 28), 600).fields["epochs"] == 30
    colour = choose_recipe((3, 32, 32), 5_000)
    assert colour.name == "colour-small" and colour.fields["augment"] and colour.fields["flip"] is False
    large = choose_recipe((3, 224, 224), 1_000)
    assert large.name == "large" and large.fields["flip"] is False and large.fields["batch_size"] == 64
    assert choose_recipe((1, 224, 224), 100).name == "large"


def test_folders_never_flip_unless_asked_and_cifar10_keeps_its_flips(tmp_path):
    root = gray_digits(tmp_path / "digits")
    data = load_dataset(f"folder:{root}", "train")
    config = default_config(f"folder:{root}", data=data)
    assert config.data_recipe == "grayscale-small" and config.model == "mnist_cnn" and config.flip is False
    assert default_config(f"folder:{root}").flip is False  # even without the data at hand
    assert default_config(f"folder:{root}", data=data, flip=True).flip is True
    assert default_config("cifar10").flip is None and default_config("cifar10").augment  # crop and flip
    assert "flip" not in default_config("cifar10").to_dict()  # the hashes of cached CIFAR-10 models stand


def test_crops_without_flips_never_mirror():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    for seed in range(5):
        out = random_crop_flip(x, torch.Generator().manual_seed(seed), pad=0, flip=False)
        assert torch.equal(out, x)
    flipped = [torch.equal(random_crop_flip(x, torch.Generator().manual_seed(s), pad=0)[0], x[0].flip(-1))
               for s in range(20)]
    assert any(flipped)


def test_train_on_a_grayscale_folder_says_and_records_the_recipe(tmp_path, capsys):
    root = gray_digits(tmp_path / "digits")
    code = main(["train", "--dataset", f"folder:{root}", "--epochs", "1", "--no-progress", "--out",
                 str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "recipe: grayscale-small (1 channel, 12 px, 10 images" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_config"]["data_recipe"] == "grayscale-small" and config["train_config"]["flip"] is False
    assert config["train_config"]["model"] == "mnist_cnn"
