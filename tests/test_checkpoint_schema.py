"""Checkpoints are input (issue 17): metadata is validated against a schema and against the tensor
shapes in the file before anything is built; every model command refuses a lying header in one line."""

from __future__ import annotations

import json
import resource

import pytest
import torch
from safetensors.torch import save_file

from advlab.errors import AdvlabError
from advlab.models import CheckpointMeta, create_model, load_checkpoint, model_args, read_checkpoint
from advlab.models.checkpoint import load_model


def _write(path, meta, model=None) -> str:
    model = model or create_model("mlp", "mnist")
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(path), metadata={"advlab": meta if isinstance(meta, str) else json.dumps(meta)})
    return str(path)


def _good_meta(**changes) -> dict:
    meta = {"architecture": "mlp", "model_args": model_args("mnist", 1, 28, 10), "dataset": "mnist",
            "input_shape": [1, 28, 28], "classes": [str(k) for k in range(10)], "test_accuracy": 0.5}
    meta.update(changes)
    return meta


def _args(**changes) -> dict:
    return {**model_args("mnist", 1, 28, 10), **changes}


LIES = {
    "model_args without mean": ({"model_args": {k: v for k, v in _args().items() if k != "mean"}}, "lacks mean"),
    "model_args a string": ({"model_args": "channels=1"}, "'model_args' must be an object"),
    "hidden of floats 1e6": ({"model_args": _args(hidden=[1e6, 1e6])}, "model_args.hidden"),
    "hidden of 60,000 units (14 GB)": ({"model_args": _args(hidden=[60_000, 60_000])}, "weights do not match"),
    "hidden beyond any bound": ({"model_args": _args(hidden=[10**12])}, "model_args.hidden"),
    "channels a string": ({"model_args": _args(channels="1")}, "model_args.channels"),
    "negative size": ({"model_args": _args(size=-28)}, "model_args.size"),
    "zero classes": ({"model_args": _args(num_classes=0)}, "model_args.num_classes"),
    "mean of the wrong length": ({"model_args": _args(mean=[0.1, 0.2, 0.3])}, "model_args.mean"),
    "std of zero": ({"model_args": _args(std=[0.0])}, "model_args.std"),
    "unknown argument": ({"model_args": _args(depth=3)}, "not an argument of mlp"),
    "unknown architecture": ({"architecture": "resnet9000"}, "'architecture' must be one of"),
    "input_shape lying": ({"input_shape": [3, 32, 32]}, "'input_shape' must be"),
    "classes of the wrong length": ({"classes": ["a", "b"]}, "'classes' must list 10"),
    "test_accuracy a string": ({"test_accuracy": "high"}, "'test_accuracy'"),
    "size the weights do not have": ({"model_args": _args(size=32), "input_shape": [1, 32, 32]},
                                     "weights do not match"),
}


@pytest.mark.parametrize("case", sorted(LIES))
def test_lying_metadata_is_refused_before_anything_is_built(case, tmp_path):
    changes, message = LIES[case]
    path = _write(tmp_path / "m.safetensors", _good_meta(**changes))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AdvlabError, match=message):
        load_checkpoint(path)
    with pytest.raises(AdvlabError, match=message):
        read_checkpoint(path)
    # nothing the size of the lie was allocated (a million-unit hidden layer would be gigabytes)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 200 * 1024  # KiB


def test_nan_in_metadata_and_in_weights_is_refused(tmp_path):
    text = json.dumps(_good_meta()).replace('"mean": [0.1307]', '"mean": [NaN]')
    with pytest.raises(AdvlabError, match="model_args.mean"):
        load_checkpoint(_write(tmp_path / "a.safetensors", text))
    model = create_model("mlp", "mnist")
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(AdvlabError, match="NaN or infinite"):
        load_checkpoint(_write(tmp_path / "b.safetensors", _good_meta(), model))


def test_good_checkpoint_gives_typed_metadata(tmp_path):
    path = _write(tmp_path / "m.safetensors", _good_meta())
    model, info = load_model(path)
    assert isinstance(info, CheckpointMeta)
    assert (info.architecture, info.kind, info.input_shape, info.num_classes) == ("mlp", "classifier", (1, 28, 28), 10)
    assert info.classes == [str(k) for k in range(10)] and info.test_accuracy == 0.5
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # older checkpoints without input_shape/classes still load, with both derived from model_args
    bare = _good_meta()
    del bare["input_shape"], bare["classes"]
    info = read_checkpoint(_write(tmp_path / "bare.safetensors", bare))
    assert info.input_shape == (1, 28, 28) and info.classes[-1] == "9"


COMMANDS = {
    "eval": ["eval", "{ck}"],
    "attack": ["attack", "--model", "{ck}", "--n", "2"],
    "blackbox": ["blackbox", "--model", "{ck}", "--n", "2"],
    "evaluate": ["evaluate", "{ck}", "--n", "2"],
    "certify": ["certify", "{ck}", "--n-images", "1"],
    "physical": ["physical", "--model", "{ck}", "--n", "2"],
    "patch": ["patch", "--model", "{ck}", "--n-train", "2", "--n-test", "2"],
    "autoencoder-attack": ["autoencoder-attack", "--autoencoder", "{ck}", "--n", "2"],
    "serve": ["serve", "{ck}", "--port", "0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_model_command_refuses_a_lying_checkpoint_in_one_line(command, tmp_path, capsys):
    from advlab.cli.main import main

    path = _write(tmp_path / "liar.safetensors", _good_meta(model_args=_args(hidden=[60_000, 60_000])))
    argv = [a.format(ck=path) for a in COMMANDS[command]]
    if command != "serve":
        argv += ["--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights do not match" in err, err
    assert not (tmp_path / "run").exists()
