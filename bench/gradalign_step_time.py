"""Time of one training step of mnist_cnn (batch 100, one thread) with the fast recipe and with GradAlign.

    .venv/bin/python bench/gradalign_step_time.py

GradAlign's penalty needs the input gradient at x + eta with its graph kept, and a second-order backward
through it; this measures what that costs against Wong et al.'s single step, as a ratio within one run.
"""

from __future__ import annotations

import time

import torch

from advlab.defenses.adversarial import adversarial_loss, fast_recipe, gradalign_recipe
from advlab.models import create_model


def seconds_per_step(recipe: dict, x: torch.Tensor, y: torch.Tensor, warmup: int = 5, steps: int = 20) -> float:
    model = create_model("mnist_cnn")
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batch_loss = adversarial_loss(recipe)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss, _ = batch_loss(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(100, 1, 28, 28).round().contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (100,))
    fast = seconds_per_step(fast_recipe(0.3), x, y)
    align = seconds_per_step(gradalign_recipe(0.3, 1.0, step_size=0.375, random_start=True), x, y)
    print(f"fast {fast:.3f} s/step, gradalign {align:.3f} s/step: {align / fast:.2f}x")


if __name__ == "__main__":
    main()
