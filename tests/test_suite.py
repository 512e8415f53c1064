"""The standard and rand ensembles: never above any member alone on the same samples, EOT for a
randomized model, per-sample records and --compare, and bad input refused in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from advlab.cli.main import main
from advlab.evaluation.suite import SuiteConfig, compare_runs, run_suite

SMALL = SuiteConfig(steps=10, targets=2, square_queries=40, eot=4)


def test_ensemble_is_never_above_any_member_alone(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    x, y = x[:24], y[:24]
    eps = [0.05, 0.1]
    # targets ranked by the clean logits: APGD-T runs each sample as it would alone (the ranking where
    # APGD-CE ended is covered in test_suite_schedule.py, against the pair it depends on)
    config = dataclasses.replace(SMALL, rank_targets="clean")
    ev = run_suite(model, x, y, eps, config=config, progress=False, diagnostics=False)
    ensemble = ev.robust_accuracy()
    for member in ("apgd-ce", "apgd-t", "fab-t", "square"):
        alone = run_suite(model, x, y, eps, members=[member], config=config, progress=False,
                          diagnostics=False).robust_accuracy()
        assert all(e <= a for e, a in zip(ensemble, alone, strict=True)), member
    # cumulative accuracy never rises along the ensemble, and the records agree with the totals
    for i in range(len(eps)):
        after = [ev.accuracy_after[m][i] for m in ev.members]
        assert after == sorted(after, reverse=True)
    broken = [r for r in ev.per_sample() if r["broken_by"] not in ("", "clean")]
    assert len(broken) == int(((ev.broken_eps > 0) & (ev.broken_eps <= max(eps))).sum())
    assert all(r["adv_norm"] <= r["broken_at_eps"] * (1 + 1e-5) for r in broken)


class NoisyModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.1 * torch.randn_like(x))


def test_a_randomized_model_gets_eot(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    ev = run_suite(NoisyModel(model), x[:8], y[:8], [0.05], suite="standard", config=SMALL, progress=False,
                   diagnostics=False)
    assert ev.suite == "rand" and ev.randomized and ev.notes
    assert ev.members == ["APGD-CE"]  # the fast schedule's rand suite; the authors' adds APGD-DLR
    assert SuiteConfig.autoattack().rand_members == ("apgd-ce", "apgd-dlr") and SuiteConfig.autoattack().eot == 20
    attacked = [r for r in ev.per_sample() if r["broken_by"] != "clean"]
    # every gradient call is one of 4 EOT draws
    assert all(r["gradient_calls"] % 4 == 0 and r["gradient_calls"] > 0 for r in attacked)
    plain = run_suite(model, x[:8], y[:8], [0.05], config=SMALL, progress=False, diagnostics=False)
    assert plain.suite == "standard" and not plain.randomized


def test_the_adversarial_images_kept_are_the_ones_that_broke_each_sample(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    x, y = x[:16], y[:16]
    ev = run_suite(model, x, y, [0.1], members=["apgd-ce"], config=SMALL, progress=False, diagnostics=False,
                   keep_adversarial=True)
    with torch.no_grad():
        wrong = model(ev.adversarial).argmax(1) != y
    assert torch.equal(wrong, ev.broken_eps <= 0.1)
    assert (ev.adversarial - x).abs().amax() <= 0.1 + 1e-6


def test_compare_lists_samples_one_run_broke_and_the_other_did_not():
    def rec(i, by):
        return {"index": i, "broken_by": by, "step": 1}
    a = [rec(0, "APGD-CE"), rec(1, ""), rec(2, "clean"), rec(3, "Square")]
    b = [rec(0, ""), rec(1, "FAB-T"), rec(2, "clean"), rec(3, "APGD-T")]
    assert compare_runs(a, b) == {"only_a": [0], "only_b": [1], "n": 4}


def test_evaluate_standard_suite_writes_per_sample_records_and_compares(lenet_mnist, tmp_path, capsys):
    _, _, path = lenet_mnist
    common = ["--n", "12", "--eps", "0.1", "--iterations", "5", "--targets", "2", "--square-queries", "20",
              "--unbounded-n", "4", "--no-progress"]
    for name, extra in (("a", []), ("b", ["--seed", "1"])):
        code = main(["evaluate", str(path), "--suite", "standard", *common, *extra, "--out", str(tmp_path / name),
                     "--json", str(tmp_path / f"{name}.json")])
        assert code == 0
    printed = capsys.readouterr().out
    assert "after APGD-CE" in printed and "gradient calls" in printed
    samples = json.loads((tmp_path / "a" / "samples_0.json").read_text())
    assert len(samples) == 12 and {"broken_by", "step", "gradient_calls", "adv_norm"} <= set(samples[0])
    ev = next(iter(json.loads((tmp_path / "a.json").read_text())["evaluations"].values()))
    assert ev["suite"] == "standard" and ev["members"] == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert {d["name"] for d in ev["diagnostics"]} >= {"single-step stronger than iterative",
                                                      "black-box stronger than white-box"}
    assert main(["evaluate", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "broken only by" in capsys.readouterr().out


def _not_a_classifier(tmp_path):
    from advlab.models import create_model, model_args
    from advlab.models.checkpoint import save_checkpoint

    ae = create_model("conv_autoencoder", "mnist")
    path = tmp_path / "ae.safetensors"
    save_checkpoint(path, ae, {"architecture": "conv_autoencoder", "model_args": model_args("mnist", 1, 28, 10),
                               "dataset": "mnist", "input_shape": [1, 28, 28]})
    return path


@pytest.mark.parametrize("argv, needle", [
    (["--suite", "autoattack"], "suite"),
    (["--suite", "standard", "--eps", "1.5"], "eps"),
    (["--suite", "standard", "--norm", "l2", "--eps", "50"], "eps"),
    (["--suite", "standard", "--eps", "0"], "eps"),
    (["--norm", "l2"], "classic"),
    (["NOT_A_CLASSIFIER", "--suite", "standard"], "classifier"),
])
def test_evaluate_suite_rejects_bad_input_in_one_line(lenet_mnist, argv, needle, tmp_path, capsys):
    _, _, path = lenet_mnist
    if argv[0] == "NOT_A_CLASSIFIER":
        argv = argv[1:]
        path = _not_a_classifier(tmp_path)
    try:
        code = main(["evaluate", str(path), *argv, "--n", "4", "--out", str(tmp_path / "run"), "--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]
    assert not (tmp_path / "run").exists()


def test_compare_refuses_a_run_without_records(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["evaluate", "--compare", str(tmp_path / "x"), str(tmp_path / "x")]) == 2
    assert "run folder" in capsys.readouterr().err
