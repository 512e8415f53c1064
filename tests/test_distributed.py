"""`advlab train` and `advlab defend` under torchrun with two gloo processes on the CPU match one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from advlab.models import load_checkpoint

ARGS = ["train", "--model", "linear", "--epochs", "2", "--train-subset", "1024", "--batch-size", "64",
        "--device", "cpu", "--no-progress", "--force"]


def _train(tmp_path: Path, name: str, launcher: list[str], args: list[str] = ARGS) -> tuple[torch.nn.Module, dict]:
    env = {**os.environ, "ADVLAB_CACHE": str(tmp_path / f"cache-{name}"), "OMP_NUM_THREADS": "1"}
    ckpt = tmp_path / f"{name}.safetensors"
    proc = subprocess.run([*launcher, "-m", "advlab.cli.main", *args, "--checkpoint", str(ckpt),
                           "--out", str(tmp_path / f"run-{name}")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load_checkpoint(ckpt)


def test_two_gloo_processes_follow_the_single_process_trajectory(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    single, meta1 = _train(tmp_path, "single", [sys.executable])
    double, meta2 = _train(tmp_path, "ddp", [torchrun, "--standalone", "--nproc_per_node", "2"])
    assert meta1["processes"] == 1 and meta2["processes"] == 2
    # same global batches, gradients averaged over the two halves: equal up to summation order
    for a, b in zip(single.parameters(), double.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert abs(meta1["test_accuracy"] - meta2["test_accuracy"]) < 0.01
    # one writer: exactly one run folder, published whole
    assert (tmp_path / "run-ddp" / "report.html").is_file()
    assert not list(tmp_path.glob(".run-ddp.partial-*"))


def test_defenses_run_unchanged_under_torchrun(tmp_path):
    """Distillation (teacher, then student) is deterministic: equal to one process up to summation
    order. PGD training draws its random starts per process, so it matches within noise; so does
    GradAlign, whose penalty's second-order backward goes through DDP's one synchronized backward."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    distill = ["defend", "--method", "distill", "--temperature", "10", *ARGS[1:]]
    single, meta1 = _train(tmp_path, "distill-single", [sys.executable], distill)
    double, meta2 = _train(tmp_path, "distill-ddp", [torchrun, "--standalone", "--nproc_per_node", "2"], distill)
    assert meta2["recipe"] == {"method": "distill", "temperature": 10.0} and meta2["processes"] == 2
    for a, b in zip(single.parameters(), double.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()
    pgd = ["defend", "--method", "pgd", "--eps", "0.1", "--steps", "3", *ARGS[1:]]
    _, meta3 = _train(tmp_path, "pgd-single", [sys.executable], pgd)
    _, meta4 = _train(tmp_path, "pgd-ddp", [torchrun, "--standalone", "--nproc_per_node", "2"], pgd)
    assert meta4["recipe"]["method"] == "pgd" and meta4["processes"] == 2
    assert abs(meta3["test_accuracy"] - meta4["test_accuracy"]) < 0.03
    gradalign = ["defend", "--method", "gradalign", "--eps", "0.1", "--align-weight", "2", *ARGS[1:]]
    _, meta5 = _train(tmp_path, "gradalign-single", [sys.executable], gradalign)
    _, meta6 = _train(tmp_path, "gradalign-ddp", [torchrun, "--standalone", "--nproc_per_node", "2"], gradalign)
    assert meta6["recipe"]["method"] == "gradalign" and meta6["processes"] == 2
    assert abs(meta5["test_accuracy"] - meta6["test_accuracy"]) < 0.03
