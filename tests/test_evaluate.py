"""advlab evaluate and the gradient-masking diagnostics: each check fires on a model built to trigger
it and stays silent on a normal one."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advlab.cli.main import main
from advlab.evaluation.defense import (
    check_blackbox,
    check_gradients,
    check_monotone,
    check_single_step,
    check_unbounded,
    evaluate_defense,
)
from advlab.evaluation.robust import robust_accuracy


class MeanPathModel(nn.Module):
    """Two classes scored on the mean pixel value t: logits [0, g(t)], class 0 while g(t) < 0.

    g(t) = amplitude * sin(2 pi (t - 0.5) / 0.2) + slope * (t - 0.5) + offset. On images of constant
    0.5 the cross-entropy's gradient points to larger t, but g has local maxima on the way, where
    small (iterative) steps get stuck and a single large step does not.
    """

    def __init__(self, amplitude: float, slope: float, offset: float) -> None:
        super().__init__()
        self.amplitude, self.slope, self.offset = amplitude, slope, offset
        self.anchor = nn.Linear(1, 1)  # a parameter, so the model looks like any other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(1).mean(1) - 0.5
        g = self.amplitude * torch.sin(2 * math.pi * t / 0.2) + self.slope * t + self.offset
        return torch.stack([torch.zeros_like(g), g], 1)


class Scaled(nn.Module):
    """Logits multiplied by a large factor: the softmax saturates, as after defensive distillation."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


class Quantized(nn.Module):
    """Inputs rounded to a few grey levels first: the gradient is zero almost everywhere (shattered)."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


def grey_images(n: int = 16):
    return torch.full((n, 1, 28, 28), 0.5), torch.zeros(n, dtype=torch.long)


def whitebox(model, x, y, eps, steps=40, restarts=1):
    from advlab.evaluation.defense import attack_suite

    suite = attack_suite(steps, restarts)
    return robust_accuracy(model, x, y, {k: f for k, (_, f) in suite.items()}, eps, progress=False, recheck=True)


def test_single_step_check_fires_when_fgsm_jumps_a_trap_pgd_falls_into():
    model = MeanPathModel(amplitude=1.0, slope=10.0, offset=-2.5)
    x, y = grey_images()
    ev = whitebox(model, x, y, [0.3])
    assert ev.accuracy["fgsm"] == [0.0] and ev.accuracy["pgd"] == [1.0]
    assert check_single_step(ev).fired


def test_monotone_check_fires_when_a_larger_ball_gives_a_higher_accuracy():
    model = MeanPathModel(amplitude=1.0, slope=0.0, offset=-0.5)
    x, y = grey_images()
    ev = whitebox(model, x, y, [0.05, 0.15])
    assert ev.independent["fgsm"] == [0.0, 1.0]  # FGSM at 0.15 lands in the trough
    assert ev.accuracy["fgsm"] == [0.0, 0.0]  # the nested figure counts the sample as broken
    assert check_monotone(ev).fired


def test_gradient_and_unbounded_checks_fire_on_a_saturated_softmax(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    saturated = Scaled(model, 1000.0).eval()
    gradients = check_gradients(saturated, x, y)
    assert gradients.fired and gradients.evidence["zero_gradient"] > 0.5
    assert check_unbounded(saturated, x, y, steps=20).fired


def test_blackbox_check_fires_when_gradients_are_shattered(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    shattered = Quantized(model).eval()
    ev = whitebox(shattered, x, y, [0.3], steps=10)
    worst = torch.stack(list(ev.broken_at.values())).amin(0)
    check = check_blackbox(shattered, x, y, worst, 0.3, queries=300)
    assert check.fired, check.message


def test_all_checks_stay_silent_on_a_normal_model(lenet_mnist, mnist_test):
    model, _, _ = lenet_mnist
    x, y = mnist_test.tensors(100)
    ev = evaluate_defense(model, x, y, [0.05, 0.1, 0.2], steps=20, restarts=2, blackbox_n=100, blackbox_queries=300,
                          unbounded_n=50, progress=False)
    assert len(ev.diagnostics) == 9
    assert not ev.masking_suspected, [d.message for d in ev.diagnostics if d.fired]
    worst = ev.robust.worst_case()
    for k in ev.attacks:  # the worst case is never above any single attack
        assert all(w <= a + 1e-9 for w, a in zip(worst, ev.robust.accuracy[k], strict=True))
    assert worst[-1] < 0.5


def test_evaluate_cli_writes_table_json_plot_and_a_comparison(lenet_mnist, tmp_path, capsys):
    _, _, path = lenet_mnist
    out, js = tmp_path / "run", tmp_path / "eval.json"
    code = main(["evaluate", str(path), str(path), "--n", "30", "--eps", "0.1,0.2", "--steps", "5", "--restarts", "2",
                 "--blackbox-n", "10", "--blackbox-queries", "50", "--unbounded-n", "10", "--json", str(js),
                 "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "worst case" in printed and "[ok]" in printed
    data = json.loads(js.read_text())
    (ev, *_) = data["evaluations"].values()
    assert ev["eps"] == [0.1, 0.2] and ev["n"] == 30 and len(ev["diagnostics"]) == 9
    assert set(ev["robust_accuracy"]) == {"fgsm", "pgd", "cw"}
    sections = json.loads((out / "report.json").read_text())["sections"]
    assert sections[0]["title"] == "Comparison" and len(sections) == 3
    assert (out / "report.html").is_file() and (out / "figures" / "evaluate_comparison.png").is_file()


@pytest.mark.parametrize("argv, needle", [
    (["--eps", "0.1,2"], "eps"),
    (["--eps", "a,b"], "numbers"),
    (["--blackbox-n", "-1"], "blackbox"),
])
def test_evaluate_rejects_bad_input_in_one_line(lenet_mnist, argv, needle, tmp_path, capsys):
    _, _, path = lenet_mnist
    try:
        code = main(["evaluate", str(path), *argv, "--out", str(tmp_path / "run"), "--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]
    assert not (tmp_path / "run").exists()


def test_evaluate_names_a_missing_checkpoint(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_demo_section_compares_standard_fast_and_distilled(lenet_mnist, tmp_path, mnist_train, mnist_test):
    from advlab.demo import DemoContext
    from advlab.demo.evaluate import DEMO_ORDER, demo_section
    from advlab.report.run import RunDir

    assert DEMO_ORDER == 45
    model, meta, _ = lenet_mnist
    with RunDir(tmp_path / "demo", "demo", {}) as run_dir:
        ctx = DemoContext(run_dir, model, meta, mnist_train, mnist_test, torch.device("cpu"), quick=True,
                          progress=False)
        demo_section(ctx)
        out = run_dir.commit()
    defenses = json.loads((out / "metrics.json").read_text())["defenses"]
    evaluations = defenses["evaluations"]
    assert list(evaluations) == ["standard", "fast adversarial training", "defensive distillation T=100"]
    assert defenses["fast_train_config"]["recipe"]["method"] == "fast"
    assert all(len(e["worst_case"]) == 3 for e in evaluations.values())
    assert (out / "figures" / "defenses.png").is_file()
    sections = json.loads((out / "report.json").read_text())["sections"]
    assert sections[-1]["title"] == "Defenses, evaluated honestly"
