"""Model specs: each kind round-trips on a tiny model; every bad input is one line and exit code 2."""

from __future__ import annotations

import builtins
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from advlab.cli.main import build_parser, main
from advlab.errors import AdvlabError
from advlab.models import Normalize, SpecOptions, load_spec
from advlab.models.onnx import OPERATORS

FACTORY = '''
import torch
from torch import nn


def tiny(num_classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, num_classes))


def broken():
    raise ValueError("the factory needs a config file")


def not_a_module():
    return 42
'''


@pytest.fixture()
def tiny(tmp_path):
    """A factory file, the model it builds with non-trivial batch-norm statistics, and its weights
    as .safetensors and as a .pt state dict."""
    path = tmp_path / "tinynet.py"
    path.write_text(FACTORY)
    namespace: dict = {}
    exec(compile(FACTORY, str(path), "exec"), namespace)
    model = namespace["tiny"]()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    model.eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return path, model


def images(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def input_gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    logits = model(x)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return x.grad


def cli_error(argv: list[str], capsys) -> str:
    """Run advlab; it must fail with exit code 2 and exactly one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("weights", ["w.safetensors", "w.pt"])
def test_factory_with_weights_round_trips(tiny, weights):
    path, model = tiny
    loaded, info = load_spec(f"{path}:tiny", SpecOptions(weights=str(path.parent / weights)),
                             default_shape=(1, 28, 28))
    x = images()
    assert info.kind == "factory" and info.num_classes == 10 and info.input_shape == (1, 28, 28)
    assert info.mean is None  # nothing in front unless asked
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_module_factory_and_num_classes(tiny, monkeypatch):
    path, _ = tiny
    monkeypatch.syspath_prepend(str(path.parent))
    loaded, info = load_spec("tinynet:tiny", SpecOptions(num_classes=3), default_shape=(1, 28, 28))
    assert info.num_classes == 3 and loaded(images()).shape == (5, 3)


def test_torchscript_round_trips_with_gradients(tiny):
    path, model = tiny
    archive = path.parent / "tiny.pt"
    torch.jit.save(torch.jit.script(model), str(archive))
    loaded, info = load_spec(str(archive), SpecOptions(input_shape=(1, 28, 28)))
    x = images()
    assert info.kind == "torchscript" and info.num_classes == 10
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(input_gradient(loaded, x), input_gradient(model, x), rtol=0, atol=1e-6)


def test_onnx_round_trips_with_gradients(tiny):
    path, model = tiny
    file = path.parent / "tiny.onnx"
    torch.onnx.export(model, (images(1),), str(file), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    loaded, info = load_spec(str(file))
    x = images()
    assert info.kind == "onnx" and info.input_shape == (1, 28, 28) and info.num_classes == 10
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(input_gradient(loaded, x), input_gradient(model, x), rtol=0, atol=1e-5)


def test_onnx_operators_match_pytorch_on_a_wider_graph(tmp_path):
    """Average pooling, global pooling, batch norm kept as a node (training-mode export keeps it),
    Gemm, Sigmoid/Tanh/Gelu/Softmax, Concat, Transpose, Reshape: each op's output equals PyTorch's."""

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1, groups=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            h = torch.tanh(self.bn(self.conv(x)))
            a = nn.functional.avg_pool2d(h, 2, ceil_mode=True)
            b = torch.sigmoid(nn.functional.max_pool2d(h, 3, stride=2, padding=1))
            pooled = torch.cat([a.mean((2, 3)), b.amax((2, 3)).transpose(0, 1).transpose(0, 1)], dim=1)
            return nn.functional.softmax(nn.functional.gelu(self.fc(pooled.reshape(x.shape[0], -1))), dim=1)

    model = Wide().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    file = tmp_path / "wide.onnx"
    x = torch.rand(3, 3, 9, 9)
    torch.onnx.export(model, (x,), str(file), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                      do_constant_folding=False)
    loaded, _ = load_spec(str(file))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_timm_state_dict_round_trips_with_its_normalization(tmp_path):
    from advlab.models.spec import import_timm

    timm = import_timm()
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "net.pth")
    loaded, info = load_spec("timm:test_resnet", SpecOptions(weights=str(tmp_path / "net.pth"),
                                                             input_shape=(3, 32, 32)))
    config = net.pretrained_cfg
    assert info.num_classes == 4  # read from the head's weights
    assert info.mean == tuple(config["mean"]) and info.std == tuple(config["std"])
    assert isinstance(loaded[0], Normalize)
    x = torch.rand(2, 3, 32, 32)
    expected = net((x - torch.tensor(config["mean"]).view(1, 3, 1, 1)) / torch.tensor(config["std"]).view(1, 3, 1, 1))
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=1e-5)


def test_mean_std_prepend_normalize(tiny):
    path, model = tiny
    loaded, info = load_spec(f"{path}:tiny", SpecOptions(weights=str(path.parent / "w.pt"), mean=(0.25,),
                                                         std=(0.5,)), default_shape=(1, 28, 28))
    assert isinstance(loaded[0], Normalize) and info.mean == (0.25,) and info.std == (0.5,)
    x = images()
    torch.testing.assert_close(loaded(x), model((x - 0.25) / 0.5), rtol=0, atol=0)


def test_inspect_prints_what_was_found_and_checks_the_data(tiny, capsys, tmp_path):
    path, _ = tiny
    out = tmp_path / "summary.json"
    assert main(["inspect", f"{path}:tiny", "--weights", str(path.parent / "w.pt"), "--dataset", "mnist",
                 "--mean", "0.1307", "--std", "0.3081", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1x28x28" in text and "mean [0.1307]" in text and "fits mnist" in text
    summary = json.loads(out.read_text())
    assert summary["output_shape"] == [2, 10] and summary["parameters"] == sum(p.numel() for p in tiny[1].parameters())
    assert [layer["name"] for layer in summary["layers"]][:3] == ["0", "1", "1.0"]  # Normalize, then the model


def test_commands_take_a_spec_end_to_end(tiny, tmp_path, capsys):
    """attack and eval on an ONNX file; serve's app on a TorchScript archive (its /health)."""
    from fastapi.testclient import TestClient

    from advlab.cli.serve import build_app

    path, model = tiny
    onnx_file = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (images(1),), str(onnx_file), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    assert main(["eval", str(onnx_file), "--dataset", "mnist", "--n", "20", "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 0
    assert main(["attack", "--model", str(onnx_file), "--dataset", "mnist", "--n", "8", "--attack", "fgsm",
                 "--eps", "0.1", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics  # the run folder was written
    archive = tmp_path / "tiny.ts"
    torch.jit.save(torch.jit.trace(model, images(1)), str(archive))
    args = build_parser().parse_args(["serve", str(archive), "--input-size", "1x28x28"])
    app, info = build_app(args)
    with TestClient(app) as client:
        health = client.get("/health").json()
    assert info.input_shape == (1, 28, 28) and info.architecture == "torchscript:tiny.ts"
    assert json.dumps(health)  # answered
    capsys.readouterr()


def test_weights_that_do_not_fit_are_one_line(tiny, tmp_path, capsys):
    path, _ = tiny
    torch.save({"head.weight": torch.zeros(4, 3), "head.bias": torch.zeros(4)}, tmp_path / "other.pt")
    err = cli_error(["inspect", f"{path}:tiny", "--weights", str(tmp_path / "other.pt"), "--input-size",
                     "1x28x28"], capsys)
    assert "missing 0.bias, 0.weight" in err and "unexpected head.bias, head.weight" in err
    err = cli_error(["inspect", f"{path}:tiny", "--weights", str(path.parent / "w.pt"), "--num-classes", "3",
                     "--input-size", "1x28x28"], capsys)
    assert "wrong shape for 7.bias, 7.weight" in err and "--num-classes" in err


def test_a_factory_that_raises_is_one_line(tiny, capsys):
    path, _ = tiny
    err = cli_error(["inspect", f"{path}:broken", "--input-size", "1x28x28"], capsys)
    assert "raised ValueError: the factory needs a config file" in err
    err = cli_error(["inspect", f"{path}:not_a_module", "--input-size", "1x28x28"], capsys)
    assert "returned a int, not a torch.nn.Module" in err
    err = cli_error(["inspect", f"{path}:missing", "--input-size", "1x28x28"], capsys)
    assert "no function 'missing'" in err


class WritesAFile:
    """A pickle payload: unpickling it calls open(path, "w"), creating the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def test_a_pickle_with_objects_is_refused_and_nothing_runs(tiny, tmp_path, capsys):
    path, model = tiny
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({**model.state_dict(), "extra": WritesAFile(str(marker))}, hostile)
    err = cli_error(["inspect", f"{path}:tiny", "--weights", str(hostile), "--input-size", "1x28x28"], capsys)
    assert "never unpickles" in err
    assert not marker.exists()
    # the payload is live: a full unpickle would have written the file
    live = tmp_path / "live"
    torch.save({"x": WritesAFile(str(live))}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert live.exists()


def test_an_unknown_timm_model_is_one_line(capsys):
    err = cli_error(["inspect", "timm:resnet_does_not_exist"], capsys)
    assert "unknown timm model 'resnet_does_not_exist'" in err


def test_an_onnx_operator_advlab_cannot_run_is_named(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    assert "DepthToSpace" not in OPERATORS
    graph = helper.make_graph(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, name="shuffle"),
         helper.make_node("Flatten", ["y"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 16])])
    file = tmp_path / "shuffle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(file))
    err = cli_error(["inspect", str(file), "--input-size", "4x2x2"], capsys)
    assert "ONNX operator DepthToSpace is not supported" in err and "shuffle" in err


@pytest.mark.parametrize(("argv", "expected"), [
    (["--mean", "0.5"], "--mean and --std go together"),
    (["--mean", "0.5,0.5", "--std", "0.5,0.5"], "--mean/--std give 2 values but the model takes 1"),
    (["--input-size", "1x28x28", "--class-names", "NAMES"], "lists 2 names but the model predicts 10"),
], ids=["mean alone", "wrong channels", "class names"])
def test_bad_spec_options_are_one_line(tiny, argv, expected, tmp_path, capsys):
    path, _ = tiny
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    argv = [str(names) if a == "NAMES" else a for a in argv]
    err = cli_error(["inspect", f"{path}:tiny", "--input-size", "1x28x28", *argv], capsys)
    assert expected in err


def test_other_bad_files_are_one_line(tiny, tmp_path, capsys):
    path, _ = tiny
    (tmp_path / "junk.onnx").write_bytes(b"\x00not an onnx file at all")
    assert "not a readable ONNX model" in cli_error(["inspect", str(tmp_path / "junk.onnx"), "--input-size", "1x28x28"],
                                                     capsys)
    assert "not a TorchScript archive" in cli_error(["inspect", str(path.parent / "w.pt"), "--input-size", "1x28x28"],
                                                    capsys)
    assert "applies to timm:NAME and factory specs" in cli_error(
        ["inspect", str(path.parent / "w.pt"), "--weights", str(path.parent / "w.pt")], capsys)
    assert "does not say what input it takes" in cli_error(["inspect", f"{path}:tiny"], capsys)
    assert "a plain state dict needs its architecture" in cli_error(["inspect", str(path.parent / "w.safetensors")],
                                                                    capsys)
    assert "fails on a batch of 2 images" in cli_error(["inspect", f"{path}:tiny", "--input-size", "3x28x28"], capsys)


def test_library_errors_are_advlab_errors(tiny):
    path, _ = tiny
    with pytest.raises(AdvlabError, match="is not an advlab architecture"):
        load_spec("no/such/thing")


def test_detect_takes_representations_from_a_named_layer_of_a_spec(tiny, tmp_path, capsys):
    path, _ = tiny
    out = tmp_path / "scores.json"
    assert main(["detect", "--model", f"{path}:tiny", "--weights", str(path.parent / "w.pt"), "--dataset", "mnist",
                 "--n", "200", "--layer", "4", "--method", "spectral", "--poison-fraction", "0.05",
                 "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["n"] == 200 and scores["layer"] == "4" and "output of 4 (Conv2d)" in scores["layer_description"]
    capsys.readouterr()
    err = cli_error(["detect", "--model", f"{path}:tiny", "--weights", str(path.parent / "w.pt"), "--dataset",
                     "mnist", "--n", "20", "--layer", "nope", "--method", "spectral", "--poison-fraction", "0.05",
                     "--out", str(tmp_path / "s2.json")], capsys)
    assert "unknown layer 'nope'" in err


def test_wrapped_state_dicts_are_unwrapped(tiny, tmp_path):
    path, model = tiny
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "run.ckpt")
    loaded, _ = load_spec(f"{path}:tiny", SpecOptions(weights=str(tmp_path / "run.ckpt")), default_shape=(1, 28, 28))
    x = images()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_the_torchvision_stand_in_matches_batch_norm_and_names_what_it_lacks():
    from advlab.models.torchvision_standin import FrozenBatchNorm2d, _placeholder

    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    frozen = FrozenBatchNorm2d(3)
    frozen.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped, not refused
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-6)
    missing = _placeholder("torchvision.transforms.Resize")
    with pytest.raises(ModuleNotFoundError, match="torchvision.transforms.Resize needs torchvision"):
        missing(224)


def test_foreign_models_are_recorded_by_their_weights_including_0d_buffers(tiny, tmp_path):
    from advlab.evaluation.records import model_hash

    path, model = tiny  # BatchNorm's num_batches_tracked is a 0-d tensor
    first = model_hash(f"{path}:tiny", model)
    onnx_file = tmp_path / "tiny.onnx"
    onnx_file.write_bytes(b"same file, other normalization")
    assert len(first) == 64 and model_hash(str(onnx_file), model) == first  # not the file's hash
    with torch.no_grad():
        model[0].bias.add_(1.0)
    assert model_hash(f"{path}:tiny", model) != first


def test_certify_and_patch_take_a_foreign_spec(tiny, tmp_path):
    """certify records a foreign model by its weights (BatchNorm's 0-d counter included); patch runs on it."""
    path, _ = tiny
    spec = [f"{path}:tiny", "--weights", str(path.parent / "w.pt")]
    assert main(["certify", *spec, "--dataset", "mnist", "--sigma", "0.25", "--n0", "5", "--n", "20",
                 "--n-images", "2", "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert main(["patch", "--model", *spec, "--dataset", "mnist", "--sizes", "0.1", "--steps", "2", "--n-train", "8",
                 "--n-test", "8", "--out", str(tmp_path / "p"), "--no-progress"]) == 0
