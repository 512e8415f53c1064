"""`advlab train` under torchrun with two gloo processes on the CPU matches one process."""

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


def _train(tmp_path: Path, name: str, launcher: list[str]) -> tuple[torch.nn.Module, dict]:
    env = {**os.environ, "ADVLAB_CACHE": str(tmp_path / f"cache-{name}"), "OMP_NUM_THREADS": "1"}
    ckpt = tmp_path / f"{name}.safetensors"
    proc = subprocess.run([*launcher, "-m", "advlab.cli.main", *ARGS, "--checkpoint", str(ckpt),
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
