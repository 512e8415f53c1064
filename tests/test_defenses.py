"""Defense recipes (augment, distill, pgd, fast, nfgsm, gradalign): the losses, and each recipe on a tiny budget moving
the model in the expected direction; advlab defend's recipes, defaults and user errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import PGD
from advlab.cli.main import main
from advlab.defenses.adversarial import (
    AdversarialTrainingLoss,
    CarriedStart,
    FGSMAugmentLoss,
    GradAlignLoss,
    OverfittingGuard,
    adversarial_loss,
    augment_recipe,
    fast_recipe,
    gradalign_recipe,
    gradient_cosines,
    linf_pgd_examples,
    nfgsm_recipe,
    pgd_recipe,
)
from advlab.defenses.distillation import DistillationLoss, distill_recipe, distillation_loss, teacher_config
from advlab.errors import AdvlabError
from advlab.evaluation.defense import gradient_statistics
from advlab.models import read_metadata
from advlab.training import default_config, fit, train_model

# the lenet_mnist fixture's budget: 2 epochs on 6,000 images
TINY = {"model": "lenet", "epochs": 2, "train_subset": 6000, "lr": 3e-3}


@pytest.fixture(scope="module")
def held_out(mnist_test):
    return mnist_test.tensors(200)


def pgd_accuracy(model, x, y, eps: float) -> float:
    return PGD(eps=eps, steps=10, seed=0)(model, x, y).robust_accuracy


def test_adversarial_examples_respect_the_ball_and_the_box(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    model.zero_grad(set_to_none=True)
    for steps, step, random_init in [(1, 0.2, False), (1, 0.25, True), (5, 0.05, True)]:
        adv = linf_pgd_examples(model, x, y, 0.2, steps, step, random_init, torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= 0.2 + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
    assert not any(p.grad is not None for p in model.parameters())  # input gradients only


def test_fast_examples_keep_their_random_start_on_saturated_pixels(lenet_mnist):
    """On a black image, a box-clipped start puts every pixel of the fast example on a corner of the
    ball (0 or eps) wherever the gradient is not zero, which is plain FGSM; Wong et al.'s unclipped
    start leaves a share in between."""
    model, _, _ = lenet_mnist
    x, y = torch.zeros(32, 1, 28, 28), torch.zeros(32, dtype=torch.long)

    def between(box_start: bool) -> float:
        adv = linf_pgd_examples(model, x, y, 0.3, 1, 0.375, True, torch.Generator().manual_seed(0), box_start)
        assert adv.min() >= 0 and adv.max() <= 0.3 + 1e-6
        return ((adv > 1e-6) & (adv < 0.3 - 1e-6)).float().mean().item()

    assert between(box_start=True) < 0.01  # only where the gradient is exactly zero
    assert between(box_start=False) > 0.05


def test_nfgsm_examples_leave_the_ball_but_not_the_box(lenet_mnist, mnist_batch):
    """N-FGSM: a start of up to 2 eps and one step of eps, with no projection onto the eps-ball."""
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    loss = adversarial_loss(nfgsm_recipe(0.1))
    assert (loss.init_scale, loss.project, loss.step_size) == (2.0, False, 0.1)
    adv = linf_pgd_examples(model, x, y, 0.1, 1, 0.1, True, torch.Generator().manual_seed(0), box_start=False,
                            init_scale=2.0, project=False)
    gap = (adv - x).abs().max().item()
    assert 0.1 < gap <= 0.3 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_eps_ramp_grows_the_ball_linearly_over_training(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    recipe = {**fast_recipe(0.2), "eps_ramp_epochs": 1.0}
    loss = adversarial_loss(recipe, steps_per_epoch=4)
    assert isinstance(loss, AdversarialTrainingLoss) and loss.ramp_steps == 4
    seen = []
    original = linf_pgd_examples.__globals__["linf_pgd_examples"]

    def spy(model, x, y, eps, *args, **kwargs):
        seen.append(eps)
        return original(model, x, y, eps, *args, **kwargs)

    linf_pgd_examples.__globals__["linf_pgd_examples"] = spy
    try:
        for _ in range(6):
            loss(model, x, y)
    finally:
        linf_pgd_examples.__globals__["linf_pgd_examples"] = original
    assert seen == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    with pytest.raises(AdvlabError, match="steps per epoch"):
        adversarial_loss(recipe)


def test_carried_start_resumes_each_sample_where_its_last_step_ended():
    """ATTA's start: a sample kept before starts at x + its kept perturbation (projected onto the current
    ball and the box); a sample never kept starts uniformly in the ball, unclipped (Wong et al.)."""
    x = torch.rand(6, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    carried = CarriedStart(6)
    first = carried.start(x, torch.arange(6), 0.2, generator)
    assert (first - x).abs().max() <= 0.2 + 1e-6 and (first - x).abs().min() > 0  # nothing kept yet: random
    delta = (torch.rand(3, 1, 4, 4) * 2 - 1) * 0.2
    carried.keep(torch.tensor([4, 1, 2]), delta)
    assert len(carried.delta) == 6 and carried.seen.tolist() == [False, True, True, False, True, False]
    with pytest.raises(AdvlabError, match="number of training images"):
        CarriedStart(0)
    order = [1, 2, 4, 0, 5]
    start = carried.start(x[order], torch.tensor(order), 0.2, generator)
    expected = (x[[1, 2, 4]] + delta[[1, 2, 0]].half().float()).clamp(0, 1)
    assert torch.allclose(start[:3], expected, atol=1e-6)
    fresh = start[3:] - x[[0, 5]]
    assert fresh.abs().max() <= 0.2 + 1e-6 and fresh.abs().min() > 0  # unseen: random, not x itself
    # a smaller ball than the kept perturbation's clips the start onto it
    small = carried.start(x[[1]], torch.tensor([1]), 0.05, generator)
    assert (small - x[[1]]).abs().max() <= 0.05 + 1e-6


def test_fast_training_with_a_carried_start_takes_each_step_from_the_last_one(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    loss = adversarial_loss(fast_recipe(0.2, start="carry"), train_images=len(x))
    assert loss.takes_index and fast_recipe(0.2)["box_start"] is False and "start" not in fast_recipe(0.2)
    index = torch.arange(len(x))
    with pytest.raises(AdvlabError, match="indices"):
        loss(model, x, y)
    _, first = loss(model, x, y, index=index)
    kept = loss.carried.delta.clone()
    assert kept.float().abs().max() > 0.1 and (kept.float().abs() <= 0.2 + 1e-3).all()
    start = loss.carried.start(x, index, 0.2, torch.Generator())
    assert torch.allclose(start, (x + kept.float()).clamp(0, 1), atol=1e-6)
    loss(model, x, y, index=index)
    # the next step starts there: inside the ball again, and some pixels step back across it
    assert (loss.carried.delta.float().abs() <= 0.2 + 1e-3).all()
    assert (loss.carried.delta.float() - kept.float()).abs().max() > 0.1
    assert first.shape == (len(x), 10)


def test_the_trainer_gives_each_sample_index_once_per_epoch_to_a_loss_that_asks(mnist_train):
    seen = []

    def spy(model, x, y, index):
        seen.append(index.clone())
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    spy.takes_index = True
    config = default_config("mnist", model="linear", epochs=2, train_subset=300, batch_size=64)
    fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), mnist_train, config, torch.device("cpu"),
        spy, progress=False)
    epochs = torch.cat(seen[:5]), torch.cat(seen[5:])
    assert len(seen) == 10 and all(sorted(e.tolist()) == list(range(300)) for e in epochs)
    assert epochs[0].tolist() != epochs[1].tolist()  # reshuffled


def test_fgsm_augmentation_is_the_papers_mixture(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    fgsm = linf_pgd_examples(model, x, y, 0.1, 1, 0.1, random_init=False)
    with torch.no_grad():
        clean_loss, adv_loss = F.cross_entropy(model(x), y), F.cross_entropy(model(fgsm), y)
        mixed, logits = FGSMAugmentLoss(0.1, alpha=0.3)(model, x, y)
    assert torch.allclose(mixed, 0.3 * clean_loss + 0.7 * adv_loss, atol=1e-5)
    assert torch.allclose(logits, model(fgsm), atol=1e-5)  # the reported accuracy is on the FGSM half


def test_gradalign_trains_on_fgsm_and_penalizes_only_turning_gradients(lenet_mnist, mnist_batch):
    """Andriushchenko & Flammarion's loss: CE on the FGSM example plus weight * (1 - cos) of the input
    gradients at x and at x + eta. A two-class linear model's gradient keeps its direction everywhere
    (it is p_other * (w_other - w_own)), so its penalty is zero; a LeNet's is not."""
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    plain, plain_logits = GradAlignLoss(0.2, weight=0.0, seed=0)(model, x, y)
    fgsm = linf_pgd_examples(model, x, y, 0.2, 1, 0.2, random_init=False)
    assert torch.allclose(plain_logits, model(fgsm), atol=1e-5)  # the FGSM half: eps step from x
    assert torch.allclose(plain, F.cross_entropy(model(fgsm), y), atol=1e-5)
    aligned, _ = GradAlignLoss(0.2, weight=5.0, seed=0)(model, x, y)
    assert 0.01 < (aligned - plain).item() <= 10.0
    model.zero_grad(set_to_none=True)
    aligned.backward()  # the penalty reaches the weights through the second-order backward
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    y2 = y % 2
    plain, _ = GradAlignLoss(0.2, weight=0.0, seed=1)(linear, x, y2)
    aligned, _ = GradAlignLoss(0.2, weight=5.0, seed=1)(linear, x, y2)
    assert aligned.item() == pytest.approx(plain.item(), abs=1e-4)


