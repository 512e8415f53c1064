"""advlab attack: run folder, JSON metrics, targeted runs, and one-line user errors."""

from __future__ import annotations

import json

from advlab.cli.main import main


def test_attack_cli_writes_run_folder_and_json(lenet_mnist, tmp_path, capsys):
    _, _, checkpoint = lenet_mnist
    out, js = tmp_path / "run", tmp_path / "m.json"
    code = main(["attack", "--model", str(checkpoint), "--attack", "pgd", "--eps", "0.3", "--steps", "10",
                 "--n", "12", "--out", str(out), "--json", str(js), "--no-progress"])
    assert code == 0
    metrics = json.loads(js.read_text())
    assert metrics["n"] == 12 and metrics["config"]["attack"] == "pgd"
    assert metrics["median_norms_of_successes_on_correct"]["linf"] <= 0.3 + 1e-6
    assert metrics["robust_accuracy"] <= metrics["clean_accuracy"]
    assert (out / "report.html").exists() and (out / "figures" / "pgd_triptych.png").exists()
    assert "robust accuracy" in capsys.readouterr().out


def test_attack_cli_targeted_and_minimal_norm_curve(lenet_mnist, tmp_path):
    _, _, checkpoint = lenet_mnist
    js = tmp_path / "t.json"
    code = main(["attack", "--model", str(checkpoint), "--attack", "deepfool", "--norm", "l2", "--targeted",
                 "--target-class", "3", "--n", "10", "--out", str(tmp_path / "r"), "--json", str(js),
                 "--no-progress"])
    assert code == 0
    metrics = json.loads(js.read_text())
    assert metrics["targeted"] and metrics["success_rate"] >= 0.9
    assert (tmp_path / "r" / "figures" / "deepfool_curve.png").exists()


def test_attack_cli_user_errors_exit_2_without_run_folder(lenet_mnist, tmp_path, capsys):
    _, _, checkpoint = lenet_mnist
    for argv in (["--attack", "pgd", "--eps", "1.5"], ["--attack", "cw", "--norm", "linf"],
                 ["--attack", "pgd", "--target-class", "3"], ["--attack", "pgd", "--targeted", "--target-class", "x"]):
        out = tmp_path / "never"
        code = main(["attack", "--model", str(checkpoint), "--n", "4", "--out", str(out), "--no-progress", *argv])
        assert code == 2
        assert not out.exists()
        err = capsys.readouterr().err
        assert err.startswith("advlab: error:") and "Traceback" not in err
