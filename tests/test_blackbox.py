"""Black-box attacks: gradient estimates against autograd, query budgets, threat-model bounds, success
read from the oracle, substitute training and the transfer matrix."""

from __future__ import annotations

import math

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
from advlab.attacks.blackbox.substitute import (
    SubstituteEnsemble,
    SubstituteTraining,
    jacobian_augmentation,
    periodic_step,
    reservoir_sample,
)
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
    # HopSkipJump at Linf 0.3 and 300 queries sits on a knife edge on this LeNet (ART's HopSkipJump
    # gets 0-2 of 6 there too, and the median smallest distance at 300 queries is 0.30-0.33 for both:
    # bench/blackbox_peers.py); 0.5 is far above it. Its convergence is tested against a closed form below.
    ("hopskipjump", HopSkipJump(eps=0.5, max_queries=300, init_evals=20, max_evals=50), True, "linf", 0.5, 300),
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
    oracle = LocalOracle(model, labels_only=True)
    trainer = SubstituteTraining(architecture="mlp", rounds=2, lam=0.1, epochs=2)
    substitute, history = trainer.train(oracle, seeds, eval_x, eval_y, oracle, progress=False)
    assert [h["oracle_queries"] for h in history] == [20, 40, 80]  # |S_0| * 2^rho labels, evaluation not counted
    assert [h["training_set"] for h in history] == [20, 40, 80]
    assert all(0 <= h["transfer_rate"] <= 1 for h in history)
    data_x, data_y = trainer.training_set
    assert torch.equal(data_x[:20], seeds) and torch.equal(data_y, model(data_x).argmax(1))  # oracle labels only


def _linear_substitute():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def test_augmentation_steps_along_the_sign_of_the_oracle_labels_jacobian_row():
    substitute = _linear_substitute()
    x = torch.rand(5, 1, 4, 4)
    x[:, :, 0] = 0.0  # a row on the box's lower face: negative steps there must be clipped
    x[:, :, 1] = 1.0
    labels = torch.tensor([0, 1, 2, 1, 0])  # the oracle's labels, not the substitute's
    for output, lam in (("probs", 0.1), ("logits", 0.1), ("logits", -0.05)):
        new = jacobian_augmentation(substitute, x, labels, lam, output=output)
        for i in range(len(x)):
            def f(z, output=output):
                out = substitute(z[None])[0]
                return out.softmax(0) if output == "probs" else out
            row = torch.autograd.functional.jacobian(f, x[i])[labels[i]]  # J_F(x)[O(x)], shape of x
            expected = (x[i] + lam * row.sign()).clamp(0, 1)
            assert torch.allclose(new[i], expected, atol=1e-6)
        assert float(new.min()) >= 0 and float(new.max()) <= 1
        moved = (new - x).abs()
        assert float(moved.max()) <= abs(lam) + 1e-6
        inside = (x > abs(lam)) & (x < 1 - abs(lam))
        assert torch.allclose(moved[inside], torch.full_like(moved[inside], abs(lam)), atol=1e-6)


def test_periodic_step_size_and_reservoir():
    # lambda_rho = lambda * (-1)^floor(rho / tau) (Papernot et al. 2017, Sec. 6.2)
    assert [periodic_step(0.1, rho, 3) for rho in range(7)] == [0.1, 0.1, 0.1, -0.1, -0.1, -0.1, 0.1]
    assert [periodic_step(0.1, rho, None) for rho in range(3)] == [0.1] * 3
    assert [periodic_step(0.2, rho, 1) for rho in range(3)] == [0.2, -0.2, 0.2]
    g = torch.Generator().manual_seed(0)
    pick = reservoir_sample(100, 10, g)
    assert len(pick) == 10 == len(set(pick.tolist())) and int(pick.min()) >= 0 and int(pick.max()) < 100
    assert torch.equal(reservoir_sample(5, 10, g), torch.arange(5))
    counts = torch.zeros(20)
    for _ in range(400):  # each item kept with probability k / n
        counts[reservoir_sample(20, 5, g)] += 1
    assert float((counts / 400 - 0.25).abs().max()) < 0.12


