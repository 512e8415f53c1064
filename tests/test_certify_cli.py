"""advlab defend --method noise and advlab certify: run folders, user errors, torchrun sharding, demo section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advlab.cli.main import main
from advlab.defenses.smoothing import radius_ceiling
from advlab.models import read_metadata


@pytest.fixture(scope="module")
def noisy_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("defend")
    path = out / "noisy.safetensors"
    # the same config as the demo section's --quick model, so the demo test takes it from the cache
    code = main(["defend", "--method", "noise", "--sigma", "0.25", "--model", "lenet", "--epochs", "1",
                 "--train-subset", "3000", "--lr", "3e-3", "--checkpoint", str(path), "--out", str(out / "run"),
                 "--no-progress"])
    assert code == 0
    return path


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def test_defend_noise_records_the_recipe(noisy_checkpoint):
    meta = read_metadata(noisy_checkpoint)
    assert meta["recipe"] == {"method": "noise", "sigma": 0.25}
    assert meta["train_config"]["train_subset"] == 3000
    run = json.loads((noisy_checkpoint.parent / "run" / "metrics.json").read_text())
    assert run["recipe"] == meta["recipe"] and run["test_accuracy"] > 0.5


def test_defend_without_sigma_is_a_one_line_user_error(tmp_path, capsys):
    assert main(["defend", "--method", "noise", "--model", "lenet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sigma" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_certify_writes_table_json_plot_and_per_image_records(noisy_checkpoint, tmp_path, capsys):
    out = tmp_path / "cert"
    code = main(["certify", str(noisy_checkpoint), "--n0", "20", "--n", "300", "--alpha", "0.001", "--n-images", "6",
                 "--skip", "3", "--batch-size", "150", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and "cert.acc" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["sigma"] == 0.25 and config["trained_sigma"] == 0.25  # taken from the checkpoint's recipe
    records = metrics["records"]
    assert [r["index"] for r in records] == [0, 3, 6, 9, 12, 15]
    ceiling = radius_ceiling(0.25, 300, 0.001)
    assert metrics["radius_ceiling"] == pytest.approx(ceiling)
    for r in records:
        assert 0 <= r["radius"] <= ceiling + 1e-9
        assert r["correct"] == (r["prediction"] == r["label"])
        assert (r["prediction"] == -1) == (r["radius"] == 0)
    acc = metrics["certified_accuracy"]
    assert acc["0"] == pytest.approx(sum(r["correct"] for r in records) / 6)
    assert acc["0"] >= acc["0.25"] >= acc["0.5"] >= acc["0.75"] >= acc["1"]
    assert acc["0"] > 0.5 and metrics["images_per_second"] > 0
    assert len(read_tsv(out / "certification.tsv")) == 6
    assert (out / "figures" / "certify_curve.png").stat().st_size > 1000
    assert "Certified robustness" in (out / "report.html").read_text()


@pytest.mark.parametrize("extra,message", [
    (["--alpha", "0"], "--alpha"),
    (["--sigma", "-1"], "--sigma"),
    (["--dataset", "cifar10"], "shape"),
])
def test_certify_user_errors_are_one_line_and_leave_nothing(noisy_checkpoint, tmp_path, capsys, extra, message):
    out = tmp_path / "cert"
    try:
        code = main(["certify", str(noisy_checkpoint), "--n", "10", "--n-images", "1", "--out", str(out), *extra])
    except SystemExit as exc:  # argparse's own errors (--alpha, --sigma are checked while parsing)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_certify_refuses_a_plain_model_without_sigma(lenet_mnist, tmp_path, capsys):
    _, _, path = lenet_mnist
    assert main(["certify", str(path), "--n", "10", "--n-images", "1", "--out", str(tmp_path / "c")]) == 2
    assert "--sigma" in capsys.readouterr().err
    assert main(["certify", str(tmp_path / "missing.safetensors"), "--sigma", "0.25"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_torchrun_sharded_certification_equals_one_process(noisy_checkpoint, tmp_path):
    """Two processes under torchrun (gloo) produce exactly the per-image results of one process."""
    common = [str(noisy_checkpoint), "--n0", "20", "--n", "200", "--n-images", "7", "--skip", "2",
              "--batch-size", "200", "--seed", "5", "--no-progress"]
    assert main(["certify", *common, "--out", str(tmp_path / "one")]) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "advlab.cli.main",
                           "--", "certify", *common, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = read_tsv(tmp_path / "one" / "certification.tsv"), read_tsv(tmp_path / "two" / "certification.tsv")
    assert [row[:5] for row in two] == [row[:5] for row in one]  # idx, label, prediction, radius, correct
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2


def test_demo_section_adds_a_certified_accuracy_curve(noisy_checkpoint, tmp_path, mnist_train, mnist_test):
    from advlab.demo import DemoContext
    from advlab.demo.certify import DEMO_ORDER, demo_section
    from advlab.report.run import RunDir

    assert DEMO_ORDER == 50
    with RunDir(tmp_path / "demo", "demo", {}) as run_dir:
        ctx = DemoContext(run_dir, None, {}, mnist_train, mnist_test, torch.device("cpu"), quick=True,
                          progress=False)
        demo_section(ctx)
        out = run_dir.commit()
    cert = json.loads((out / "metrics.json").read_text())["certify"]
    assert cert["images"] == 10 and cert["train_config"]["recipe"]["method"] == "noise"
    assert cert["cached"]  # the noisy_checkpoint fixture trained this very config
    assert cert["certified_accuracy"]["0"] > 0.5
    assert (out / "figures" / "certify_curve.png").is_file()
