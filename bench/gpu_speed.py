"""Throughput of advlab's hot paths against the bare passes they are made of, on one device.

    python bench/gpu_speed.py [--device cuda] [--out bench/results/gpu_speed.json] [--smoke]

For cifar_cnn and preact_resnet18 (CIFAR-10 shapes, random weights: the arithmetic does not depend on
what the weights are), under each setting (fp32, bf16 autocast, each with and without torch.compile),
it measures images per second of:
- the bare floor: one forward and one input-gradient backward pass with frozen weights (what an
  attack step is made of), and one inference forward pass (what certification is made of);
- PGD-10 (advlab's PGD, eps so small that no image breaks, so all 10 steps run on every image),
  per step, and its ratio to the bare forward+backward;
- certification: Smooth.sample_counts (noise drawn on the device, argmax, counts), noisy copies per
  second, and its ratio to the bare forward;
- training: advlab's fit on random CIFAR-shaped data (one epoch after a warm-up epoch), against a bare
  loop of forward, backward and SGD step on device-resident batches.
Every ratio is taken within this one run. --smoke runs everything on tiny sizes (CPU, seconds): the
test suite runs it so the script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from advlab.attacks import PGD
from advlab.data import ImageDataset
from advlab.defenses.smoothing import Smooth
from advlab.models import create_model
from advlab.runtime import autocast, compile_model, resolve_device
from advlab.training import default_config
from advlab.training.trainer import fit

MODELS = ("cifar_cnn", "preact_resnet18")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(work, images: int, device: torch.device, repeats: int) -> float:
    """Images per second of work() after one warm-up call (which also pays for any compilation)."""
    work()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    sync(device)
    return images * repeats / (time.perf_counter() - start)


def measure(name: str, precision: str, compiled: bool, device: torch.device, batch: int, repeats: int,
            train_images: int, backend: str) -> dict:
    torch.manual_seed(0)
    base = create_model(name, "cifar10").to(device).to(memory_format=torch.channels_last).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    model = compile_model(base, backend) if compiled else base
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def forward_backward():
        xg = x.detach().requires_grad_(True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(xg), y)
        torch.autograd.grad(loss, xg)

    def forward():
        with torch.inference_mode(), autocast(device, precision):
            model(x).argmax(1)

    pgd = PGD(eps=1e-6, steps=10, step_size=1e-7)

    def pgd10():
        with autocast(device, precision):
            pgd(model, x, y)

    smooth = Smooth(model, 10, 0.25)
    generator = torch.Generator(device=device).manual_seed(0)

    def certify():
        with autocast(device, precision):
            smooth.sample_counts(x[0], batch * 4, batch * 4, generator)

    row = {"model": name, "precision": precision, "compile": compiled, "batch": batch}
    row["bare_fwd_bwd"] = rate(forward_backward, batch, device, repeats)
    row["bare_forward"] = rate(forward, batch, device, repeats)
    row["pgd_step"] = rate(pgd10, batch * 10, device, max(repeats // 5, 1))
    row["certify"] = rate(certify, batch * 4, device, max(repeats // 2, 1))
    row["pgd_step_over_floor"] = row["bare_fwd_bwd"] / row["pgd_step"]  # time ratio: 1.0 is the floor
    row["certify_over_forward"] = row["certify"] / row["bare_forward"]  # throughput ratio: 1.0 is the floor
    row.update(train_rates(name, precision, compiled, device, batch, train_images, backend))
    return row


def train_rates(name: str, precision: str, compiled: bool, device: torch.device, batch: int, images: int,
                backend: str) -> dict:
    """advlab's fit against a bare training loop, images per second, one epoch after a warm-up epoch."""
    generator = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator),
                        torch.randint(0, 10, (images,), generator=generator), [str(i) for i in range(10)], "random")
    config = default_config("cifar10", model=name, epochs=1, batch_size=batch, augment=True, precision=precision)
    model = create_model(name, "cifar10")
    fit(model, data, config, device, progress=False, compile=compiled)  # warm-up (and compilation)
    sync(device)
    start = time.perf_counter()
    fit(model, data, config, device, progress=False, compile=compiled)
    sync(device)
    advlab_rate = images / (time.perf_counter() - start)

    model = create_model(name, "cifar10").to(device).to(memory_format=torch.channels_last).train()
    stepper = compile_model(model, backend) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    resident = data.images.to(device)
    labels = data.labels.to(device)

    def epoch():
        for i in range(0, images, batch):
            xb = resident[i:i + batch].float().div_(255).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                loss = F.cross_entropy(stepper(xb), labels[i:i + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    bare_rate = rate(epoch, images, device, 1)
    return {"train": advlab_rate, "bare_train": bare_rate, "train_over_floor": bare_rate / advlab_rate}


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "python": platform.python_version(),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    return env


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU-friendly: checks the script runs")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.smoke:
        batch, repeats, train_images, backend = 4, 1, 8, "eager"
        settings = [("fp32", False), ("bf16", False)]  # compilation is tested on its own (tests)
    else:
        batch, repeats, train_images, backend = 512, 20, 20_480, "inductor"
        settings = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    rows = []
    for name in args.models.split(","):
        for precision, compiled in settings:
            began = time.perf_counter()
            row = measure(name, precision, compiled, device, batch, repeats, train_images, backend)
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
            print(f"{name:16s} {precision} compile={compiled!s:5s} fwd+bwd {row['bare_fwd_bwd']:9.0f} img/s, "
                  f"PGD step {row['pgd_step_over_floor']:.3f}x the floor, certify {row['certify_over_forward']:.3f} "
                  f"of forward, training {row['train_over_floor']:.3f}x the bare loop", flush=True)
    result = {"environment": environment(device), "smoke": args.smoke, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