def test_substitute_rounds_count_labels_and_stay_within_the_budget(lenet_mnist, mnist_test):
    model = lenet_mnist[0]
    seeds, _ = mnist_test.subset(slice(0, 16)).tensors()
    # reservoir from round 1 on: 16, +16 (all of S_0), then +kappa per round
    oracle = LocalOracle(model, labels_only=True)
    trainer = SubstituteTraining(architecture="mlp", rounds=4, epochs=1, tau=2, reservoir_from=1, reservoir_size=6)
    _, history = trainer.train(oracle, seeds, progress=False)
    assert [h["oracle_queries"] for h in history] == [16, 32, 38, 44, 50] and oracle.used == 50
    assert [h["step"] for h in history] == [0.1, 0.1, -0.1, -0.1, 0.1]
    # a budget that ends inside round 2: only the points that fit are labeled, then the rounds stop
    oracle = LocalOracle(model, labels_only=True, budget=40)
    trainer = SubstituteTraining(architecture="mlp", rounds=4, epochs=1)
    _, history = trainer.train(oracle, seeds, progress=False)
    assert oracle.used == 40 and trainer.budget_exhausted
    assert [h["oracle_queries"] for h in history] == [16, 32, 40]
    assert len(trainer.training_set[0]) == 40
    with pytest.raises(BudgetExhausted):  # not even the seeds fit
        SubstituteTraining(rounds=1, epochs=1).train(LocalOracle(model, budget=10), seeds, progress=False)


def test_ensemble_averages_logits_and_input_diversity_keeps_the_bound(lenet_mnist, mnist_batch):
    from advlab.attacks import FGSM
    from advlab.attacks.mifgsm import MIFGSM, input_diversity

    a, b = _linear_substitute(), nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    z = torch.rand(4, 1, 4, 4)
    assert torch.allclose(SubstituteEnsemble([a, b])(z), (a(z) + b(z)) / 2)
    with_norm = SubstituteEnsemble([nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                                                  nn.LazyLinear(3)).eval(), a])
    with_norm(z)
    FGSM(eps=0.1)(with_norm, z, torch.zeros(4, dtype=torch.long))
    assert not any(m.training for m in with_norm.modules())  # members stay in eval mode after an attack
    x, y = mnist_batch
    g = torch.Generator().manual_seed(0)
    shrunk = input_diversity(x[:4], 1.0, 0.8, g)
    assert shrunk.shape == x[:4].shape and not torch.equal(shrunk, x[:4])
    assert torch.equal(input_diversity(x[:4], 0.0, 0.8, g), x[:4])
    result = MIFGSM(eps=0.3, steps=5, diversity=0.5)(lenet_mnist[0], x[:16], y[:16])
    assert float(result.norms["linf"].max()) <= 0.3 + 1e-6 and float(result.success.float().mean()) > 0.5


