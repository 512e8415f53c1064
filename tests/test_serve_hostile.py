"""The prediction API under hostile numbers and hostile connections (issue 17): oversized integers,
overflowing shapes, strings as numbers, spoofed proxy headers, slow headers and bodies, many bodies at
once, large bodies parsed off the event loop, docs behind the token, clients that vanish mid-body."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from advlab.attacks.blackbox.oracle import encode_array
from advlab.models import create_model
from advlab.serve import app as app_module
from advlab.serve import create_app, running_server
from advlab.serve.app import WORKER_PARSE_BYTES

SHAPE = (1, 28, 28)
CLASSES = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("lenet", "mnist").eval()


def post_raw(client: TestClient, text: str):
    return client.post("/predict", content=text.encode(), headers={"content-type": "application/json"})


def test_hostile_numbers_get_a_4xx_never_a_500(model):
    client = TestClient(create_app(model, CLASSES, input_shape=SHAPE, max_batch=8), raise_server_exceptions=False)
    image = torch.full((1, *SHAPE), 0.5)
    huge = "9" * 5000
    cases = {
        "5000-digit integer in instances": (json.dumps({"instances": image.tolist()}).replace("0.5", huge, 1), 422),
        "5000-digit integer as labels_only": (
            json.dumps({"instances": image.tolist(), "labels_only": 0}).replace(": 0}", f": {huge}}}"), 422),
        "shape 2**32 x 2**32": (json.dumps({"array": {**encode_array(image), "shape": [1, 1, 2**32, 2**32]}}), 422),
        "shape 2**62 x 4": (json.dumps({"array": {**encode_array(image), "shape": [1, 1, 2**62, 4]}}), 422),
        "shape 2**64 images": (json.dumps({"array": {**encode_array(image), "shape": [2**64, 1, 28, 28]}}), 413),
        "strings as numbers": (json.dumps({"instances": [[[["0.5"] * 28] * 28]]}), 422),
        "one string among numbers": (json.dumps({"instances": image.tolist()}).replace("0.5", '"0.5"', 1), 422),
        "booleans as numbers": (json.dumps({"instances": [[[[True] * 28] * 28]]}), 422),
        "Infinity literal": (json.dumps({"instances": image.tolist()}).replace("0.5", "Infinity", 1), 422),
        "1e400 overflows to inf": (json.dumps({"instances": image.tolist()}).replace("0.5", "1e400", 1), 422),
        "data not a string": (json.dumps({"array": {**encode_array(image), "data": 5}}), 400),
        "Content-Length not a number": (None, 400),
    }
    for name, (text, status) in cases.items():
        if text is None:
            response = client.post("/predict", content=b"{}", headers={"content-type": "application/json",
                                                                          "content-length": "-1"})
        else:
            response = post_raw(client, text)
        assert response.status_code == status, (name, response.status_code, response.text[:200])
        assert response.json()["detail"], name
    ok = post_raw(client, json.dumps({"instances": image.tolist(), "labels_only": True}))
    assert ok.status_code == 200 and len(ok.json()["labels"]) == 1


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(model):
    """A spoofed X-Forwarded-For must not reset the per-address budget."""
    body = {"array": encode_array(torch.zeros(2, *SHAPE))}
    app = create_app(model, CLASSES, input_shape=SHAPE, query_budget=2)
    with running_server(app) as url:
        assert httpx.post(f"{url}/predict", json=body).status_code == 200
        spoofed = httpx.post(f"{url}/predict", json=body, headers={"X-Forwarded-For": "203.0.113.7"})
        assert spoofed.status_code == 429
    trusting = create_app(model, CLASSES, input_shape=SHAPE, query_budget=2)
    with running_server(trusting, trust_proxy=True) as url:  # behind a proxy on loopback: its header counts
        assert httpx.post(f"{url}/predict", json=body, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
        assert httpx.post(f"{url}/predict", json=body, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200
        assert httpx.post(f"{url}/predict", json=body, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 429


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the socket, or None if it stayed open for `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_slow_headers_and_slow_bodies_are_cut_off(model):
    app = create_app(model, CLASSES, input_shape=SHAPE, body_timeout=0.5)
    with running_server(app, header_timeout=0.5) as url:
        idle, trickle, slow_body = _connect(url), _connect(url), _connect(url)
        trickle.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{\"instances\": ")
        assert _closed_within(idle, 5) == b""
        assert _closed_within(trickle, 5) == b""
        answer = _closed_within(slow_body, 5)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
        assert httpx.get(f"{url}/health").status_code == 200
        for sock in (idle, trickle, slow_body):
            sock.close()


def test_bodies_beyond_the_limit_get_503_before_being_read(model):
    app = create_app(model, CLASSES, input_shape=SHAPE, max_bodies=1, body_timeout=5)
    with running_server(app) as url:
        holder = _connect(url)
        holder.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100000\r\n\r\n{")
        deadline = time.monotonic() + 20  # until the server has begun receiving the held body (a loaded CPU)
        while True:
            refused = httpx.post(f"{url}/predict", json={"array": encode_array(torch.zeros(1, *SHAPE))})
            if refused.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        start = time.perf_counter()
        assert httpx.get(f"{url}/health").status_code == 200
        assert time.perf_counter() - start < 5  # generous: only says /health was not queued behind the body
        holder.close()
        time.sleep(0.3)
        assert httpx.post(f"{url}/predict", json={"array": encode_array(torch.zeros(1, *SHAPE))}).status_code == 200


def test_large_bodies_are_parsed_in_the_worker_process(model):
    x = torch.rand(3, *SHAPE)
    padding = " " * (WORKER_PARSE_BYTES + 10)  # valid JSON, large enough to go to the worker
    client = TestClient(create_app(model, CLASSES, input_shape=SHAPE))
    good = post_raw(client, '{"instances": ' + json.dumps(x.tolist()) + padding + "}")
    assert good.status_code == 200, good.text[:200]
    assert good.json()["labels"] == model(x).argmax(1).tolist()
    assert app_module._parser_pool is not None  # it went through the worker process
    bad = post_raw(client, '{"instances": [[["0.5"]]]' + padding + "}")
    assert bad.status_code == 422 and "strings" in bad.json()["detail"]


def test_docs_need_the_token_when_a_token_is_required(model):
    open_client = TestClient(create_app(model, CLASSES, input_shape=SHAPE))
    closed_client = TestClient(create_app(model, CLASSES, input_shape=SHAPE, token="s3cret"))
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert open_client.get(path).status_code == 200, path
        assert closed_client.get(path).status_code == 404, path
        assert closed_client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 404, path
    assert closed_client.get("/health").status_code == 200


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_vanishing_mid_body_logs_no_traceback(model):
    app = create_app(model, CLASSES, input_shape=SHAPE)
    seen = _Records()
    with running_server(app) as url:
        logging.getLogger("uvicorn.error").addHandler(seen)  # uvicorn's loggers do not reach the root logger
        try:
            sock = _connect(url)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{\"instances\": [")
            time.sleep(0.3)
            sock.close()
            time.sleep(0.5)
            assert httpx.get(f"{url}/health").status_code == 200
        finally:
            logging.getLogger("uvicorn.error").removeHandler(seen)
    assert not [r for r in seen.records if r.exc_info], [r.getMessage() for r in seen.records]
