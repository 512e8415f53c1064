"""Folder data sets at any size (issue 19): the eval transform, lazy reading in worker processes,
class maps, shapes taken from the images, and the bad inputs (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli.main import main
from advlab.data import LazyImageFolder, load_class_map, load_dataset
from advlab.data.folder import CROP_PCT, fit_image
from advlab.errors import AdvlabError


def make_folder(root: Path, classes=("ant", "bee", "cat"), per_class: int = 4, sizes=((40, 30), (24, 24)),
                mode: str = "RGB", seed: int = 0) -> Path:
    """Random images of the given sizes (cycled) and mode, one subfolder per class."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i:03d}.png")
    return root


def test_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    # a 100 x 50 image: left quarter black, right quarter black, middle white
    pixels = np.zeros((50, 100), dtype=np.uint8)
    pixels[:, 25:75] = 255
    out = fit_image(Image.fromarray(pixels), 16)
    assert out.size == (16, 16)
    # the shorter side (50) goes to floor(16 / 0.875) = 18, the longer to 36; the centre 16 columns
    # of 36 are columns 10..25 of the resized image, all inside the white middle (9..27)
    assert np.asarray(out).min() > 200
    same = Image.fromarray(pixels[:, :50])
    assert fit_image(same, 50) is same  # already the size: untouched
    assert CROP_PCT == 0.875


def test_lazy_and_in_memory_folders_give_the_same_images_labels_and_order(tmp_path):
    root = make_folder(tmp_path / "pics")
    for split in ("train", "test"):
        eager = load_dataset(f"folder:{root}", split, image_size=20, lazy=False)
        lazy = load_dataset(f"folder:{root}", split, image_size=20, lazy=True, workers=0)
        assert isinstance(lazy, LazyImageFolder) and not isinstance(eager, LazyImageFolder)
        assert lazy.shape == eager.shape == (3, 20, 20) and len(lazy) == len(eager)
        assert lazy.files == eager.files and torch.equal(lazy.labels, eager.labels)
        xs = torch.cat([x for x, _ in lazy.batches(5)])
        assert torch.equal(xs, eager.tensors()[0])
        assert torch.equal(lazy.tensors(3)[0], eager.tensors(3)[0])
    assert len(load_dataset(f"folder:{root}", "train", image_size=20, lazy=True)) == 10  # 80% of 12


def test_lazy_batches_decode_in_worker_processes_with_the_same_result(tmp_path):
    root = make_folder(tmp_path / "pics", per_class=6)
    data = load_dataset(f"folder:{root}", "test", image_size=12, lazy=True, workers=0)
    alone = torch.cat([x for x, _ in data.batches(2)])
    data.workers = 2
    parallel = torch.cat([x for x, _ in data.batches(2)])
    assert torch.equal(alone, parallel)
    gen = torch.Generator().manual_seed(3)
    shuffled = list(data.batches(3, shuffle=True, generator=gen))
    assert sorted(torch.cat([y for _, y in shuffled]).tolist()) == sorted(data.labels.tolist())


def test_lazy_fingerprint_follows_the_files(tmp_path):
    root = make_folder(tmp_path / "pics")
    first = load_dataset(f"folder:{root}", "train", image_size=8, lazy=True, workers=0).fingerprint
    assert load_dataset(f"folder:{root}", "train", image_size=8, lazy=True, workers=0).fingerprint == first
    assert load_dataset(f"folder:{root}", "train", image_size=9, lazy=True, workers=0).fingerprint != first
    victim = sorted((root / "bee").iterdir())[0]
    Image.fromarray(np.full((24, 24, 3), 7, np.uint8)).save(victim)
    assert load_dataset(f"folder:{root}", "train", image_size=8, lazy=True, workers=0).fingerprint != first