def _linear_two_class_problem():
    """Eight 4x4 images at known Linf distances 0.05-0.12 from the boundary of a linear two-class model
    f(x) = v.x: that distance is |v.x| / ||v||_1 (the box does not bind here)."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 16, generator=g))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    v = (lin.weight[1] - lin.weight[0]).detach()
    base = torch.rand(8, 16, generator=g) * 0.3 + 0.35
    base = base - ((base @ v) / v.abs().sum())[:, None] * v.sign()  # onto the boundary v.x = 0
    side = torch.tensor([1.0, -1.0] * 4)
    closed_form = torch.linspace(0.05, 0.12, 8)
    x = (base + (side * closed_form)[:, None] * v.sign()).view(8, 1, 4, 4)
    y = (side > 0).long()
    assert torch.allclose((x.flatten(1) @ v).abs() / v.abs().sum(), closed_form, atol=1e-5)
    return model, x, y, closed_form


def test_hopskipjump_converges_to_the_closed_form_distance_of_a_linear_model():
    """HopSkipJump, from labels only, must never beat the closed-form distance (every queried point is
    checked) and must come within 1.6x of it in 1,000 queries (it reaches 1.07-1.24x)."""
    model, x, y, closed_form = _linear_two_class_problem()
    result = HopSkipJump(eps=1e-4, max_queries=1000, init_evals=20, max_evals=100)(
        LocalOracle(model, labels_only=True), x, y)
    ratio = result.extra["min_adv_distance"] / closed_form
    assert bool((ratio >= 1 - 1e-4).all()) and bool((ratio <= 1.6).all())
    broken = HopSkipJump(eps=0.3, max_queries=300, init_evals=20, max_evals=100)(
        LocalOracle(model, labels_only=True), x, y)
    assert bool(broken.success.all())  # 0.3 is at least 2.5x the distance of every image


def test_hopskipjump_eps_probe_finds_what_lies_within_eps():
    """With eps 1.5x an image's distance to a linear boundary, the point x + eps sign(gradient estimate)
    is adversarial once the estimate's sign agrees with v's on most of ||v||_1: the probe breaks
    every image within 300 queries (seeds 0-2 take at most 38 with eight probes an iteration, 167 with
    one and the paper's first probe radius; without it 2 of 8 stay unbroken at seed 1), and its
    queries are counted like all others."""
    model, x, y, closed_form = _linear_two_class_problem()
    for i in range(len(x)):
        oracle = LocalOracle(model, labels_only=True)
        result = HopSkipJump(eps=float(1.5 * closed_form[i]), max_queries=300, init_evals=20, max_evals=100)(
            oracle, x[i:i + 1], y[i:i + 1])
        assert bool(result.success.all()) and float(result.norms["linf"].max()) <= 1.5 * closed_form[i] + 1e-6
        assert int(result.extra["queries"][0]) == oracle.used <= 300


class _RecordingOracle(LocalOracle):
    """A labels-only oracle that keeps every batch it was asked about."""

    def __init__(self, model: nn.Module, budget: int) -> None:
        super().__init__(model, labels_only=True, budget=budget)
        self.calls: list[torch.Tensor] = []

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.clone())
        return super()._answer(x)


@pytest.mark.parametrize("per_iteration", [1, 8])
def test_hopskipjump_spends_its_budget_and_ends_each_probe_batch_with_the_eps_probe(per_iteration):
    """At an eps below the closed-form distance (nothing within eps is adversarial, so the attack runs
    to the end of its budget), whatever the budget: the queries never pass it, at most one is left
    unspent, and every batch of gradient probes, the last iteration's too (cut short by the budget),
    is followed by the eps probe, the point clip(x + eps s) with s in {-1, 0, 1} per pixel."""
    model, x, y, closed_form = _linear_two_class_problem()
    x, y = x[:1], y[:1]
    eps = float(closed_form[0]) / 2
    for budget in range(40, 420, 31):
        oracle = _RecordingOracle(model, budget)
        result = HopSkipJump(eps=eps, max_queries=budget, init_evals=20, max_evals=100,
                             eps_probes_per_iteration=per_iteration)(oracle, x, y)
        assert not bool(result.success.any()) and not result.extra["budget_exhausted"]
        assert budget - 1 <= oracle.used <= budget and int(result.extra["queries"][0]) == oracle.used
        batches = [k for k, call in enumerate(oracle.calls) if len(call) > 1]
        assert batches, "no gradient estimate within the budget"
        for k in batches:
            assert k + 1 < len(oracle.calls)
            probe = oracle.calls[k + 1]
            step = (probe - x) / eps
            assert len(probe) == 1 and float((probe - x).abs().max()) == pytest.approx(eps, abs=1e-6)
            on_vertex = ((step.abs() - 1).abs() < 1e-4) | (probe == 0) | (probe == 1) | (step.abs() < 1e-6)
            assert bool(on_vertex.all())
        # B_t <= 100 probes an iteration, sent in per_iteration chunks
        assert max(len(oracle.calls[k]) for k in batches) <= math.ceil(100 / per_iteration)


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


def test_substitute_command_counts_only_the_attackers_labels(lenet_mnist, tmp_path):
    import json

    from advlab.cli.main import main

    out = tmp_path / "sub"
    code = main(["substitute", "--model", str(lenet_mnist[2]), "--labels-only", "--seeds", "10", "--rounds", "2",
                 "--epochs", "1", "--tau", "1", "--n-eval", "20", "--budget", "30", "--ensemble", "lenet",
                 "--craft", "pgd", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["oracle_queries"] for h in metrics["history"]] == [10, 20, 30]  # 40 would pass the budget
    assert metrics["oracle_queries_used"] == metrics["oracle_labels"] == 30 and metrics["budget_exhausted"]
    assert metrics["final"]["substitutes"] == ["mlp", "lenet"] and 0 <= metrics["final"]["transfer_rate"] <= 1
    assert [h["step"] for h in metrics["history"]] == [0.1, -0.1, 0.1]
    assert main(["substitute", "--model", str(lenet_mnist[2]), "--ensemble", "nope", "--out",
                 str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
