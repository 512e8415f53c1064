"""The GPU speed options (docs/gpu.md), checked on the CPU: bf16 autocast, torch.compile, batch sizes
found by halving, where training data lives, and that none of them changes what is reported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.attacks import PGD
from advlab.cli.main import main
from advlab.defenses.smoothing import noise_batch_size
from advlab.errors import AdvlabError
from advlab.runtime import autocast, compile_model, largest_batch, place_images
from advlab.training import default_config
from advlab.training.cache import config_hash

ROOT = Path(__file__).resolve().parents[1]


def test_fp32_is_left_out_of_the_config_so_earlier_hashes_hold():
    config = default_config("mnist", model="lenet", epochs=1)
    assert "precision" not in config.to_dict()
    bf16 = default_config("mnist", model="lenet", epochs=1, precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16"
    assert config_hash(bf16) != config_hash(config)


def test_unknown_precision_is_a_user_error():
    with pytest.raises(AdvlabError, match="unknown precision 'fp16'"):
        default_config("mnist", precision="fp16")
    with pytest.raises(AdvlabError, match="unknown precision"):
        autocast(torch.device("cpu"), "half")


class Scaled(nn.Module):
    """A linear classifier whose two logits differ by less than bf16 can resolve on some inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0 + 1e-3]]))
            self.linear.bias.copy_(torch.tensor([0.0, -5e-4]))

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_attack_success_is_judged_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = Scaled()
    x = torch.rand(64, 1, 2, 2)
    y = torch.zeros(64, dtype=torch.long)
    with autocast(torch.device("cpu"), "bf16"):
        result = PGD(eps=0.01, steps=3)(model, x, y)
    with torch.no_grad():
        assert torch.equal(result.adv_pred, model(result.adv).argmax(1))
        assert torch.equal(result.clean_pred, model(x).argmax(1))


def test_largest_batch_halves_on_out_of_memory_and_keeps_other_errors():
    tried = []

    def work(size):
        tried.append(size)
        if size > 100:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return size * 2

    assert largest_batch(work, 1000) == (62, 124)
    assert tried == [1000, 500, 250, 125, 62]

    def broken(size):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        largest_batch(broken, 64)


def test_cpu_paths_are_unchanged():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    assert place_images(images, torch.device("cpu")) is images
    assert noise_batch_size(nn.Linear(1, 1), (1, 28, 28), torch.device("cpu")) == 1000
    assert noise_batch_size(nn.Linear(1, 1), (1, 28, 28), torch.device("cpu"), ceiling=50) == 50


def test_compiled_model_shares_parameters_and_outputs():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    compiled = compile_model(model, backend="eager")  # inductor needs a compiler and minutes on a CPU
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(compiled(x), model(x))
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in model.parameters()}


def test_bf16_training_records_its_precision_and_attack_cli_takes_the_flag(tmp_path, lenet_mnist):
    _, _, checkpoint = lenet_mnist
    out = tmp_path / "attack"
    assert main(["attack", "--model", str(checkpoint), "--attack", "pgd", "--eps", "0.3", "--steps", "3",
                 "--n", "16", "--precision", "bf16", "--out", str(out), "--no-progress"]) == 0
    assert '"precision": "bf16"' in (out / "config.json").read_text()
    from advlab.training import train_model

    config = default_config("mnist", model="lenet", epochs=1, train_subset=256, precision="bf16")
    model, meta, _, _ = train_model(config, torch.device("cpu"), progress=False)
    assert meta["train_config"]["precision"] == "bf16"
    assert 0.0 <= meta["test_accuracy"] <= 1.0


def test_unknown_precision_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "--model", "lenet", "--precision", "fp16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'fp16'" in err and len(err.splitlines()) == 1


def test_gpu_speed_bench_runs_in_smoke_mode(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_speed
    finally:
        sys.path.pop(0)
    result = gpu_speed.main(["--smoke", "--device", "cpu", "--models", "cifar_cnn", "--out", str(tmp_path / "s.json")])
    assert result["smoke"] and len(result["rows"]) == 2
    for row in result["rows"]:
        assert row["pgd_step_over_floor"] > 0 and row["certify_over_forward"] > 0 and row["train_over_floor"] > 0
    assert (tmp_path / "s.json").is_file()
