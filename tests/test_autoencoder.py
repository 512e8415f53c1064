"""Autoencoders and the attacks that make an image reconstruct as another one."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.attacks.autoencoder import (
    AutoencoderAttack,
    budget_sweep,
    pair_with_targets,
    random_perturbation_like,
    reconstruction_similarity,
)
from advlab.cli.main import main
from advlab.errors import AdvlabError
from advlab.models import create_model
from advlab.training.autoencoder import autoencoder_config, reconstruction_loss, train_autoencoder


@pytest.fixture(scope="module")
def small_autoencoder(mnist_train, mnist_test):
    """A conv autoencoder trained for 2 epochs on 3,000 MNIST images (a few seconds; test MSE about 0.02)."""
    config = autoencoder_config("mnist", epochs=2, train_subset=3000, batch_size=32, schedule="constant", lr=1e-2)
    model, meta, path, cached = train_autoencoder(config, torch.device("cpu"), progress=False,
                                                  train_data=mnist_train, test_data=mnist_test.head(500))
    return model, meta, path, config


@pytest.fixture(scope="module")
def pairs(mnist_test):
    x, y = mnist_test.tensors(40)
    pool_x, pool_y = mnist_test.subset(slice(40, 240))[:]
    idx = pair_with_targets(y[:16], pool_y, seed=0)
    return x[:16], y[:16], pool_x[idx], pool_y[idx]


def test_training_learns_to_reconstruct_and_is_cached(small_autoencoder, mnist_train, mnist_test):
    model, meta, path, config = small_autoencoder
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    # trained by the one trainer with a batch loss without logits: no accuracy, the per-pixel error instead
    last = meta["history"][-1]
    assert "accuracy" not in last and last["mse"] == pytest.approx(last["loss"] / (28 * 28))
    # far better than predicting the mean image's grey level everywhere
    x, _ = mnist_test.tensors(200)
    assert meta["test_mse"] < (x - x.mean()).pow(2).mean().item() / 2
    # the cache key covers the data, so the same data is given again (the fixture's 500 test images)
    again, meta2, path2, cached = train_autoencoder(config, torch.device("cpu"), progress=False,
                                                    train_data=mnist_train, test_data=mnist_test.head(500))
    assert cached and path2 == path
    assert torch.equal(again(x[:4]), model(x[:4]))


def test_autoencoder_config_refuses_a_classifier():
    with pytest.raises(AdvlabError, match="not an autoencoder"):
        autoencoder_config("mnist", model="lenet")


def test_vae_is_deterministic_in_eval_mode_and_samples_in_training():
    torch.manual_seed(0)
    vae = create_model("conv_vae", "mnist")
    x = torch.rand(3, 1, 28, 28)
    vae.eval()
    assert torch.equal(vae(x), vae(x))
    assert torch.equal(vae(x), vae.decode(vae.encode(x)))
    assert vae(x).min() >= 0 and vae(x).max() <= 1
    vae.train()
    assert not torch.equal(vae(x), vae(x))
    loss = reconstruction_loss(vae, x)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 2.0)])
@pytest.mark.parametrize("mode", ["latent", "output"])
def test_bounded_attack_respects_budget_and_beats_same_size_noise(small_autoencoder, pairs, mode, norm, eps):
    model, *_ = small_autoencoder
    x, _, x_t, _ = pairs
    result = AutoencoderAttack(mode, eps=eps, norm=norm, steps=30)(model, x, x_t)
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    assert (result.norms[norm] <= eps * (1 + 1e-5) + 1e-6).all()
    noisy = random_perturbation_like(result.adv, x, norm, torch.Generator().manual_seed(0))
    noise_norms = (noisy - x).flatten(1).abs().amax(1) if norm == "linf" else (noisy - x).flatten(1).norm(dim=1)
    assert (noise_norms <= result.norms[norm] + 1e-5).all()  # the baseline is no larger than the attack
    with torch.no_grad():
        noise_mse = reconstruction_similarity(model(noisy), x_t)["mse"]
        clean_mse = reconstruction_similarity(model(x), x_t)["mse"]
    attack_mse = result.to_target["mse"]
    assert attack_mse.mean() < 0.85 * noise_mse.mean()
    assert attack_mse.mean() < 0.85 * clean_mse.mean()
    assert (attack_mse < noise_mse).float().mean() >= 0.75
    assert result.cost.forward >= 30 and result.cost.backward == 30


def test_latent_attack_moves_the_code_toward_the_target(small_autoencoder, pairs):
    model, *_ = small_autoencoder
    x, _, x_t, _ = pairs
    result = AutoencoderAttack("latent", eps=0.3, steps=40)(model, x, x_t)
    with torch.no_grad():
        before = (model.encode(x) - model.encode(x_t)).pow(2).sum(1)
    assert (result.extra["objective"] < before).all()


def test_penalty_trades_distortion_for_similarity(small_autoencoder, pairs):
    model, *_ = small_autoencoder
    x, _, x_t, _ = pairs
    x, x_t = x[:8], x_t[:8]
    loose = AutoencoderAttack("output", eps=None, penalty=0.01, steps=30, step_size=0.03)(model, x, x_t)
    tight = AutoencoderAttack("output", eps=None, penalty=1.0, steps=30, step_size=0.03)(model, x, x_t)
    assert loose.norms["l2"].mean() > tight.norms["l2"].mean()
    assert loose.to_target["mse"].mean() < tight.to_target["mse"].mean()
    assert loose.adv.min() >= 0 and loose.adv.max() <= 1


def test_sweep_improves_with_budget(small_autoencoder, lenet_mnist, pairs):
    model, *_ = small_autoencoder
    classifier = lenet_mnist[0]
    x, _, x_t, y_t = pairs
    rows, _ = budget_sweep(model, classifier, x, x_t, y_t, [0.05, 0.3], "output", "linf", steps=20)
    assert rows[1]["mse_to_target"] < rows[0]["mse_to_target"]
    assert rows[1]["ssim_to_target"] > rows[0]["ssim_to_target"]
    assert 0 <= rows[0]["target_class_rate"] <= rows[1]["target_class_rate"] <= 1


def test_similarity_and_pairing_oracles():
    x = torch.rand(2, 1, 28, 28)
    same = reconstruction_similarity(x, x)
    assert torch.allclose(same["mse"], torch.zeros(2)) and torch.allclose(same["ssim"], torch.ones(2), atol=1e-4)
    labels = torch.tensor([0, 1, 2, 1])
    idx = pair_with_targets(labels, labels, seed=3)
    assert (labels[idx] != labels).all()


def test_user_mistakes_raise_advlab_errors(small_autoencoder):
    model, *_ = small_autoencoder
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(AdvlabError, match="same shape"):
        AutoencoderAttack("output", eps=0.1)(model, x, x[:1])
    with pytest.raises(AdvlabError, match="mode"):
        AutoencoderAttack("middle", eps=0.1)
    with pytest.raises(AdvlabError, match="eps"):
        AutoencoderAttack("latent", eps=None)
    with pytest.raises(AdvlabError, match="encode"):
        AutoencoderAttack("latent", eps=0.1)(torch.nn.Identity(), x, x)
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        AutoencoderAttack("output", eps=0.1)(model, x * 3, x)


def test_cli_writes_the_sweep_and_the_figures(small_autoencoder, lenet_mnist, tmp_path, capsys):
    _, _, ae_path, _ = small_autoencoder
    out = tmp_path / "run"
    code = main(["autoencoder-attack", "--autoencoder", str(ae_path), "--classifier", str(lenet_mnist[2]),
                 "--n", "4", "--steps", "3", "--budgets", "0.1,0.3", "--penalty", "0.1", "--random-subset",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["autoencoder"]
    assert [r["eps"] for r in metrics["sweep"]["latent"]] == [0.1, 0.3]
    assert "penalized" in metrics
    assert (out / "figures" / "autoencoder_attack.png").is_file()
    assert (out / "figures" / "autoencoder_sweep.png").is_file()
    assert main(["autoencoder-attack", "--autoencoder", str(lenet_mnist[2]), "--n", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "not an autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
