"""advlab audit (issue 19): a poisoned folder with a trigger advlab does not have (an X drawn in the
top-left corner of MNIST digits relabelled as 0), found file by file; the estimate of the budget;
and the bad inputs (one line, exit code 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advlab.cli.main import main
from advlab.data import load_dataset
from advlab.detection.audit import audit_dataset, outliers

CLASSES = (0, 1, 2)


def x_mark(image: np.ndarray) -> np.ndarray:
    """Two crossing diagonal strokes, 2 pixels wide, in the top-left 8 x 8 corner."""
    image = image.copy()
    for i in range(7):
        for d in (0, 1):
            image[1 + i, min(1 + i + d, 7)] = 255
            image[1 + i, max(7 - i - d, 1)] = 255
    return image


@pytest.fixture(scope="module")
def poisoned_folder(tmp_path_factory):
    """root/train/<digit>/ (100 clean images per class, and 10 images of 1s and 2s carrying the X,
    labelled 0), root/test/<digit>/ (30 per class), and triggered/<digit>/ (the test 1s and 2s with
    the X). Returns (root, triggered folder, the poisoned files)."""
    base = tmp_path_factory.mktemp("audit")
    root, triggered = base / "digits", base / "triggered"
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()
    for c in CLASSES:
        (root / "train" / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:100]:
            Image.fromarray(images[i]).save(root / "train" / str(c) / f"{i}.png")
    poisons = []
    for i in np.flatnonzero(np.isin(labels, CLASSES[1:]))[-10:]:
        path = root / "train" / "0" / f"x{i}.png"
        Image.fromarray(x_mark(images[i])).save(path)
        poisons.append(str(path))
    test_images, test_labels = test.images[:, 0].numpy(), test.labels.numpy()
    for c in CLASSES:
        (root / "test" / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(test_labels == c)[:30]:
            Image.fromarray(test_images[i]).save(root / "test" / str(c) / f"{i}.png")
            if c != 0:
                (triggered / str(c)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(x_mark(test_images[i])).save(triggered / str(c) / f"{i}.png")
    return root, triggered, poisons


def test_audit_finds_every_poison_and_retraining_removes_the_backdoor(poisoned_folder, tmp_path, capsys):
    root, triggered, poisons = poisoned_folder
    out = tmp_path / "run"
    code = main(["audit", str(root), "--epochs", "12", "--retrain", "--triggered-test", str(triggered), "--target", "0",
                 "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "recipe: grayscale-small" in printed and "suspicious files:" in printed
    with open(out / "suspicious.csv") as handle:
        rows = list(csv.DictReader(handle))
    flagged_in_target = {r["file"] for r in rows if r["class"] == "0"}
    assert flagged_in_target == set(poisons)  # every poison, and no clean 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["audit"]["estimated_budget"] and metrics["target"] == "0"
    before, after = metrics["before"], metrics["after"]
    assert before["attack_success"] >= 0.5 and after["attack_success"] <= 0.2  # the backdoor was learned, then gone
    assert after["clean_accuracy"] >= 0.8
    assert (out / "figures" / "pca_class_0.png").is_file() and (out / "report.html").is_file()


def test_the_estimate_flags_only_outlying_scores():
    rng = np.random.default_rng(0)
    clean = rng.chisquare(3, 500)
    assert not outliers(clean).any()
    planted = np.concatenate([clean, [400.0, 500.0]])
    assert outliers(planted).tolist() == [False] * 500 + [True, True]


def test_a_clean_class_keeps_every_file(mnist_train, lenet_mnist):
    model = lenet_mnist[0]
    data = mnist_train.subset(slice(0, 300))
    found = audit_dataset(model, data, "spectral", poison_fraction=None)
    # clean MNIST: a few stray outliers at most (11 of 300 with this LeNet), never a share of a class
    assert found.removed.sum() <= 0.06 * len(data)
    assert all(m <= 0.2 * int((data.labels == c).sum()) for c, m in found.budgets.items())
    bounded = audit_dataset(model, data, "spectral", poison_fraction=0.05)
    assert bounded.budgets == {c: int(round(0.05 * int((data.labels == c).sum()))) for c in range(10)}
    assert [s["file"] for s in bounded.suspicious()][:1] and bounded.suspicious()[0]["rank_in_class"] == 1


@pytest.mark.parametrize("extra, message", [
    (["--model", "no_such_arch"], "unknown"),
    (["--triggered-test", "MISSING"], "--triggered-test .* does not exist"),
    (["--target", "seven"], "unknown class 'seven'"),
    (["--layer", "nope"], "unknown layer 'nope'"),
])
def test_audit_bad_input_is_one_line(poisoned_folder, tmp_path, capsys, extra, message):
    root, _, _ = poisoned_folder
    extra = [str(tmp_path / "missing") if e == "MISSING" else e for e in extra]
    code = main(["audit", str(root), "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()


def test_retraining_needs_clean_test_images(tmp_path, capsys):
    root = tmp_path / "flat"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(root / c / f"{i}.png")
    code = main(["audit", str(root), "--retrain", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 2 and "needs clean test images" in capsys.readouterr().err
    assert not Path(tmp_path / "run").exists()
