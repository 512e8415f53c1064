"""The prediction API: answers match the model, hostile input gets a 4xx (never a 500), budgets hold,
and the HTTP oracle behaves exactly like the in-process one."""

from __future__ import annotations

import argparse
import base64
import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from advlab.attacks.blackbox import HttpOracle, LocalOracle, Square
from advlab.attacks.blackbox.oracle import BudgetExhausted, encode_array
from advlab.errors import AdvlabError
from advlab.serve import create_app, running_server

SHAPE = (1, 28, 28)
CLASSES = [str(k) for k in range(10)]


def make_client(model, **kwargs) -> TestClient:
    return TestClient(create_app(model, CLASSES, input_shape=SHAPE, **kwargs))


def png_b64(image: torch.Tensor) -> str:
    buffer = io.BytesIO()
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small forward passes: on a shared, oversubscribed CPU a second intra-op thread only adds
    waiting. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lenet(lenet_mnist):
    return lenet_mnist[0]


def test_health_describes_the_model(lenet):
    info = make_client(lenet).get("/health").json()
    assert info["input_shape"] == list(SHAPE) and info["num_classes"] == 10 and info["labels_only"] is False


def test_every_input_format_gives_the_models_probabilities(lenet, mnist_batch):
    x, _ = mnist_batch
    x = x[:4]
    expected = torch.softmax(lenet(x).double(), 1)
    client = make_client(lenet)
    by_array = client.post("/predict", json={"array": encode_array(x)}).json()
    assert torch.equal(torch.tensor(by_array["probabilities"], dtype=torch.float64), expected)
    by_list = client.post("/predict", json={"instances": x.tolist()}).json()
    assert torch.allclose(torch.tensor(by_list["probabilities"], dtype=torch.float64), expected, atol=1e-6)
    # MNIST images are 8-bit, so the PNG round trip is lossless
    by_png = client.post("/predict", json={"png": [png_b64(img) for img in x]}).json()
    assert by_png["labels"] == expected.argmax(1).tolist()
    files = [("images", (f"{k}.png", base64.b64decode(png_b64(img)), "image/png")) for k, img in enumerate(x)]
    by_form = client.post("/predict", files=files).json()
    assert by_form["labels"] == expected.argmax(1).tolist()
    assert by_form["queries_used"] == 16  # 4 requests of 4 images from the same client


def test_labels_only_server_hides_probabilities(lenet, mnist_batch):
    x, _ = mnist_batch
    body = make_client(lenet, labels_only=True).post("/predict", json={"array": encode_array(x[:3])}).json()
    assert "probabilities" not in body and body["labels"] == lenet(x[:3]).argmax(1).tolist()


def _hostile_requests(x: torch.Tensor) -> list[tuple[str, dict, int]]:
    good = x[:2]
    nan = good.clone()
    nan[0, 0, 0, 0] = float("nan")
    big = good.clone()
    big[0, 0, 0, 0] = 1.5
    return [
        ("wrong shape", {"json": {"array": encode_array(torch.rand(2, 3, 28, 28))}}, 422),
        ("3-d array", {"json": {"instances": good[0].tolist()}}, 422),
        ("ragged list", {"json": {"instances": [[[[0.1, 0.2]], [[0.3]]]]}}, 422),
        ("strings", {"json": {"instances": [[["a"]]]}}, 422),
        ("NaN in array", {"json": {"array": encode_array(nan)}}, 422),
        ("NaN literal", {"content": b'{"instances": [[[[NaN]]]]}', "headers": {"content-type": "application/json"}},
         422),
        ("out of range", {"json": {"array": encode_array(big)}}, 422),
        ("negative", {"json": {"instances": (good - 1).tolist()}}, 422),
        ("byte count", {"json": {"array": {**encode_array(good), "shape": [3, 1, 28, 28]}}}, 422),
        ("bad dtype", {"json": {"array": {**encode_array(good), "dtype": "float64"}}}, 422),
        ("bad shape field", {"json": {"array": {**encode_array(good), "shape": [2, -1, 28, 28]}}}, 422),
        ("bad base64", {"json": {"array": {**encode_array(good), "data": "@@@"}}}, 400),
        ("oversized batch", {"json": {"array": encode_array(torch.zeros(9, *SHAPE))}}, 413),
        ("oversized png batch", {"json": {"png": [png_b64(good[0])] * 9}}, 413),
        ("oversized body", {"content": b"{" + b" " * 300_000 + b"}",
                            "headers": {"content-type": "application/json"}}, 413),
        ("not json", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400),
        ("json list", {"json": [1, 2]}, 400),
        ("no images", {"json": {"hello": 1}}, 400),
        ("two formats", {"json": {"instances": good.tolist(), "png": []}}, 400),
        ("deep nesting", {"content": b"[" * 100_000 + b"]" * 100_000,
                          "headers": {"content-type": "application/json"}}, 400),
        ("undecodable png", {"json": {"png": [base64.b64encode(b"\x89PNG not really").decode()]}}, 400),
        ("png wrong size", {"json": {"png": [base64.b64encode(_png_bytes(8, 8)).decode()]}}, 422),
        ("empty png list", {"json": {"png": []}}, 422),
        ("bad labels_only", {"json": {"array": encode_array(good), "labels_only": "yes"}}, 422),
        ("text body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ("garbage multipart", {"content": b"--xx\r\nnothing", "headers": {"content-type":
                                                                         "multipart/form-data; boundary=xx"}}, 422),
        ("corrupt file upload", {"files": [("images", ("a.png", b"\x00\x01garbage", "image/png"))]}, 400),
    ]


