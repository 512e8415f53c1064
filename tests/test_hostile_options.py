"""Hostile numbers on the command line (issue 17): NaN, infinities, overflowing literals, negatives and
zeros are refused by argparse in one line (exit 2) before any work, by shared types in cli/common.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advlab.cli.main import main
from advlab.errors import AdvlabError

CK = "model.safetensors"  # never opened: every case fails while the arguments are parsed
HOSTILE = [
    ("evaluate", [CK], "--eps", "nan"),
    ("evaluate", [CK], "--eps", "0.1,inf"),
    ("evaluate", [CK], "--eps", "-0.1"),
    ("evaluate", [CK], "--step-size", "0"),
    ("evaluate", [CK], "--blackbox-n", "-1"),
    ("evaluate", [CK], "--seed", str(2**64)),
    ("detect", ["--features", "F.npy", "--labels", "L.npy", "--out", "s.json"], "--max-k", "-1"),
    ("detect", ["--features", "F.npy", "--labels", "L.npy", "--out", "s.json"], "--k", "0"),
    ("detect", ["--features", "F.npy", "--labels", "L.npy", "--out", "s.json"], "--poison-fraction", "nan"),
    ("detect", ["--features", "F.npy", "--labels", "L.npy", "--out", "s.json"], "--m", "-3"),
    ("serve", [CK], "--max-body-mb", "nan"),
    ("serve", [CK], "--max-body-mb", "inf"),
    ("serve", [CK], "--max-body-mb", "0"),
    ("serve", [CK], "--port", "70000"),
    ("serve", [CK], "--header-timeout", "-1"),
    ("physical", [], "--eps", "1e400"),
    ("physical", [], "--eps", "nan"),
    ("physical", [], "--eps", "2"),
    ("patch", [], "--sizes", "0"),
    ("patch", [], "--lr", "nan"),
    ("attack", [], "--eps", "nan"),
    ("attack", [], "--eps", "1e400"),
    ("attack", [], "--step-size", "-0.1"),
    ("attack", [], "--p-init", "1.5"),
    ("blackbox", ["--model", CK], "--eps", "inf"),
    ("blackbox", ["--model", CK], "--p-init", "nan"),
    ("substitute", ["--model", CK], "--lam", "nan"),
    ("substitute", ["--model", CK], "--rounds", "-1"),
    ("transfer", [], "--eps", "nan"),
    ("certify", [CK], "--sigma", "nan"),
    ("certify", [CK], "--alpha", "1"),
    ("certify", [CK], "--sigma", "-1"),
    ("defend", ["--method", "pgd"], "--eps", "nan"),
    ("defend", ["--method", "pgd"], "--steps", "0"),
    ("defend", ["--method", "distill"], "--temperature", "inf"),
    ("defend", ["--method", "noise"], "--sigma", "nan"),
    ("defend", ["--method", "fast"], "--stop-on-overfit", "nan"),
    ("backdoor", [], "--blend-alpha", "nan"),
    ("backdoor", [], "--max-k", "-1"),
    ("backdoor", [], "--lr", "inf"),
    ("autoencoder-attack", [], "--budgets", "nan"),
    ("autoencoder-attack", [], "--penalty", "-1"),
]


@pytest.mark.parametrize(("command", "before", "option", "value"), HOSTILE,
                         ids=[f"{c} {o} {v}" for c, _, o, v in HOSTILE])
def test_hostile_numbers_are_refused_while_parsing(command, before, option, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:  # argparse's own exit, status 2
        main([command, *before, option, value])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {option}" in err, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_robust_accuracy_refuses_nan_eps_in_the_library():
    from advlab.attacks import PGD
    from advlab.evaluation.robust import robust_accuracy
    from advlab.models import create_model

    model = create_model("linear", "mnist")
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    for bad in ([math.nan], [0.1, math.nan], [math.inf]):
        with pytest.raises(AdvlabError, match="finite non-negative"):
            robust_accuracy(model, x, y, {"pgd": lambda e: PGD(eps=e, steps=1)}, bad)


@pytest.mark.parametrize("where", ["folder", "under a file", "/proc"])
def test_detect_refuses_an_out_that_cannot_be_written_before_any_work(where, tmp_path, capsys):
    np.save(tmp_path / "F.npy", np.random.default_rng(0).normal(size=(40, 4)))
    np.save(tmp_path / "L.npy", np.repeat(np.arange(2), 20))
    out = {"folder": str(tmp_path), "under a file": str(tmp_path / "F.npy" / "s.json"), "/proc": "/proc/s.json"}[where]
    argv = ["detect", "--features", str(tmp_path / "F.npy"), "--labels", str(tmp_path / "L.npy"),
            "--poison-fraction", "0.1", "--out", out]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err, err
