"""Time of one training step of mnist_cnn (batch 100, one thread): fast training from a random start, from a
carried start, and GradAlign.

    .venv/bin/python bench/fast_step_time.py

GradAlign's penalty needs the input gradient at x + eta with its graph kept, and a second-order backward
through it; the carried start reads and writes each batch's rows of a store of 60,000 perturbations. This
measures what each costs against Wong et al.'s single step, as ratios within one run.
"""

from __future__ import annotations

import time

import torch

from advlab.defenses.adversarial import adversarial_loss, fast_recipe, gradalign_recipe
from advlab.models import create_model

TRAIN_IMAGES = 60_000  # MNIST's training set: the carried start's store


def seconds_per_step(recipe: dict, x: torch.Tensor, y: torch.Tensor, warmup: int = 5, steps: int = 50) -> float:
    model = create_model("mnist_cnn")
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batch_loss = adversarial_loss(recipe, train_images=TRAIN_IMAGES)
    generator = torch.Generator().manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        if getattr(batch_loss, "takes_index", False):
            index = torch.randperm(TRAIN_IMAGES, generator=generator)[: len(x)]
            loss, _ = batch_loss(model, x, y, index=index)
        else:
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
    carry = seconds_per_step(fast_recipe(0.3, step_size=0.15, start="carry"), x, y)
    align = seconds_per_step(gradalign_recipe(0.3, 1.0, step_size=0.375, random_start=True), x, y)
    print(f"fast {fast:.3f} s/step; carried start {carry:.3f} s/step: {carry / fast:.2f}x; "
          f"gradalign {align:.3f} s/step: {align / fast:.2f}x")


if __name__ == "__main__":
    main()