def _png_bytes(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (w, h)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_hostile_input_gets_a_4xx_with_a_reason(lenet, mnist_batch):
    client = make_client(lenet, max_batch=8, max_body_bytes=200_000)
    for name, kwargs, status in _hostile_requests(mnist_batch[0]):
        response = client.post("/predict", **kwargs)
        assert response.status_code == status, (name, response.status_code, response.text[:200])
        assert response.json()["detail"], name
    # nothing hostile was counted, and the server still answers
    ok = client.post("/predict", json={"array": encode_array(mnist_batch[0][:2])})
    assert ok.status_code == 200 and ok.json()["queries_used"] == 2


def test_tokens_and_per_client_budgets(lenet, mnist_batch):
    x = mnist_batch[0][:3]
    client = make_client(lenet, token=["alpha", "beta"], query_budget=5)
    body = {"array": encode_array(x)}
    assert client.post("/predict", json=body).status_code == 401
    assert client.post("/predict", json=body, headers={"Authorization": "Basic alpha"}).status_code == 401
    assert client.post("/predict", json=body, headers={"Authorization": "Bearer gamma"}).status_code == 403
    alpha = {"Authorization": "Bearer alpha"}
    first = client.post("/predict", json=body, headers=alpha)
    assert first.status_code == 200 and first.json()["queries_left"] == 2
    refused = client.post("/predict", json=body, headers=alpha)  # 3 + 3 > 5: refused whole
    assert refused.status_code == 429 and "budget" in refused.json()["detail"]
    assert client.post("/predict", json={"array": encode_array(x[:2])}, headers=alpha).status_code == 200
    # another token has its own count
    assert client.post("/predict", json=body, headers={"Authorization": "Bearer beta"}).status_code == 200


def test_http_oracle_matches_local_oracle_through_a_real_server(lenet, mnist_batch):
    x, y = mnist_batch
    x, y = x[:4], y[:4]
    attack = Square(eps=0.3, max_queries=80, p_init=0.3, seed=3)
    local = attack(LocalOracle(lenet, input_shape=SHAPE), x, y)
    app = create_app(lenet, CLASSES, input_shape=SHAPE, token="s3cret", query_budget=5000)
    with running_server(app) as url, HttpOracle(url, token="s3cret") as remote_oracle:
        assert url.startswith("http://127.0.0.1:")
        remote = attack(remote_oracle, x, y)
        assert remote_oracle.used == local.cost.queries
    assert torch.equal(remote.adv, local.adv)
    assert torch.equal(remote.success, local.success)
    assert torch.equal(remote.extra["queries"], local.extra["queries"])
    assert torch.equal(remote.extra["queries_at_success"], local.extra["queries_at_success"])


def test_http_oracle_turns_server_budget_into_budget_exhausted(lenet, mnist_batch):
    x, y = mnist_batch
    app = create_app(lenet, CLASSES, input_shape=SHAPE, query_budget=40, labels_only=True)
    with running_server(app) as url, HttpOracle(url) as oracle:
        assert oracle.labels_only
        with pytest.raises(BudgetExhausted):
            oracle.query(x[:41])
        assert oracle.query(x[:40]).tolist() == lenet(x[:40]).argmax(1).tolist()
        with pytest.raises(BudgetExhausted):
            oracle.query(x[:1])
    with pytest.raises(AdvlabError, match="cannot reach"):
        HttpOracle(url, timeout=2)


def test_serve_command_builds_the_app_from_a_checkpoint(lenet_mnist, mnist_batch, tmp_path):
    from advlab.cli.serve import build_app

    args = argparse.Namespace(checkpoint=str(lenet_mnist[2]), port=0, labels_only=False, token=None,
                              query_budget=None, max_batch=16, max_body_mb=1.0, device="cpu")
    app, meta = build_app(args)
    client = TestClient(app)
    assert client.get("/health").json()["max_batch"] == 16
    body = client.post("/predict", json={"array": encode_array(mnist_batch[0][:2])}).json()
    assert len(body["probabilities"]) == 2
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AdvlabError):
        build_app(argparse.Namespace(**{**vars(args), "checkpoint": str(bad)}))
    assert meta.input_shape == SHAPE and meta.classes == CLASSES


def test_advlab_attack_with_oracle_attacks_the_server(lenet, tmp_path, capsys):
    """`advlab attack --oracle URL --attack square` goes through the real API, and white-box attacks
    refuse an oracle."""
    from advlab.cli.main import main

    app = create_app(lenet, CLASSES, input_shape=SHAPE)
    with running_server(app) as url:
        argv = ["attack", "--oracle", url, "--attack", "square", "--n", "3", "--queries", "40", "--device", "cpu",
                "--out", str(tmp_path / "run"), "--no-progress"]
        assert main(argv) == 0
        assert main(["attack", "--oracle", url, "--attack", "pgd", "--out", str(tmp_path / "bad")]) == 2
    assert "choose --attack from" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["attacks"]["square"]["images"] == 3
    assert 0 < metrics["oracle_queries_used"] <= 3 * 40 + 3
