"""The library calls behind the backdoor, physical, autoencoder-attack and detect commands, used from
Python: they return results and write nothing (docs/python.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError


def test_run_backdoor_returns_metrics_and_artifacts_and_writes_nothing(tmp_path, monkeypatch, mnist_train,
                                                                        mnist_test):
    from advlab.evaluation.backdoor import BackdoorSettings, run_backdoor, summary_lines

    monkeypatch.chdir(tmp_path)
    settings = BackdoorSettings(dataset="mnist", trigger="patch", trigger_options={"size": 4}, target="0",
                                n_poison=40, defenses=("spectre", "spectral"), retrain=("spectre",),
                                train_overrides={"model": "linear", "epochs": 2, "lr": 0.01}, train_subset=1000,
                                max_k=9)
    logged = []
    result = run_backdoor(settings, mnist_train, mnist_test.head(500), torch.device("cpu"), progress=False,
                          log=logged.append)
    assert list(tmp_path.iterdir()) == []
    metrics = result.metrics
    assert metrics["poisoning"]["n_poison"] == 40 and result.poisoned.n_poison == 40
    assert set(result.models) == {"poisoned", "after spectre", "unpoisoned"}
    assert all(isinstance(m, nn.Module) for m in result.models.values())
    assert "after" in metrics["defenses"]["spectre"] and "after" not in metrics["defenses"]["spectral"]
    for entry in metrics["defenses"].values():
        assert entry["true_positives"] + entry["false_positives"] == entry["removed"] <= 60
    # the scanned rows are the target class's, and every poison carries the target label
    n_target = int((result.poisoned.data.labels == result.poisoned.target).sum())
    assert result.target_features.shape[0] == n_target == len(result.target_truth)
    assert result.target_truth.sum() == 40
    assert all(len(s) == n_target for s in result.class_scores.values())
    assert any("poisoned model" in line for line in logged)
    assert len(summary_lines(metrics)) == 4


def test_run_backdoor_refuses_bad_settings_before_training(mnist_train, mnist_test):
    from advlab.evaluation.backdoor import BackdoorSettings, run_backdoor

    with pytest.raises(AdvlabError, match="unknown defense"):
        run_backdoor(BackdoorSettings(dataset="mnist", defenses=("magic",)), mnist_train, mnist_test, "cpu")
    with pytest.raises(AdvlabError, match="exceeds"):
        run_backdoor(BackdoorSettings(dataset="mnist", train_subset=10 ** 6), mnist_train, mnist_test, "cpu")


def test_destruction_table_from_python(lenet_mnist, mnist_test):
    from advlab.evaluation.physical import destruction_table, physical_attack

    model = lenet_mnist[0]
    x, y = mnist_test.tensors(6)
    rows, examples = destruction_table(model, x, y, ["fgsm"], [0.3], steps=1, samples=1, seed=0, progress=False)
    assert len(rows) == 1 and rows[0]["attack"] == "fgsm" and rows[0]["eps"] == 0.3
    assert 0 <= rows[0]["destruction_rate"] <= 1 and rows[0]["survives_photo"] == 1 - rows[0]["photo_adv_accuracy"]
    adv = examples[("fgsm", 0.3)]
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.3 + 1e-6
    with pytest.raises(AdvlabError, match="unknown attack"):
        destruction_table(model, x, y, ["magic"], [0.3], 1, 1, 0, progress=False)
    with pytest.raises(AdvlabError, match="unknown attack"):
        physical_attack("magic", 0.1, 1, 1, 0)


def test_texture_files_and_class_textures(tmp_path, mnist_train):
    from advlab.evaluation.physical import class_texture, load_texture

    np.save(tmp_path / "t.npy", np.full((8, 8, 3), 0.5, dtype=np.float32))
    texture = load_texture(str(tmp_path / "t.npy"), 3)
    assert texture.shape == (3, 8, 8) and torch.all(texture == 0.5)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for bad in ("obj.npy", "missing.npy"):
        with pytest.raises(AdvlabError):
            load_texture(str(tmp_path / bad), 3)
    assert class_texture(mnist_train, 3, 0).dim() == 3
    with pytest.raises(AdvlabError, match="--texture-index must be in 0.."):
        class_texture(mnist_train, 3, 10 ** 6, "three")


def test_autoencoder_from_python_refuses_classifiers_and_unknown_modes(lenet_mnist):
    from advlab.evaluation.autoencoder import autoencoder_sweep, load_or_train_autoencoder

    with pytest.raises(AdvlabError, match="not an autoencoder"):
        load_or_train_autoencoder(str(lenet_mnist[2]), "mnist", torch.device("cpu"))
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(AdvlabError, match="unknown attack mode"):
        autoencoder_sweep(nn.Identity(), None, x, torch.tensor([0, 1]), x, torch.tensor([1, 0]), ["magic"], "linf",
                          [0.1], 1, 0)


def test_detect_files_returns_the_payload(tmp_path):
    from advlab.detection.files import detect_files

    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    features[:20] += 8.0  # 20 planted outliers along every axis
    np.save(tmp_path / "F.npy", features)
    np.save(tmp_path / "L.npy", np.zeros(400, dtype=np.int64))
    payload = detect_files("spectral", str(tmp_path / "F.npy"), str(tmp_path / "L.npy"), m=20)
    assert payload["n"] == 400 and len(payload["scores"]) == 400
    assert set(range(20)) <= set(payload["removed"]) and payload["removed_count"] == len(payload["removed"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["F.npy", "L.npy"]
    with pytest.raises(AdvlabError, match="needs --poison-fraction or --m"):
        detect_files("spectre", str(tmp_path / "F.npy"), str(tmp_path / "L.npy"))
