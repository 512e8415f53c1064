"""The library calls behind the commands (docs/python.md): the same work as the CLI, from Python."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advlab.attacks import PGD, DeepFool
from advlab.attacks.blackbox import LocalOracle
from advlab.errors import AdvlabError
from advlab.evaluation.attack_run import attack_dataset, choose_targets, concat_results
from advlab.evaluation.blackbox import (
    DEFAULT_EPS,
    BlackboxSettings,
    SubstituteSettings,
    run_blackbox,
)
from advlab.evaluation.certify_run import CertifySettings, recipe_sigma
from advlab.evaluation.robust import MinimalNormEvaluation, minimal_norms
from advlab.evaluation.robustness import EvaluationSettings, evaluate_robustness, recipe_label


def test_attack_dataset_equals_one_batch_and_sums_every_cost(lenet_mnist, mnist_batch):
    model = lenet_mnist[0]
    x, y = mnist_batch[0][:24], mnist_batch[1][:24]
    attack = PGD(eps=0.3, steps=5, random_start=False)
    whole = attack(model, x, y)
    batched = attack_dataset(attack, model, x, y, batch_size=7, progress=False)
    assert torch.equal(batched.success, whole.success) and torch.equal(batched.adv_pred, whole.adv_pred)
    assert torch.allclose(batched.adv, whole.adv, atol=1e-6)
    assert batched.cost.backward == whole.cost.backward and batched.cost.forward == whole.cost.forward
    summary = batched.summary()
    assert summary["n"] == 24 and not summary["targeted"]
    assert summary["gradient_passes_per_image"] == batched.cost.backward / 24
    ok = batched.success & batched.clean_correct
    assert summary["success_rate_on_correct"] == pytest.approx(int(ok.sum()) / int(batched.clean_correct.sum()))
    assert summary["median_norms_of_successes_on_correct"]["linf"] <= 0.3 + 1e-6
    with pytest.raises(AdvlabError):
        attack_dataset(attack, model, x, y, batch_size=0)


def test_concat_results_keeps_queries_and_targets():
    from advlab.attacks.base import AttackResult, Cost

    def part(k: int, queries: int) -> AttackResult:
        z = torch.zeros(k, dtype=torch.long)
        return AttackResult(torch.zeros(k, 1, 2, 2), torch.ones(k, dtype=torch.bool),
                            {"l2": torch.ones(k), "linf": torch.ones(k), "l0": torch.ones(k)}, Cost(1, 2, queries),
                            z, z + 1, z, target=z + 1)

    joined = concat_results([part(2, 5), part(3, 7)])
    assert len(joined.labels) == 5 and joined.target.tolist() == [1] * 5
    assert (joined.cost.forward, joined.cost.backward, joined.cost.queries) == (2, 4, 12)
    with pytest.raises(AdvlabError):
        concat_results([])


def test_choose_targets_by_name_drops_images_of_that_class_and_random_ones_differ():
    classes = [str(k) for k in range(10)]
    x, y = torch.zeros(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 3, 5])
    kept_x, kept_y, target = choose_targets(x, y, classes, "3")
    assert kept_y.tolist() == [0, 1, 2, 5] and target.tolist() == [3] * 4 and len(kept_x) == 4
    _, same_y, random_target = choose_targets(x, y, classes, None, seed=1)
    assert torch.equal(same_y, y) and bool((random_target != y).all())
    with pytest.raises(AdvlabError, match="unknown target class"):
        choose_targets(x, y, classes, "cat")


def test_minimal_norms_from_the_batched_loop(lenet_mnist, mnist_batch):
    model = lenet_mnist[0]
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    result = attack_dataset(DeepFool(box_aware=3), model, x, y, batch_size=8, progress=False)
    ev = MinimalNormEvaluation.from_result(result, "l2")
    assert torch.allclose(ev.norms, minimal_norms(model, x, y, DeepFool(box_aware=3), batch_size=8,
                                                  progress=False).norms, atol=1e-5)
    assert bool((ev.norms[~result.clean_correct] == 0).all())
    assert bool(torch.isinf(ev.norms[result.clean_correct & ~result.success]).all())


def test_blackbox_settings_hold_the_one_set_of_defaults():
    settings = BlackboxSettings()
    assert (settings.n, settings.queries, settings.batch_size, settings.bound) == (100, 10_000, 100, 0.3)
    assert BlackboxSettings(norm="l2").bound == DEFAULT_EPS["l2"] == 2.0
    assert BlackboxSettings(norm="l2", eps=0.5).bound == 0.5
    square = BlackboxSettings(attacks=("square", "nes"), p_init=0.2, queries=50).build()
    assert [a.name for a in square] == ["square", "nes"]
    with pytest.raises(AdvlabError, match="unknown black-box attack"):
        BlackboxSettings(attacks=("nope",)).build()


def test_run_blackbox_counts_queries_and_compares_with_whitebox(lenet_mnist, mnist_batch):
    model = lenet_mnist[0]
    x, y = mnist_batch[0][:4], mnist_batch[1][:4]
    oracle = LocalOracle(model, input_shape=(1, 28, 28))
    settings = BlackboxSettings(attacks=("square",), queries=30, batch_size=3, whitebox_pgd=True)
    run = run_blackbox(oracle, x, y, settings, whitebox_model=model, progress=False)
    summary = run.summaries["square"]
    assert summary["images"] == 4 and run.oracle_queries_used == summary["total_queries"] > 0
    assert 0 <= summary["success_rate"] <= 1 and "ratio_to_whitebox" in summary
    assert 0 <= run.whitebox["success_rate"] <= 1
    with pytest.raises(AdvlabError, match="in-process"):
        run_blackbox(oracle, x, y, settings, whitebox_model=None, progress=False)


def test_substitute_settings_check_before_any_query():
    settings = SubstituteSettings(seeds=10, n_eval=20)
    assert settings.learning_rate == 1e-3 and settings.batch == 32
    assert SubstituteSettings(optimizer="sgd").learning_rate == 1e-2
    settings.check(30)
    with pytest.raises(AdvlabError, match="must fit"):
        settings.check(29)
    with pytest.raises(AdvlabError):
        SubstituteSettings(ensemble=("nope",)).check(10_000)


def test_evaluation_settings_defaults_and_checks():
    assert EvaluationSettings().radii == [0.1, 0.2, 0.3]
    assert EvaluationSettings(norm="l2", suite="standard", dataset="cifar10").radii == [0.5]
    assert EvaluationSettings(norm="l2", suite="standard").radii == [2.0]
    with pytest.raises(AdvlabError, match="L-inf only"):
        EvaluationSettings(norm="l2").check()
    with pytest.raises(AdvlabError, match="at most 1"):
        EvaluationSettings(eps=(2.0,)).check()
    with pytest.raises(AdvlabError, match="whole image"):
        EvaluationSettings(eps=(40.0,), norm="l2", suite="standard").check((1, 28, 28))
    assert recipe_label({"recipe": {"method": "fast", "eps": 0.3}}) == "fast (eps 0.3)"
    assert recipe_label({}) == "standard"


def test_evaluate_robustness_records_then_reuses(lenet_mnist, mnist_batch, tmp_path):
    from advlab.evaluation.records import RecordStore

    model, meta, path = lenet_mnist
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    settings = EvaluationSettings(eps=(0.3,), steps=3, restarts=1, blackbox_n=0, unbounded_n=0, effort_n=0,
                                  batch_size=8)
    store = RecordStore(tmp_path / "records.sqlite")
    first = evaluate_robustness(model, meta, str(path), x, y, settings, store=store, progress=False)
    again = evaluate_robustness(model, meta, str(path), x, y, settings, store=store, progress=False)
    assert not first.reused and again.reused and again.record.key == first.record.key
    assert again.result["worst_case"] == first.result["worst_case"]
    assert first.evaluation.robust.worst_case() == first.result["worst_case"]


def test_certify_plan_takes_the_trained_sigma_or_refuses():
    meta = {"architecture": "lenet", "model_args": {"num_classes": 10}, "recipe": {"method": "noise", "sigma": 0.25}}
    assert recipe_sigma(meta) == 0.25 and recipe_sigma({"recipe": {"method": "pgd"}}) is None
    with pytest.raises(AdvlabError, match="not noise-trained"):
        CertifySettings().plan({"architecture": "lenet", "model_args": {"num_classes": 10}}, "x.safetensors")
    with pytest.raises(AdvlabError):
        CertifySettings(sigma=0.25, alpha=0.9).plan(meta)


def test_certify_plan_picks_every_skip_th_image(mnist_test, lenet_mnist):
    plan = CertifySettings(n_images=3, skip=20).plan(
        {**lenet_mnist[1], "recipe": {"method": "noise", "sigma": 0.5}})
    data, ids = plan.images(mnist_test)
    assert ids == [0, 20, 40] and len(data) == 3 and plan.sigma == 0.5 and plan.num_classes == 10


def test_defense_recipes_from_typed_options():
    from advlab.defenses.recipes import DefenseOptions, check_defense, defense_recipe
    from advlab.training import default_config

    recipe = defense_recipe("fast", DefenseOptions(eps=0.1))
    assert recipe["method"] == "fast" and math.isclose(recipe["eps"], 0.1)
    with pytest.raises(AdvlabError, match="needs --sigma"):
        defense_recipe("noise", DefenseOptions())
    with pytest.raises(AdvlabError, match="unknown defense"):
        defense_recipe("nope", DefenseOptions())
    config = default_config("mnist", recipe=defense_recipe("distill", DefenseOptions()))
    with pytest.raises(AdvlabError, match="--eps-ramp"):
        check_defense("distill", DefenseOptions(eps_ramp=1.0), config)


def test_serve_app_from_checkpoint_reads_the_typed_metadata(lenet_mnist):
    from fastapi.testclient import TestClient

    from advlab.serve import app_from_checkpoint

    app, info = app_from_checkpoint(str(lenet_mnist[2]), max_batch=3)
    assert info.input_shape == (1, 28, 28) and info.num_classes == 10
    assert TestClient(app).get("/health").json()["max_batch"] == 3


def test_clean_section_builder_lives_in_the_library(lenet_mnist, mnist_test, tmp_path):
    from advlab.report.sections import add_clean_section

    sections = []
    run = SimpleNamespace(figure_path=lambda name: tmp_path / name,
                          add_section=lambda *a, **k: sections.append((a, k)))
    model: nn.Module = lenet_mnist[0]
    result = add_clean_section(run, model, lenet_mnist[1], mnist_test.head(50), "cpu", "lenet")
    assert 0.5 < result["accuracy"] <= 1 and sections and (tmp_path / "confusion.png").is_file()

