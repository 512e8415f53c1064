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
    carry = ["defend", "--method", "fast", "--fgsm-start", "carry", "--eps", "0.1", *ARGS[1:]]
    _, meta7 = _train(tmp_path, "carry-single", [sys.executable], carry)
    _, meta8 = _train(tmp_path, "carry-ddp", [torchrun, "--standalone", "--nproc_per_node", "2"], carry)
    assert meta8["recipe"]["start"] == "carry" and meta8["processes"] == 2
    assert abs(meta7["test_accuracy"] - meta8["test_accuracy"]) < 0.03


def test_no_option_of_train_or_defend_is_taken_by_torchrun():
    """torchrun's parser takes any unambiguous prefix of its own options from the whole command line, even
    after the script (--start would be read as --start-method), so train and defend avoid them and run
    unchanged; certify's --n needs a `--` before the command (docs/certification.md)."""
    import argparse

    from torch.distributed.run import get_args_parser

    from advlab.cli.main import build_parser

    theirs = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    ours = {o for name in ("train", "defend") for a in commands[name]._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}
    assert ours and not [o for o in ours if any(t.startswith(o) for t in theirs)]


GATHER = """
import torch, torch.distributed as dist
from advlab.training import distributed
dist.init_process_group("gloo")
rank = dist.get_rank()
n = 3 if rank == 0 else 2  # unequal shares, as the last batch of an epoch gives
index = torch.arange(n) + 10 * rank
index, rows = distributed.all_gather_rows(index, index[:, None].float() * torch.ones(n, 4))
with open(f"gathered-{rank}.txt", "w") as out:
    out.write(f"{index.tolist()} {rows[:, 0].tolist()}")
dist.destroy_process_group()
"""


def test_all_gather_rows_joins_unequal_shares_in_rank_order(tmp_path):
    """The carried start's exchange: every process ends up with every process's rows, trimmed of padding."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = "[0, 1, 2, 10, 11] [0.0, 1.0, 2.0, 10.0, 11.0]"
    assert [(tmp_path / f"gathered-{rank}.txt").read_text() for rank in (0, 1)] == [expected, expected]
