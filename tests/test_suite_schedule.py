"""The standard suite's fast schedule: the settings of each schedule, APGD's convergence flag (closed
forms: a model whose loss keeps rising, one whose loss cannot move), FAB-T off, everywhere or only
where APGD-T did not converge, the rank of the target that broke each sample, and the standard and rand suites in the
evaluation records (reused, missed when a setting changes, recomputed with --force)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advlab.attacks.apgd import APGD, APGDTargeted
from advlab.cli.main import main
from advlab.errors import AdvlabError
from advlab.evaluation.records import RecordStore
from advlab.evaluation.suite import SuiteConfig, SuiteEvaluation, run_suite


def test_schedules_fast_and_autoattack():
    fast, full = SuiteConfig(), SuiteConfig.autoattack()
    assert (fast.targets, fast.fab, fast.rank_targets) == (5, "off", "apgd-ce")
    assert (fast.square_queries, fast.steps) == (5000, 100)
    assert full.rank_targets == "clean"
    assert (full.targets, full.fab, full.square_queries, full.steps) == (9, "all", 5000, 100)
    assert SuiteConfig.schedule("autoattack", targets=None, seed=3) == SuiteConfig.autoattack(seed=3)
    assert SuiteConfig.schedule("fast", targets=5).targets == 5
    with pytest.raises(AdvlabError, match="schedule"):
        SuiteConfig.schedule("quick")
    with pytest.raises(AdvlabError, match="FAB-T mode"):
        SuiteConfig(fab="sometimes")


class Linear(nn.Module):
    """logits = W x + b, class 0 ahead of the others by 7 and every class at least 1 apart: no Linf
    perturbation of size eps <= 0.1 changes a logit by more than 0.1 * ||W_i||_1 <= 0.16, so nothing
    can be broken (closed form)."""

    def __init__(self, scale: float = 0.01, drift: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter((torch.rand(10, 16, generator=g) * 2 - 1) * scale)
        self.bias = nn.Parameter(torch.tensor([10.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0]))
        self.drift, self.calls = drift, 0

    def forward(self, x):
        self.calls += 1
        # drift > 0: every forward pass lifts the wrong classes, so the targeted DLR loss rises at every step
        shift = torch.zeros(10)
        shift[1:] = self.drift * self.calls
        return x.flatten(1) @ self.weight.T + self.bias + shift


def images(n=6):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(n, dtype=torch.long)


def test_apgd_flags_a_loss_still_rising_at_the_end_and_not_a_settled_one():
    x, y = images()
    rising = APGDTargeted(eps=0.1, steps=20, targets=2)(Linear(scale=1e-4, drift=0.1), x, y)
    assert not rising.success.any() and rising.extra["rising"].all()
    settled = APGDTargeted(eps=0.1, steps=20, targets=2)(Linear(scale=0.0), x, y)  # no gradient: nothing moves
    assert not settled.success.any() and not settled.extra["rising"].any()
    plain = APGD(eps=0.1, steps=20, loss="dlr")(Linear(scale=1e-4, drift=0.1), x, y)
    assert plain.extra["rising"].all()


@pytest.mark.parametrize("fab", ["off", "unconverged", "all"])
def test_fab_t_runs_where_the_mode_says(fab):
    x, y = images()
    cfg = SuiteConfig(steps=20, targets=2, fab=fab, square_queries=20)
    ev = run_suite(Linear(), x, y, [0.1], config=cfg, progress=False, diagnostics=False)
    assert ev.robust_accuracy() == [1.0]  # closed form: nothing can be broken
    fab_cost = ev.cost["FAB-T"].backward
    if fab == "all":
        assert ev.fab_attacked == len(x) and fab_cost > 0
    else:  # off, or unconverged on a model whose APGD-T loss settles: FAB-T never runs
        assert ev.fab_attacked == 0 and fab_cost == 0
    assert ev.cost["APGD-T"].backward == len(x) * 2 * 21  # 2 targets x (20 steps + the start) on every sample


def test_the_rank_of_the_target_that_broke_each_sample_is_recorded(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    cfg = SuiteConfig(steps=10, targets=3, square_queries=20)
    ev = run_suite(model, x[:32], y[:32], [0.1], members=["apgd-t"], config=cfg, progress=False, diagnostics=False)
    rows = ev.per_sample()
    broken = [r for r in rows if r["broken_by"] == "APGD-T"]
    assert broken, "APGD-T breaks some of a LeNet's images at eps 0.1"
    assert all(1 <= r["target_rank"] <= 3 for r in broken)
    assert all(r["target_rank"] == 0 for r in rows if r["broken_by"] in ("", "clean"))
    assert sum(ev.broken_by_target_rank()["APGD-T"].values()) == len(broken)
    again = SuiteEvaluation.from_record(json.loads(json.dumps(ev.to_record())))
    assert again.per_sample() == rows and again.to_dict() == ev.to_dict()


TINY = ["--n", "12", "--eps", "0.05", "--iterations", "3", "--square-queries", "5", "--unbounded-n", "0",
        "--no-progress"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("ADVLAB_CACHE", str(path))
    return path


def evaluate(path, tmp_path, name, *extra):
    code = main(["evaluate", str(path), "--suite", "standard", *TINY, *extra, "--out", str(tmp_path / name),
                 "--json", str(tmp_path / f"{name}.json")])
    (ev,) = json.loads((tmp_path / f"{name}.json").read_text())["evaluations"].values()
    return code, ev


def test_the_standard_suite_is_recorded_reused_and_recomputed_with_force(lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    code, first = evaluate(path, tmp_path, "a")
    assert code == 0 and not first["reused_record"] and "reusing" not in capsys.readouterr().out
    code, second = evaluate(path, tmp_path, "b")
    assert code == 0 and "reusing it (--force recomputes)" in capsys.readouterr().out
    assert second["reused_record"] and second["record"] == first["record"]
    assert second["robust_accuracy"] == first["robust_accuracy"] and second["cost"] == first["cost"]
    # the run folder of a reused evaluation has the same per-sample records
    assert (tmp_path / "a" / "samples_0.json").read_text() == (tmp_path / "b" / "samples_0.json").read_text()
    code, third = evaluate(path, tmp_path, "c", "--force")
    assert code == 0 and not third["reused_record"] and "reusing" not in capsys.readouterr().out
    records = RecordStore(cache / "records.sqlite").all()
    assert len(records) == 1 and records[0].protocol == "standard"


@pytest.mark.parametrize("change", [["--schedule", "autoattack"], ["--targets", "2"], ["--fab", "all"],
                                    ["--suite", "rand"], ["--eps", "0.06"], ["--norm", "l2", "--eps", "0.5"]],
                         ids=["schedule", "targets", "fab", "rand", "eps", "norm"])
def test_a_changed_protocol_or_setting_misses_the_suite_record(change, lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a")[0] == 0
    code, ev = evaluate(path, tmp_path, "b", *change)
    assert code == 0 and not ev["reused_record"] and "reusing" not in capsys.readouterr().out
    assert len(RecordStore(cache / "records.sqlite")) == 2


def test_the_leaderboard_shows_the_suite_records(lenet_mnist, cache, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert evaluate(path, tmp_path, "a")[0] == 0
    assert evaluate(path, tmp_path, "b", "--suite", "rand", "--eot", "2")[0] == 0
    capsys.readouterr()
    assert main(["leaderboard", "--out", str(tmp_path / "board")]) == 0
    printed = capsys.readouterr().out
    assert "Linf 0.05 (standard)" in printed and "Linf 0.05 (rand)" in printed


def test_a_sample_with_an_exactly_zero_gradient_leaves_apgd_at_once():
    """A saturated model (zero input gradient everywhere) cannot move APGD's iterate: the full run would
    repeat one point 100 times. Each sample costs one gradient call, with the full run's verdict."""
    x, y = images()
    frozen = APGD(eps=0.1, steps=100, loss="ce")(Linear(scale=0.0), x, y)
    assert not frozen.success.any() and frozen.cost.backward == len(x)
    assert (frozen.extra["gradient_calls"] == 1).all() and not frozen.extra["rising"].any()
    # a model with a gradient keeps iterating: all 100 steps on samples it cannot break (closed form)
    moving = APGD(eps=0.1, steps=100, loss="ce")(Linear(scale=0.01), x, y)
    assert not moving.success.any() and (moving.extra["gradient_calls"] == 101).all()


