"""Batch sizes picked to fit memory (issue 19): halving on out-of-memory (a fake one) and the CPU's
estimate from the activations and the available memory."""

from __future__ import annotations

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
    assert "out of memory at batch size 10; continuing at 5" in capsys.readouterr().out


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