def test_gradient_cosines_skip_gradients_too_small_to_have_a_direction():
    """A confident sample's gradient can have nonzero entries whose squares underflow: its norm is 0 in
    float32 and its cosine would be NaN (which diverged a GradAlign run); such samples are left out."""
    first, second = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    first[1] = 1e-25  # nonzero, norm underflows to 0
    second[3] = 0.0
    cos = gradient_cosines(first, second)
    expected = F.cosine_similarity(first.flatten(1), second.flatten(1))[[0, 2]]
    assert torch.allclose(cos, expected, atol=1e-6)
    assert len(gradient_cosines(first[[1]], second[[1]])) == 0


def test_gradalign_random_start_and_ramp_stay_in_the_ball_and_the_box(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    recipe = {**gradalign_recipe(0.2, 1.0, step_size=0.25, random_start=True), "eps_ramp_epochs": 1.0}
    loss = adversarial_loss(recipe, steps_per_epoch=2)
    assert isinstance(loss, GradAlignLoss) and loss.random_start and loss.ramp_steps == 2
    adversarial = []
    original = model.forward

    def spy(batch):
        if len(batch) == 2 * len(x):  # the training forward: FGSM half, then the eta half
            adversarial.append(batch[: len(x)].detach())
        return original(batch)

    model.forward = spy
    try:
        for _ in range(3):
            loss(model, x, y)
    finally:
        del model.forward
    model.zero_grad(set_to_none=True)
    for adv, bound in zip(adversarial, (0.1, 0.2, 0.2), strict=True):
        gap = (adv - x).abs().max().item()
        assert bound / 2 < gap <= bound + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("recipe", [augment_recipe(0.15), pgd_recipe(0.15, steps=5), fast_recipe(0.15),
                                    fast_recipe(0.15, step_size=0.075, start="carry"), gradalign_recipe(0.15, 0.5)],
                         ids=["augment", "pgd", "fast", "fast-carry", "gradalign"])
def test_adversarial_recipes_beat_the_standard_model_under_pgd(recipe, lenet_mnist, held_out):
    standard, standard_meta, _ = lenet_mnist
    config = default_config("mnist", **TINY, recipe=recipe)
    model, meta, _, _ = train_model(config, torch.device("cpu"), batch_loss=adversarial_loss(recipe, train_images=6000),
                                    progress=False)
    x, y = held_out
    assert meta["recipe"] == recipe
    assert meta["test_accuracy"] > 0.7
    assert pgd_accuracy(model, x, y, 0.15) > pgd_accuracy(standard, x, y, 0.15) + 0.1


def test_distillation_saturates_the_softmax_but_not_the_logit_margin(lenet_mnist, held_out):
    standard, _, _ = lenet_mnist
    config = default_config("mnist", **TINY, recipe=distill_recipe(100.0))
    teacher_cfg = teacher_config(config)
    assert teacher_cfg.recipe == {"method": "distill-teacher", "temperature": 100.0}
    loss = distillation_loss(config, torch.device("cpu"), progress=False)
    student, meta, _, _ = train_model(config, torch.device("cpu"), batch_loss=loss, progress=False)
    x, y = held_out
    assert meta["test_accuracy"] > 0.6
    # trained at T, deployed at T = 1: the cross-entropy's input gradient vanishes on most samples
    assert gradient_statistics(student, x, y)["zero_gradient"] > 0.5
    assert gradient_statistics(standard, x, y)["zero_gradient"] < 0.05
    # so PGD on the cross-entropy stalls, while PGD on the logit margin (Carlini & Wagner) does not
    ce = PGD(eps=0.2, steps=10, seed=0, random_start=False)(student, x, y).robust_accuracy
    cw = PGD(eps=0.2, steps=10, seed=0, random_start=False, loss="cw")(student, x, y).robust_accuracy
    assert ce > cw + 0.3


def test_distillation_loss_matches_the_teachers_soft_labels(lenet_mnist, mnist_batch):
    teacher, _, _ = lenet_mnist
    x, y = mnist_batch
    loss, _ = DistillationLoss(teacher, 5.0)(teacher, x, y)
    with torch.no_grad():
        p = F.softmax(teacher(x) / 5.0, 1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(1).mean()
    assert torch.allclose(loss, entropy, atol=1e-4)  # a student equal to its teacher pays the entropy only


def defend(tmp_path, *argv: str) -> dict:
    """Run advlab defend for one short epoch on 500 images; the checkpoint's metadata."""
    path = tmp_path / "defended.safetensors"
    code = main(["defend", *argv, "--epochs", "1", "--train-subset", "500", "--checkpoint", str(path),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    return read_metadata(path)


def test_defend_records_the_recipe_and_the_papers_defaults(tmp_path):
    meta = defend(tmp_path, "--method", "fast", "--model", "lenet")
    assert meta["recipe"] == {"method": "fast", "eps": 0.3, "step_size": 0.375, "box_start": False}
    # Wong et al.'s MNIST settings where the command line is silent; --epochs wins
    assert meta["train_config"]["batch_size"] == 100 and meta["train_config"]["lr"] == 5e-3
    assert meta["train_config"]["schedule"] == "onecycle"
    assert meta["train_config"]["epochs"] == 1


def test_defend_fast_with_a_carried_start_records_it(tmp_path):
    meta = defend(tmp_path, "--method", "fast", "--fgsm-start", "carry", "--model", "lenet")
    assert meta["recipe"] == {"method": "fast", "eps": 0.3, "step_size": 0.375, "box_start": False,
                              "start": "carry"}


def test_defend_nfgsm_with_eps_ramp_records_both(tmp_path):
    meta = defend(tmp_path, "--method", "nfgsm", "--eps-ramp", "0.5", "--model", "small_cnn")
    assert meta["recipe"] == {"method": "nfgsm", "eps": 0.3, "step_size": 0.3, "noise": 2.0, "box_start": False,
                              "eps_ramp_epochs": 0.5}
    assert meta["architecture"] == "small_cnn"


@pytest.mark.parametrize("argv, needle", [
    (["--method", "pgd", "--eps", "2"], "eps"),
    (["--method", "augment", "--eps-ramp", "2"], "--eps-ramp"),
    (["--method", "fast", "--eps-ramp", "-1"], "--eps-ramp"),
    (["--method", "nfgsm", "--noise", "-1"], "--noise"),
    (["--method", "pgd", "--steps", "0"], "steps"),
    (["--method", "distill", "--temperature", "0"], "temperature"),
    (["--method", "augment", "--alpha", "1.5"], "alpha"),
    (["--method", "gradalign", "--align-weight", "-1"], "--align-weight"),
    (["--method", "fast", "--align-weight", "2"], "--align-weight"),
    (["--method", "fast", "--align-weight", "1"], "--align-weight"),  # even at gradalign's default
    (["--method", "pgd", "--random-start"], "--random-start"),
    (["--method", "pgd", "--fgsm-start", "carry"], "--fgsm-start"),
    (["--method", "fast", "--fgsm-start", "carry", "--augment"], "--no-augment"),
])
def test_defend_rejects_bad_settings_in_one_line(argv, needle, tmp_path, capsys):
    try:
        code = main(["defend", *argv, "--model", "lenet", "--out", str(tmp_path / "run")])
    except SystemExit as exc:  # argparse's own errors (hostile numbers are refused while parsing)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_defend_gradalign_records_the_recipe(tmp_path):
    meta = defend(tmp_path, "--method", "gradalign", "--align-weight", "2", "--model", "lenet")
    assert meta["recipe"] == {"method": "gradalign", "eps": 0.3, "step_size": 0.3, "align_weight": 2.0,
                              "random_start": False}
    assert meta["train_config"]["lr"] == 5e-3  # Wong et al.'s MNIST settings, as fast


def test_adversarial_loss_refuses_other_recipes():
    with pytest.raises(AdvlabError):
        adversarial_loss({"method": "noise", "sigma": 0.25})


def test_overfitting_guard_restores_the_best_epoch_when_pgd_accuracy_collapses():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    x, y = torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long)
    with torch.no_grad():  # robust: the logits ignore the image
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0]))
    robust = {k: v.clone() for k, v in model.state_dict().items()}
    guard = OverfittingGuard(x, y, eps=0.3, steps=5, drop=0.2)
    record: dict = {}
    assert not guard(model, 1, record) and record["pgd_check_accuracy"] == 1.0
    with torch.no_grad():  # collapsed: a steep linear model that PGD flips at once
        model[1].weight.copy_(torch.randn_like(model[1].weight) * 10)
        model[1].bias.zero_()
    record = {}
    assert guard(model, 2, record)
    assert record["pgd_check_accuracy"] < 0.5 and "restored epoch 1" in record["stopped"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in robust.items())


def test_defend_stop_on_overfit_records_the_check_per_epoch(tmp_path, capsys):
    path = tmp_path / "fast.safetensors"
    assert main(["defend", "--method", "fast", "--stop-on-overfit", "0.2", "--model", "lenet", "--epochs", "2",
                 "--train-subset", "500", "--checkpoint", str(path), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    meta = read_metadata(path)
    assert meta["recipe"]["stop_on_overfit"] == 0.2
    assert all("pgd_check_accuracy" in epoch for epoch in meta["history"])
    assert main(["defend", "--method", "augment", "--stop-on-overfit", "0.2", "--model", "lenet",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "pgd, fast, nfgsm and gradalign only" in capsys.readouterr().err