def test_keyed_random_starts_do_not_depend_on_the_batch():
    from advlab.attacks.base import ThreatModel

    x = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        threat = ThreatModel(norm, eps)
        whole = threat.keyed_random_start(x, seed=0, salt=1)
        part = threat.keyed_random_start(x[[4, 1]], seed=0, salt=1)
        assert torch.equal(part, whole[[4, 1]])  # the same sample gets the same start in any batch
        assert not torch.equal(whole, threat.keyed_random_start(x, seed=0, salt=2))
        assert not torch.equal(whole, threat.keyed_random_start(x, seed=1, salt=1))
        assert torch.equal(whole, threat.project(whole, x)) and not torch.equal(whole, x)


def test_apgd_t_tries_targets_in_the_order_of_the_ranking_logits_and_from_fresh_starts(monkeypatch):
    model = Linear()
    x, y = images(4)
    seen = []
    original = APGDTargeted.run

    def spy(self, model, x, y, target, cost, start=None, generator=None, aim=None):
        seen.append((aim.clone(), start.clone()))
        return original(self, model, x, y, target, cost, start, generator, aim)

    monkeypatch.setattr(APGDTargeted, "run", spy)
    attack = APGDTargeted(eps=0.05, steps=3, targets=3)
    attack(model, x, y)  # nothing breaks (Linear's closed form): every target runs on every sample
    assert [int(a[0]) for a, _ in seen] == [1, 2, 3]  # the clean logits' order, y = 0 excluded
    assert not torch.equal(seen[0][1], seen[1][1]) and not torch.equal(seen[1][1], seen[2][1])
    seen.clear()
    order = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6, 9, 8, 7]]).expand(4, 10)  # 7 first, then 8, then 9
    attack(model, x, y, rank_logits=order)
    assert [a.tolist() for a, _ in seen] == [[7] * 4, [8] * 4, [9] * 4]
    with pytest.raises(AdvlabError, match="rank_logits"):
        attack(model, x, y, rank_logits=order[:, :5])


