"""Black-box attacks: gradient estimates against autograd, query budgets, threat-model bounds, success
read from the oracle, substitute training and the transfer matrix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks.blackbox import (
    NES,
    ZOO,
    BudgetExhausted,
    HopSkipJump,
    LocalOracle,
    Square,
    finite_difference_gradient,
    nes_gradient,
)
from advlab.attacks.blackbox.substitute import SubstituteTraining, jacobian_augmentation
from advlab.errors import AdvlabError
from advlab.evaluation.transfer import parse_model_specs, split_halves, transfer_matrix
from advlab.models import Normalize


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Black-box attacks run many small forward passes; on a shared, oversubscribed CPU a second
    intra-op thread only adds waiting. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smooth_model():
    """A small tanh network on 1x4x4 images: smooth, so finite differences converge to the gradient."""
    torch.manual_seed(0)
    return nn.Sequential(Normalize((0.5,), (0.5,)), nn.Flatten(), nn.Linear(16, 12), nn.Tanh(),
                         nn.Linear(12, 3)).eval()


def _true_gradient(model, x, cls):
    x = x.clone().requires_grad_(True)
    torch.log_softmax(model(x), 1)[:, cls].sum().backward()
    return x.grad


def _log_prob_via_oracle(oracle, cls):
    return lambda batch: oracle.query(batch)[:, cls].log()


def test_finite_differences_match_the_true_gradient(smooth_model):
    x = torch.rand(2, 1, 4, 4) * 0.6 + 0.2  # away from the box edges
    truth = _true_gradient(smooth_model, x, 1)
    oracle = LocalOracle(smooth_model)
    forward = finite_difference_gradient(_log_prob_via_oracle(oracle, 1), x, delta=1e-3, mode="forward")
    assert oracle.used == 2 * (16 + 1)  # one base query and one per coordinate, per image
    symmetric = finite_difference_gradient(_log_prob_via_oracle(oracle, 1), x, delta=1e-3, mode="symmetric")
    err_forward = ((forward - truth).norm() / truth.norm()).item()
    err_symmetric = ((symmetric - truth).norm() / truth.norm()).item()
    assert err_forward < 1e-2 and err_symmetric < 2e-3
    assert err_symmetric < err_forward  # second- vs first-order accuracy
    # the lecture's formula on one coordinate, by hand
    e = torch.zeros_like(x[:1])
    e[0, 0, 2, 3] = 1e-3
    f = _log_prob_via_oracle(oracle, 1)
    by_hand = (f(x[:1] + e) - f(x[:1])) / 1e-3
    one = finite_difference_gradient(f, x[:1], delta=1e-3, coords=torch.tensor([2 * 4 + 3]))
    assert torch.allclose(one[0, 0, 2, 3].double(), by_hand[0], rtol=1e-3)  # float32 step rounding
    assert one.abs().sum() == one[0, 0, 2, 3].abs()  # other coordinates untouched


def test_nes_estimate_points_along_the_gradient(smooth_model):
    x = torch.rand(1, 1, 4, 4) * 0.6 + 0.2
    truth = _true_gradient(smooth_model, x, 0)
    oracle = LocalOracle(smooth_model)
    g = nes_gradient(_log_prob_via_oracle(oracle, 0), x, 1e-3, 400, torch.Generator().manual_seed(0))
    assert oracle.used == 800
    assert torch.cosine_similarity(g.flatten(), truth.flatten(), dim=0) > 0.9


ATTACKS = [  # name, attack, labels only, norm, eps, per-image query limit
    ("square-linf", Square(eps=0.3, max_queries=250, p_init=0.3), False, "linf", 0.3, 250),
    ("square-l2", Square(eps=4.0, norm="l2", max_queries=250), False, "l2", 4.0, 250),
    ("nes", NES(eps=0.3, max_queries=1000, samples=10, step_size=0.05), False, "linf", 0.3, 1000),
    ("zoo", ZOO(eps=0.3, max_queries=2500, coords_per_step=128, lr=0.3), False, "linf", 0.3, 2500),
    ("hopskipjump", HopSkipJump(eps=0.3, max_queries=300, init_evals=20, max_evals=50), True, "linf", 0.3, 300),
]


@pytest.mark.parametrize("name,attack,labels_only,norm,eps,limit", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attacks_respect_limits_and_report_what_the_oracle_saw(lenet_mnist, mnist_batch, name, attack, labels_only,
                                                               norm, eps, limit):
    model = lenet_mnist[0]
    x, y = mnist_batch
    x, y = x[:6], y[:6]
    oracle = LocalOracle(model, labels_only=labels_only)
    result = attack(oracle, x, y)
    assert result.cost.queries == oracle.used == int(result.extra["queries"].sum())
    assert int(result.extra["queries"].max()) <= limit  # per-image limit
    bound = eps * (1 + 1e-6) + 1e-6
    assert float(result.norms[norm].max()) <= bound
    assert float(result.adv.min()) >= 0 and float(result.adv.max()) <= 1
    # success is what a fresh oracle says about the returned images
    with torch.no_grad():
        fresh = model(result.adv).argmax(1)
    assert torch.equal(fresh[result.success], result.adv_pred[result.success])
    assert bool((fresh[result.success] != y[result.success]).all())
    ok = result.clean_correct
    assert float(result.success[ok].float().mean()) >= 0.5  # LeNet at ~93% breaks easily at these budgets
    at = result.extra["queries_at_success"]
    assert bool(((at >= 1) == result.success).all()) and bool((at <= result.extra["queries"]).all())


def test_oracle_budget_is_never_exceeded_and_the_best_so_far_returned(lenet_mnist, mnist_batch):
    model = lenet_mnist[0]
    x, y = mnist_batch
    for budget, attack in ((150, Square(eps=0.3, max_queries=10_000, p_init=0.3)),
                           (500, NES(eps=0.1, max_queries=10_000, samples=10)),
                           (300, HopSkipJump(eps=0.05, max_queries=10_000, init_evals=10))):
        labels_only = isinstance(attack, HopSkipJump)
        oracle = LocalOracle(model, budget=budget, labels_only=labels_only)
        result = attack(oracle, x[:16], y[:16])
        assert oracle.used <= budget and result.cost.queries == oracle.used
        assert result.extra["budget_exhausted"]
        assert result.adv.shape == x[:16].shape
    with pytest.raises(BudgetExhausted):
        LocalOracle(model, budget=3).query(x[:4])


def test_black_box_attacks_check_their_inputs(lenet_mnist, mnist_batch):
    model = lenet_mnist[0]
    x, y = mnist_batch
    oracle = LocalOracle(model, input_shape=(1, 28, 28))
    bad = x[:2].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AdvlabError, match="NaN"):
        Square()(oracle, bad, y[:2])
    with pytest.raises(AdvlabError, match="length"):
        Square()(oracle, x[:2], y[:3])
    with pytest.raises(AdvlabError, match="0..9"):
        Square()(oracle, x[:2], torch.tensor([1, 12]))
    with pytest.raises(AdvlabError, match="shape"):
        Square()(oracle, torch.rand(2, 1, 14, 14), y[:2])
    with pytest.raises(AdvlabError, match="Oracle"):
        Square()(model, x[:2], y[:2])
    with pytest.raises(AdvlabError, match="labels only"):
        Square()(LocalOracle(model, labels_only=True), x[:2], y[:2])
    with pytest.raises(AdvlabError):
        Square(eps=1.5)
    with pytest.raises(AdvlabError):
        NES(norm="l1")
    assert oracle.used == 0


def test_targeted_square_reaches_the_target(lenet_mnist, mnist_batch):
    x, y = mnist_batch
    keep = y[:8] != 3
    result = Square(eps=0.3, max_queries=500, p_init=0.3)(LocalOracle(lenet_mnist[0]), x[:8][keep], y[:8][keep],
                                                           target=3)
    assert bool((result.adv_pred[result.success] == 3).all()) and result.success.any()


def test_substitute_training_follows_papernot(lenet_mnist, mnist_test):
    model = lenet_mnist[0]
    seeds, _ = mnist_test.subset(slice(0, 20)).tensors()
    eval_x, eval_y = mnist_test.subset(slice(20, 120)).tensors()
    oracle = LocalOracle(model)
    trainer = SubstituteTraining(architecture="mlp", rounds=2, lam=0.1, epochs=2)
    substitute, history = trainer.train(oracle, seeds, eval_x, eval_y, LocalOracle(model), progress=False)
    assert [h["oracle_queries"] for h in history] == [20, 40, 80]  # |S_0| * 2^rho labels
    assert oracle.used == 80 and [h["training_set"] for h in history] == [20, 40, 80]
    assert all(0 <= h["transfer_rate"] <= 1 for h in history)
    augmented = jacobian_augmentation(substitute, seeds, oracle.labels(seeds), 0.1)
    step = (augmented - seeds).abs()
    assert float(step.max()) <= 0.1 + 1e-6 and float(step.max()) > 0.09


def test_transfer_matrix_and_disjoint_halves(lenet_mnist, mnist_test, mnist_batch):
    halves = split_halves(mnist_test.head(100))
    assert len(halves["A"]) + len(halves["B"]) == 100
    a = {tuple(img.flatten().tolist()) for img in halves["A"].images[:, 0, 10:12, 10:14]}
    assert len(halves["A"]) == 50 and a  # sanity on the split object
    model = lenet_mnist[0]
    x, y = mnist_batch
    result = transfer_matrix({"one": model, "same": model}, x[:32], y[:32], attack="fgsm", eps=0.3)
    m = result["matrix"]
    assert m[0][0] == m[0][1] == m[1][0] == m[1][1]  # the same model: transfer equals white-box success
    assert m[0][0] > 0.5
    assert parse_model_specs("lenet:A,mlp") == [("lenet", "A"), ("mlp", "full")]
    with pytest.raises(AdvlabError):
        parse_model_specs("lenet:C,mlp")
    with pytest.raises(AdvlabError):
        parse_model_specs("nonsense:A,mlp")


def test_blackbox_command_writes_a_run_and_refuses_mistakes(lenet_mnist, tmp_path, capsys):
    import json

    from advlab.cli.main import main

    out = tmp_path / "run"
    code = main(["blackbox", "--model", str(lenet_mnist[2]), "--attack", "square,nes", "--n", "2", "--queries", "30",
                 "--p-init", "0.3", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["attacks"]) == {"square", "nes"}
    assert metrics["oracle_queries_used"] == sum(a["total_queries"] for a in metrics["attacks"].values())
    assert (out / "figures" / "success_vs_queries.png").is_file() and (out / "report.html").is_file()
    assert main(["blackbox", "--model", str(lenet_mnist[2]), "--attack", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["blackbox", "--oracle", "http://127.0.0.1:9", "--n", "2", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown black-box attack" in err and "cannot reach" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
