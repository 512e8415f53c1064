"""Batch sizes picked to fit memory (issue 19): halving on out-of-memory (a fake one) and the CPU's
estimate from the activations and the available memory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advlab import runtime
from advlab.attacks import FGSM
from advlab.evaluation.attack_run import attack_dataset
from advlab.runtime import activation_bytes, gradient_batch_size, run_in_batches

CPU = torch.device("cpu")


def test_a_batch_that_runs_out_of_memory_is_retried_at_half_the_size():
    seen, shrinks = [], []

    def work(rows: slice) -> list[int]:
        size = rows.stop - rows.start
        if size > 3:  # the device holds at most 3 images at once
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        seen.append(size)
        return list(range(rows.start, rows.stop))

    results, size = run_in_batches(work, 10, 16, lambda old, new: shrinks.append((old, new)))
    assert [i for part in results for i in part] == list(range(10))  # every row once, in order
    assert size == 2 and shrinks == [(16, 8), (8, 4), (4, 2)] and seen == [2, 2, 2, 2, 2]


def test_other_errors_and_out_of_memory_at_size_one_propagate():
    with pytest.raises(ValueError):
        run_in_batches(lambda rows: (_ for _ in ()).throw(ValueError("bad")), 4, 2)
    with pytest.raises(torch.OutOfMemoryError):
        run_in_batches(lambda rows: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")), 4, 4)


def test_attacks_continue_at_half_the_batch_after_a_fake_out_of_memory(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(10, 3, 2, 2), torch.randint(0, 3, (10,))
    fgsm = FGSM(eps=0.1)
    calls = []

    def flaky(model, xb, yb, target=None):
        calls.append(len(xb))
        if len(xb) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fgsm(model, xb, yb)

    flaky.name = "fgsm"
    whole = attack_dataset(fgsm, model, x, y, None, 10, CPU, progress=False)
    halved = attack_dataset(flaky, model, x, y, None, 10, CPU, progress=False)
    assert calls[:2] == [10, 5] and all(c <= 4 for c in calls[2:])
    assert torch.equal(whole.adv_pred, halved.adv_pred) and len(halved.adv) == 10
    assert "out of memory at batch size 10; retrying that batch and continuing at 5" in capsys.readouterr().err


def test_cpu_batch_size_shrinks_to_what_the_available_memory_holds(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4))
    per_image = activation_bytes(model, (3, 16, 16), CPU)
    # outputs of conv, relu, flatten (8x16x16 floats each) and the linear layer (4 floats)
    assert per_image == 4 * (3 * 8 * 16 * 16 + 4)
    monkeypatch.setattr(runtime, "available_memory", lambda device: 1 << 40)
    assert gradient_batch_size(model, (3, 16, 16), CPU, cpu_default=250) == 250
    monkeypatch.setattr(runtime, "available_memory", lambda device: 2 * 3 * per_image * 20)  # room for 20
    assert gradient_batch_size(model, (3, 16, 16), CPU, cpu_default=250) == 16
    monkeypatch.setattr(runtime, "available_memory", lambda device: 10)
    assert gradient_batch_size(model, (3, 16, 16), CPU, cpu_default=250) == 1


# ---- every command that runs a model over a data set: a model that holds at most LIMIT images ----
LIMIT = 8
OOM_FACTORY = f'''
import torch
from torch import nn


class Limited(nn.Module):
    """A linear MNIST classifier whose forward pass "runs out of memory" above `limit` images."""

    def __init__(self, limit, constant=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        if constant:  # always class 0 by a wide margin: certification's counts do not depend on the noise
            nn.init.zeros_(self.net[1].weight)
            with torch.no_grad():
                self.net[1].bias.copy_(torch.arange(10, 0, -1).float() * 10)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {{x.shape[0]}}")
        return self.net(x)


def limited():
    return Limited({LIMIT})


def unlimited():
    return Limited(10 ** 9)


def limited_constant():
    return Limited({LIMIT}, constant=True)


def unlimited_constant():
    return Limited(10 ** 9, constant=True)
'''


@pytest.fixture()
def oom_factory(tmp_path):
    path = tmp_path / "oom_models.py"
    path.write_text(OOM_FACTORY)
    return path


def _run(tmp_path, capsys, argv: list[str], name: str) -> tuple[dict, str]:
    from advlab.cli.main import main

    out = tmp_path / name
    code = main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "metrics.json").read_text()), captured.err


@pytest.mark.parametrize("command", [
    ["accuracy", "{model}", "--n", "40"],
    ["attack", "--model", "{model}", "--attack", "fgsm", "--eps", "0.1", "--n", "40"],
])
def test_commands_halve_the_batch_on_out_of_memory_and_report_the_size_used(tmp_path, capsys, oom_factory, command):
    def argv(factory: str) -> list[str]:
        return [a.replace("{model}", f"{oom_factory}:{factory}") for a in command] + ["--dataset", "mnist",
                                                                                      "--no-progress"]

    free, _ = _run(tmp_path, capsys, argv("unlimited"), "free")
    held, err = _run(tmp_path, capsys, argv("limited"), "held")
    assert free["batch_size"]["batch_size"] >= 40 and free["batch_size"]["out_of_memory_halvings"] == 0
    assert held["batch_size"]["batch_size"] <= LIMIT and held["batch_size"]["out_of_memory_halvings"] >= 1
    assert "out of memory at batch size" in err and f"batch size used: {held['batch_size']['batch_size']}" in err
    for key in ("clean", "attack"):
        if key in free:
            assert {k: v for k, v in held[key].items() if k != "seconds"} == {
                k: v for k, v in free[key].items() if k != "seconds"}


def test_a_given_batch_size_still_halves_and_says_it_did_not_fit(tmp_path, capsys, oom_factory):
    metrics, err = _run(tmp_path, capsys, ["accuracy", f"{oom_factory}:limited", "--dataset", "mnist", "--n", "20",
                                           "--batch-size", "16", "--no-progress"], "given")
    assert metrics["batch_size"] == {"batch_size": 8, "batch_size_start": 16, "batch_size_given": True,
                                     "out_of_memory_halvings": 1}
    assert "out of memory at the given --batch-size 16" in err and "given by --batch-size" in err


def test_evaluate_halves_once_and_equals_a_run_at_the_size_it_ended_with(tmp_path, capsys, oom_factory):
    settings = ["--dataset", "mnist", "--n", "24", "--eps", "0.02,0.1", "--steps", "3", "--restarts", "1",
                "--blackbox-n", "6", "--blackbox-queries", "20", "--unbounded-n", "6", "--effort-n", "6", "--force",
                "--no-progress"]
    held, err = _run(tmp_path, capsys, ["evaluate", f"{oom_factory}:limited", *settings], "held")
    used = held["batch_size"]["batch_size"]
    assert used <= LIMIT and "out of memory at batch size" in err
    free, _ = _run(tmp_path, capsys, ["evaluate", f"{oom_factory}:unlimited", *settings, "--batch-size", str(used)],
                   "free")
    (a,), (b,) = held["evaluations"].values(), free["evaluations"].values()
    for key in ("clean_accuracy", "robust_accuracy", "worst_case"):
        assert a[key] == b[key]


def test_certify_and_detect_halve_on_out_of_memory(tmp_path, capsys, oom_factory):
    certify = ["--dataset", "mnist", "--sigma", "0.25", "--n0", "10", "--n", "50", "--n-images", "3", "--no-progress"]
    free, _ = _run(tmp_path, capsys, ["certify", f"{oom_factory}:unlimited_constant", *certify], "free")
    held, err = _run(tmp_path, capsys, ["certify", f"{oom_factory}:limited_constant", *certify], "held")
    assert free["batch_size"]["batch_size"] >= 50 and held["batch_size"]["batch_size"] <= LIMIT
    assert held["certified_accuracy"] == free["certified_accuracy"] and "batch size used" in err
    from advlab.cli.main import main

    scores = {}
    for factory in ("unlimited", "limited"):
        out = tmp_path / f"{factory}.json"
        assert main(["detect", "--model", f"{oom_factory}:{factory}", "--dataset", "mnist", "--split", "test",
                     "--n", "60", "--layer", "net.0", "--method", "spectral", "--poison-fraction", "0.1",
                     "--out", str(out)]) == 0
        scores[factory] = json.loads(out.read_text())
    assert "batch size used" in capsys.readouterr().err
    assert scores["limited"]["scores"] == scores["unlimited"]["scores"]
    assert scores["limited"]["batch_size"] <= LIMIT < scores["unlimited"]["batch_size"]


def test_library_calls_share_one_batch_size_across_their_loops():
    from advlab.detection import extract_features
    from advlab.evaluation.robust import robust_accuracy
    from advlab.runtime import BatchSize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    calls = []
    forward = model.forward

    def flaky(x):
        calls.append(len(x))
        if len(x) > 3:
            raise RuntimeError("CUDA error: out of memory")
        return forward(x)

    model.forward = flaky
    x, y = torch.rand(10, 3, 2, 2), torch.randint(0, 3, (10,))
    batch = BatchSize(16)
    ev = robust_accuracy(model, x, y, {"fgsm": lambda e: FGSM(eps=e)}, [0.0, 0.1], batch, progress=False)
    assert batch.size == 2 and batch.halvings == 3 and ev.n == 10
    halved = len(calls)
    features = extract_features(model, x, "1", batch)
    assert features.shape == (10, 3) and max(calls[halved:]) <= 2  # the halved size carries over


def test_blackbox_runs_through_an_in_process_oracle_halve_too(tmp_path, capsys, oom_factory):
    settings = ["--dataset", "mnist", "--attack", "square", "--n", "20", "--queries", "10", "--no-progress"]
    held, err = _run(tmp_path, capsys, ["blackbox", "--model", f"{oom_factory}:limited", *settings], "held")
    used = held["batch_size"]["batch_size"]
    assert used <= LIMIT and "out of memory at batch size 100" in err and "black-box runs' default" in err
    free, _ = _run(tmp_path, capsys, ["blackbox", "--model", f"{oom_factory}:unlimited", *settings, "--batch-size",
                                      str(used)], "free")
    drop = ("seconds",)
    assert {k: v for k, v in held["attacks"]["square"].items() if k not in drop} == {
        k: v for k, v in free["attacks"]["square"].items() if k not in drop}
    assert held["curves"] == free["curves"]
