"""The advlab command end to end on tiny budgets, and its behaviour on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from advlab.cli.main import main

TINY = ["--model", "lenet", "--epochs", "1", "--train-subset", "600", "--no-progress"]


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("--help")
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "demo", "report"):
        assert command in out
    for command in ("train", "eval", "demo", "report"):
        with pytest.raises(SystemExit):
            run_cli(command, "--help")
        assert "usage: advlab " + command in capsys.readouterr().out


def test_train_writes_a_run_folder_and_the_second_run_is_cached(tmp_path, capsys):
    ckpt = tmp_path / "lenet.safetensors"
    assert run_cli("train", *TINY, "--out", tmp_path / "run1", "--checkpoint", ckpt) == 0
    assert "trained lenet" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert metrics["cached"] is False and 0.0 < metrics["test_accuracy"] <= 1.0
    assert (tmp_path / "run1" / "figures" / "training.png").is_file() and ckpt.is_file()
    assert run_cli("train", *TINY, "--out", tmp_path / "run2") == 0
    assert "cached lenet" in capsys.readouterr().out
    assert json.loads((tmp_path / "run2" / "metrics.json").read_text())["checkpoint"] == metrics["checkpoint"]

    assert run_cli("eval", ckpt, "--n", 300, "--out", tmp_path / "eval", "--no-progress") == 0
    clean = json.loads((tmp_path / "eval" / "metrics.json").read_text())["clean"]
    assert clean["n"] == 300 and len(clean["confusion_matrix"]) == 10
    assert sum(map(sum, clean["confusion_matrix"])) == 300
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "Clean accuracy" in html and "data:image/png;base64," in html
    assert "<code>eval</code>" in html and "partial" not in html  # the published name, not the temporary one

    (tmp_path / "eval" / "report.html").unlink()
    assert run_cli("report", tmp_path / "eval") == 0
    assert (tmp_path / "eval" / "report.html").is_file()


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "resnet9000", "--epochs", "1"], "unknown model 'resnet9000'"),
    (["train", "--dataset", "imagenet", "--epochs", "1"], "unknown dataset 'imagenet'"),
    (["eval", "missing.safetensors"], "does not exist"),
    (["eval", "lenet", "--device", "tpu"], "unknown device"),
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--lr", "-3", "--epochs", "1"], "learning rate"),
    (["report", "nowhere"], "does not exist"),
    (["eval", "lenet", "--dataset", "cifar10", "--data-dir", "EMPTY"], "CIFAR-10 test split not found"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "EMPTY")) for a in argv]
    try:
        code = run_cli(*argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_checkpoint_of_another_dataset_is_refused(tmp_path, capsys, lenet_mnist, data_dir):
    _, _, path = lenet_mnist
    out = tmp_path / "run"
    code = run_cli("eval", path, "--dataset", "cifar10", "--n", 10, "--out", out)
    err = capsys.readouterr().err
    assert code == 2 and "takes images of shape (1, 28, 28)" in err and "pass the matching --dataset" in err
    assert not out.exists() and not list(tmp_path.glob(".run.partial-*"))


def test_corrupt_checkpoint_through_the_real_entry_point(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "advlab.cli.main", "eval", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("advlab: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_out_that_is_not_a_run_folder_is_refused(tmp_path, capsys, lenet_mnist):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    assert run_cli("eval", lenet_mnist[2], "--n", 50, "--out", tmp_path / "precious") == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"