def test_shape_comes_from_the_images_when_not_given(tmp_path):
    gray = make_folder(tmp_path / "gray", sizes=((28, 28),), mode="L")
    data = load_dataset(f"folder:{gray}", "test")
    assert data.shape == (1, 28, 28)
    mixed_modes = make_folder(tmp_path / "modes", sizes=((16, 16),), mode="RGB")
    Image.fromarray(np.zeros((16, 16), np.uint8), "L").save(mixed_modes / "ant" / "gray.png")
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), "RGBA").save(mixed_modes / "ant" / "alpha.png")
    for mode, channels in (("RGB", 3), ("L", 1)):  # converted only when asked (--convert-mode)
        data = load_dataset(f"folder:{mixed_modes}", "train", lazy=True, workers=0, convert_mode=mode)
        assert data.shape == (channels, 16, 16) and torch.cat([x for x, _ in data.batches(4)]).shape[1] == channels
    for mode, channels in (("P", 3), ("RGBA", 3), ("LA", 1)):  # one mode throughout: read as before
        folder = make_folder(tmp_path / mode, sizes=((12, 12),), mode=mode)
        assert load_dataset(f"folder:{folder}", "test").shape == (channels, 12, 12)


@pytest.mark.parametrize("lazy", ["--lazy", "--no-lazy"])
def test_images_of_mixed_modes_are_refused_in_one_line_unless_converted(tmp_path, capsys, lazy):
    root = make_folder(tmp_path / "f", sizes=((16, 16),), mode="RGB")
    Image.fromarray(np.zeros((16, 16), np.uint8), "L").save(root / "ant" / "gray.png")
    Image.fromarray(np.zeros((16, 16), np.uint8), "L").convert("P").save(root / "bee" / "palette.png")
    out = tmp_path / "run"
    code = main(["accuracy", "linear", "--dataset", f"folder:{root}", lazy, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and not out.exists()
    assert "differ in mode" in err and "--convert-mode RGB" in err
    assert "ant/gray.png is L" in err and "bee/palette.png is P" in err and " is RGB" in err
    code = main(["accuracy", "linear", "--dataset", f"folder:{root}", "--channels", "3", "--convert-mode", "L", lazy,
                 "--out", str(out), "--no-progress"])
    assert code == 2 and "contradicts --convert-mode L" in capsys.readouterr().err and not out.exists()
    code = main(["train", "--dataset", f"folder:{root}", "--model", "mlp", "--epochs", "1", "--convert-mode", "L",
                 lazy, "--out", str(out), "--no-progress"])
    assert code == 0 and "1x16x16" in capsys.readouterr().out  # read as grayscale


@pytest.mark.parametrize("case", ["mixed sizes", "not square", "16-bit"])
def test_images_advlab_cannot_size_or_read_are_one_line_errors(tmp_path, capsys, case):
    if case == "mixed sizes":
        root = make_folder(tmp_path / "f", sizes=((30, 30), (20, 20)))
        message = r"differ in size .* pass --image-size"
    elif case == "not square":
        root = make_folder(tmp_path / "f", sizes=((30, 20),))
        message = "not square; pass --image-size"
    else:
        root = make_folder(tmp_path / "f", sizes=((16, 16),))
        Image.fromarray(np.full((16, 16), 300, np.uint16)).save(root / "ant" / "deep.png")
        message = r"deep.png has mode I;16"
    with pytest.raises(AdvlabError, match=message):
        load_dataset(f"folder:{root}", "test")
    extra = ["--image-size", "16"] if case == "16-bit" else []
    code = main(["train", "--dataset", f"folder:{root}", "--model", "mlp", *extra, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_class_map_relabels_folders_by_the_models_indices(tmp_path):
    root = make_folder(tmp_path / "pics", sizes=((8, 8),))
    (tmp_path / "map.json").write_text(json.dumps({"cat": 0, "ant": 7, "bee": 2}))
    data = load_dataset(f"folder:{root}", "test", class_map=tmp_path / "map.json", lazy=True, workers=0)
    assert data.num_classes == 8 and data.classes[7] == "ant" and data.classes[0] == "cat"
    for path, label in zip(data.files, data.labels.tolist(), strict=True):
        assert data.classes[label] == Path(path).parent.name
    (tmp_path / "map.txt").write_text("# folder index\ncat 0\nant,7\nbee\t2\n")
    assert load_class_map(tmp_path / "map.txt") == {"cat": 0, "ant": 7, "bee": 2}
    (tmp_path / "names.json").write_text(json.dumps(["bee", "cat", "ant"]))
    eager = load_dataset(f"folder:{root}", "test", class_map=tmp_path / "names.json", lazy=False)
    assert eager.classes == ["bee", "cat", "ant"]


@pytest.mark.parametrize("content, message", [
    ({"ant": 0, "bee": 1, "cat": 2, "dog": 3}, "names folder.*dog.*does not have"),
    ({"ant": 0, "bee": 1}, "folder class.*cat.*not in the class map"),
    ({"ant": 0, "bee": 0, "cat": 1}, "both map to index 0"),
    ({"ant": "x", "bee": 1, "cat": 2}, "maps to 'x'"),
])
def test_bad_class_maps_are_one_line_errors(tmp_path, capsys, content, message):
    root = make_folder(tmp_path / "pics", sizes=((8, 8),))
    (tmp_path / "map.json").write_text(json.dumps(content))
    with pytest.raises(AdvlabError, match=message):
        load_dataset(f"folder:{root}", "test", class_map=tmp_path / "map.json")
    code = main(["train", "--dataset", f"folder:{root}", "--class-map", str(tmp_path / "map.json"), "--model", "mlp",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_folder_class_the_model_lacks_is_named(tmp_path, capsys, lenet_mnist):
    root = make_folder(tmp_path / "digits", classes=("zero", "one", "eleven"), sizes=((28, 28),), mode="L")
    (tmp_path / "map.json").write_text(json.dumps({"zero": 0, "one": 1, "eleven": 11}))
    code = main(["attack", "--model", str(lenet_mnist[2]), "--dataset", f"folder:{root}", "--class-map",
                 str(tmp_path / "map.json"), "--attack", "fgsm", "--eps", "0.1", "--n", "4",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "eleven" in err and len(err.splitlines()) == 1


def test_eval_streams_a_lazy_folder_mapped_onto_the_models_classes(tmp_path, capsys, lenet_mnist, mnist_test):
    root = tmp_path / "mine"
    images, labels = mnist_test.images[:, 0].numpy(), mnist_test.labels.numpy()
    for digit, folder in ((3, "three"), (7, "seven")):
        (root / folder).mkdir(parents=True)
        for i in np.flatnonzero(labels == digit)[:15]:
            Image.fromarray(images[i]).save(root / folder / f"{i}.png")
    (tmp_path / "map.txt").write_text("three 3\nseven 7\n")
    code = main(["eval", str(lenet_mnist[2]), "--dataset", f"folder:{root}", "--class-map", str(tmp_path / "map.txt"),
                 "--lazy", "--workers", "1", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    accuracy = float(out.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.8  # 6 test images of two digits the model knows (about 93% on MNIST)
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert config["clean"]["n"] == 6


def test_training_on_a_lazy_folder_streams_and_matches_the_in_memory_run(tmp_path):
    from advlab.models import create_model
    from advlab.training import default_config, fit

    root = make_folder(tmp_path / "pics", per_class=5, sizes=((10, 10),))
    lazy = load_dataset(f"folder:{root}", "train", lazy=True, workers=0)
    eager = load_dataset(f"folder:{root}", "train", lazy=False)
    config = default_config(f"folder:{root}", model="linear", epochs=2, batch_size=4, optimizer="adam", lr=1e-2,
                            augment=False, schedule="constant")
    weights = []
    for data in (lazy, eager):
        torch.manual_seed(0)
        model = create_model("linear", config.dataset, 3, 10, 3)
        history = fit(model, data, config, torch.device("cpu"), progress=False)
        assert len(history) == 2
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert lazy._images is None  # nothing was decoded as a whole
    assert torch.allclose(weights[0], weights[1])


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_file_met_while_streaming_is_one_line(tmp_path, workers):
    root = make_folder(tmp_path / "pics", sizes=((16, 16),))
    (root / "bee" / "zz-broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(AdvlabError, match="zz-broken.png"):  # the headers are read before any work
        load_dataset(f"folder:{root}", "train", image_size=16, channels=3, lazy=True, workers=workers)
    # with the size and a mode to convert to given, no header is read: the file is met while streaming
    options = {"image_size": 16, "convert_mode": "RGB", "lazy": True, "workers": workers}
    data = load_dataset(f"folder:{root}", "train", **options)
    data = load_dataset(f"folder:{root}", "test", **options) if not any("broken" in f for f in data.files) else data
    with pytest.raises(AdvlabError) as caught:
        list(data.batches(4))
    assert "zz-broken.png" in str(caught.value) and len(str(caught.value).splitlines()) == 1