@pytest.mark.parametrize("ranking", ["clean", "apgd-ce"])
def test_the_ensemble_is_never_above_a_member_alone_with_either_ranking(ranking, lenet_mnist, mnist_batch):
    """With targets ranked by the clean logits, APGD-T in the ensemble runs each sample exactly as alone;
    ranked where APGD-CE ended, it depends on APGD-CE, and the pair is what the ensemble contains."""
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    x, y = x[:24], y[:24]
    cfg = SuiteConfig(steps=10, targets=2, square_queries=40, rank_targets=ranking)
    ensemble = run_suite(model, x, y, [0.05, 0.1], config=cfg, progress=False, diagnostics=False)
    members = [["apgd-ce"], ["apgd-t"] if ranking == "clean" else ["apgd-ce", "apgd-t"], ["square"]]
    for chosen in members:
        alone = run_suite(model, x, y, [0.05, 0.1], members=chosen, config=cfg, progress=False, diagnostics=False)
        assert all(e <= a for e, a in zip(ensemble.robust_accuracy(), alone.robust_accuracy(), strict=True))
        assert bool(((ensemble.broken_eps <= alone.broken_eps) | ~ensemble.clean_correct).all()), chosen
    with pytest.raises(AdvlabError, match="target ranking"):
        SuiteConfig(rank_targets="random")
