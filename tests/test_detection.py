"""Detectors on planted clusters (closed-form planted clusters), representations, and `advlab detect`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advlab.cli.main import main
from advlab.detection import (
    activation_clustering,
    class_budgets,
    detect,
    extract_features,
    layer_names,
    spectral_signatures,
    spectre,
    spectre_class,
)
from advlab.errors import AdvlabError


def spectre_oracle(seed: int = 0, n: int = 2000, m: int = 100, d: int = 64):
    """Section 1.7's planted cluster, shrunk (n 5000 -> 2000, m 250 -> 100, D 128 -> 64; the same
    5% poisons): clean N(0, diag(16 on 8 axes, 1 elsewhere)), randomly rotated; poisons the same
    law shifted by +5 along one unit-variance axis. Full size: spectral signatures catch ~18 of
    250, SPECTRE at k >= 9 catches 248-250; "at least 240 of 250" becomes "at least 96 of 100"."""
    rng = np.random.default_rng(seed)
    scale = np.ones(d)
    scale[:8] = 4.0
    x = rng.standard_normal((n + m, d)) * scale
    x[n:, 20] += 5.0
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    truth = np.zeros(n + m, dtype=bool)
    truth[n:] = True
    return x @ rotation, truth


@pytest.fixture(scope="module")
def oracle():
    return spectre_oracle()


def test_spectral_signatures_catch_an_isotropic_shifted_cluster():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2625, 64))
    x[2500:, 5] += 6.0
    scores, removed = spectral_signatures(x, np.zeros(len(x), int), m=125)
    assert removed.sum() == round(1.5 * 125)
    assert removed[2500:].all()  # 125 of 125


def test_spectral_signatures_miss_the_spectre_oracle(oracle):
    x, truth = oracle
    _, removed = spectral_signatures(x, np.zeros(len(x), int), m=100)
    assert removed[truth].sum() < 30  # the notes: about 18 of 250 at full size


def test_spectre_fixed_k_catches_the_planted_cluster(oracle):
    x, truth = oracle
    scores, removed = spectre(x, np.zeros(len(x), int), m=100, k=16)
    assert removed.sum() == 150
    assert removed[truth].sum() >= 96
    # k = 1 is a spectral signature and misses the cluster just the same
    _, removed_k1, _ = spectre_class(x, 100, k=1)
    assert removed_k1[truth].sum() < 30


def test_spectre_sweep_picks_a_k_that_works(oracle):
    x, truth = oracle
    scores, removed, details = spectre_class(x, 100, ks=(1, 4, 9, 16))
    ops = {row["k"]: row["op"] for row in details["sweep"]}
    assert details["k"] in (9, 16)
    assert ops[details["k"]] > ops[1] and ops[details["k"]] > ops[4]
    assert removed[truth].sum() >= 96


def test_spectre_default_sweep_is_capped(oracle):
    x, _ = oracle
    with pytest.raises(AdvlabError, match="k must be"):
        spectre_class(x[:50], 5, k=80)
    # the cap: 2 k^2 <= n keeps k = 9 for 200 rows
    _, _, details = spectre_class(x[:200], 10, max_k=36)
    assert max(row["k"] for row in details["sweep"]) == 9


def test_activation_clustering_flags_the_small_cluster_and_leaves_clean_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1150, 64))
    x[1000:, 0] += 6.0
    _, removed = activation_clustering(x, np.zeros(1150, int))
    assert removed[1000:].all() and removed.sum() == 150
    clean = rng.standard_normal((1150, 64))
    detection = activation_clustering(clean, np.zeros(1150, int))
    assert detection.removed.sum() == 0
    info = detection.per_class[0]
    assert not info["flagged"] and info["silhouette"] < 0.10 and info["small_fraction"] > 0.35


def test_activation_clustering_caps_removal_at_the_poison_budget():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1150, 64))
    x[1000:, 0] += 6.0
    _, removed = activation_clustering(x, np.zeros(1150, int), m=50)
    assert removed.sum() == 75 and removed[1000:].sum() == 75


def test_detectors_work_per_class():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 32))
    labels = np.repeat([0, 1], 1000)
    x[900:1000, 3] += 7.0  # poisons in class 0 only
    for method in ("spectral", "spectre"):
        detection = detect(method, x, labels, m={0: 100})
        assert detection.removed[labels == 1].sum() == 0
        assert detection.removed[900:1000].sum() == 100
    detection = activation_clustering(x, labels, m=100)
    assert detection.removed[900:1000].all() and detection.removed[labels == 1].sum() == 0


def test_budgets_and_input_checks():
    labels = np.array([0] * 100 + [1] * 50)
    assert class_budgets(labels, poison_fraction=0.1) == {0: 10, 1: 5}
    assert class_budgets(labels, m={1: 4}) == {1: 4}
    with pytest.raises(AdvlabError, match="exactly one"):
        class_budgets(labels)
    with pytest.raises(AdvlabError, match="length"):
        spectral_signatures(np.zeros((10, 3)), np.zeros(9, int), m=1)
    with pytest.raises(AdvlabError, match="NaN"):
        spectral_signatures(np.full((10, 3), np.nan), np.zeros(10, int), m=1)
    with pytest.raises(AdvlabError, match="unknown detection"):
        detect("magic", np.zeros((10, 3)), np.zeros(10, int), m=1)


def test_representations_flatten_every_channel(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, _ = mnist_batch
    penultimate = extract_features(model, x)
    assert penultimate.dtype == np.float64 and penultimate.shape == (64, 84)
    # the output of the second conv block: 16 channels x 4 x 4 positions, all kept
    names = layer_names(model)
    conv = [n for n in names if isinstance(dict(model.named_modules())[n], torch.nn.MaxPool2d)][-1]
    block = extract_features(model, x, conv, batch_size=10)
    assert block.shape == (64, 16 * 4 * 4)
    with torch.no_grad():
        reference = model[: int(conv) + 1](x).flatten(1).double().numpy()
    np.testing.assert_allclose(block, reference, rtol=1e-5, atol=1e-6)
    assert model.training is False
    with pytest.raises(AdvlabError, match="unknown layer"):
        extract_features(model, x, "no_such_layer")


def test_detect_cli_writes_scores(tmp_path, oracle, capsys):
    x, truth = oracle
    np.save(tmp_path / "F.npy", x)
    np.save(tmp_path / "L.npy", np.zeros(len(x), dtype=np.int64))
    out = tmp_path / "scores.json"
    code = main(["detect", "--features", str(tmp_path / "F.npy"), "--labels", str(tmp_path / "L.npy"),
                 "--method", "spectre", "--poison-fraction", str(100 / len(x)), "--k", "16", "--out", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    removed = np.zeros(len(x), dtype=bool)
    removed[payload["removed"]] = True
    assert len(payload["scores"]) == len(x) and removed[truth].sum() >= 96
    assert "removed" in capsys.readouterr().out


def test_detect_cli_refuses_bad_files(tmp_path, capsys):
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    np.save(tmp_path / "L.npy", np.zeros(5, dtype=np.int64))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    for features in ("junk.npy", "obj.npy", "missing.npy"):
        code = main(["detect", "--features", str(tmp_path / features), "--labels", str(tmp_path / "L.npy"),
                     "--method", "spectral", "--m", "1", "--out", str(tmp_path / "s.json")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("advlab: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()
