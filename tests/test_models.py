"""Models: shapes, normalization inside, checkpoints that round-trip and refuse mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from advlab.errors import AdvlabError
from advlab.models import ARCHITECTURES, Normalize, create_model, load_checkpoint, model_args, save_checkpoint


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_maps_pixels_to_the_right_shape(name):
    dataset = "cifar10" if name in ("cifar_cnn", "preact_resnet18") else "mnist"
    model = create_model(name, dataset).eval()
    shape = (2, 3, 32, 32) if dataset == "cifar10" else (2, 1, 28, 28)
    out = model(torch.rand(shape))
    if ARCHITECTURES[name].kind == "classifier":
        assert out.shape == (2, 10)
    else:
        assert out.shape == shape and 0 <= out.min() and out.max() <= 1
    first = next(m for m in model.modules() if not list(m.children()))
    assert isinstance(first, Normalize), "normalization must be the first layer"


def test_normalization_is_inside_the_model():
    model = create_model("linear", "mnist")
    x = torch.rand(3, 1, 28, 28)
    linear = model[2]
    expected = linear(((x - 0.1307) / 0.3081).flatten(1))
    assert torch.allclose(model(x), expected, atol=1e-6)


def _meta(name="lenet"):
    return {"architecture": name, "model_args": model_args("mnist", 1, 28, 10), "dataset": "mnist"}


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = create_model("lenet", "mnist").eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, {**_meta(), "test_accuracy": 0.5})
    loaded, meta = load_checkpoint(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta["test_accuracy"] == 0.5 and meta["advlab_version"]
    assert not loaded.training


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    weights = {k: v.contiguous() for k, v in create_model("lenet", "mnist").state_dict().items()}
    path = tmp_path / "liar.safetensors"
    save_file(weights, str(path), metadata={"advlab": json.dumps(_meta("mnist_cnn"))})
    with pytest.raises(AdvlabError, match="weights do not match architecture 'mnist_cnn'"):
        load_checkpoint(path)


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", create_model("lenet", "mnist"), _meta())
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(AdvlabError, match="corrupt, truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "f.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(AdvlabError, match="not an advlab checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x80\x04pickle-or-garbage")
    with pytest.raises(AdvlabError, match="not a safetensors file"):
        load_checkpoint(garbage)
    with pytest.raises(AdvlabError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(AdvlabError, match="unknown model 'resnet9000'; choose one of .*mnist_cnn"):
        create_model("resnet9000")
