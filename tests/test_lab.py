"""The lab's JSON API without a browser: each panel against the library, the limits, the token, the CLI."""

from __future__ import annotations

import io
import json
import time

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from advlab.attacks import PGD, FoolingImages
from advlab.cli.main import main
from advlab.defenses.smoothing import Smooth
from advlab.errors import AdvlabError
from advlab.lab import ModelRegistry, create_lab_app
from advlab.lab.images import decode_upload
from advlab.lab.jobs import Cancelled, Job, watched_copy
from advlab.lab.launch import check_bind, url_for


@pytest.fixture(scope="module")
def lab(lenet_mnist):
    _, _, checkpoint = lenet_mnist
    app = create_lab_app(ModelRegistry([checkpoint], scan_cache=False), max_upload_bytes=2**20)
    client = TestClient(app)
    yield app, client
    app.state.runner.shutdown()


def finish(client, started: dict, timeout: float = 120) -> dict:
    assert "job" in started, started
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(f"/api/jobs/{started['job']}").json()
        if state["status"] in ("done", "error", "cancelled"):
            return state
        assert time.monotonic() < deadline, f"job {started} did not finish"
        time.sleep(0.05)


def pick(client, index: int) -> dict:
    response = client.post("/api/images/pick", json={"index": index})
    assert response.status_code == 200, response.text
    return response.json()


def png(size=(40, 30), mode="RGB", colour=(250, 250, 250), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def test_page_and_info(lab):
    _, client = lab
    page = client.get("/")
    assert page.status_code == 200 and "advlab lab" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/static/lab.css"):  # nothing is loaded from elsewhere (the page works offline)
        assert "http:" not in client.get(path).text and "https:" not in client.get(path).text
    assert client.get("/static/lab.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["models"][0]["input_shape"] == [1, 28, 28] and "pgd" in info["whitebox_attacks"]


def test_pick_by_class_gives_that_class(lab, mnist_test):
    _, client = lab
    answer = client.post("/api/images/pick", json={"label": 4}).json()
    assert answer["label"] == 4
    assert mnist_test.labels[int(answer["source"].split()[-1])] == 4


def test_whitebox_job_equals_the_library(lab, lenet_mnist, mnist_test):
    _, client = lab
    model, _, _ = lenet_mnist
    image = pick(client, 3)["image"]
    x, y = mnist_test[3]
    state = finish(client, client.post("/api/jobs/whitebox", json={"image": image, "attack": "pgd", "eps": 0.2,
                                                                   "steps": 10, "seed": 5, "target": 2}).json())
    assert state["status"] == "done", state["error"]
    result = PGD(eps=0.2, steps=10, seed=5)(model, x.unsqueeze(0), y.view(1), target=2)
    assert state["result"]["adversarial_prediction"] == result.adv_pred.item()
    assert state["result"]["norms"]["linf"] == pytest.approx(result.norms["linf"].item())
    assert state["result"]["cost"] == result.cost.to_dict()
    numbers = json.loads(client.get(f"/api/results/{state['result']['result']}/numbers.json").content)
    assert numbers["adversarial_float32"]["shape"] == [1, 1, 28, 28]
    decoded = Image.open(io.BytesIO(client.get(f"/api/results/{state['result']['result']}/adversarial.png").content))
    assert decoded.size == (28, 28)


def test_fooling_job_equals_the_library(lab, lenet_mnist):
    _, client = lab
    model, _, _ = lenet_mnist
    state = finish(client, client.post("/api/jobs/fooling", json={"target": 6, "eps": 0.3, "steps": 3}).json())
    assert state["status"] == "done", state["error"]
    library = FoolingImages(eps=0.3, steps=3, seed=0)(model, (1, 28, 28), num_classes=10, per_class=1)
    assert state["result"]["confidence"] == pytest.approx(library.confidence[6].item(), rel=1e-5)


def test_certify_counts_are_certifys_own(lab, lenet_mnist, mnist_test):
    _, client = lab
    model, _, _ = lenet_mnist
    image = pick(client, 0)["image"]
    state = finish(client, client.post("/api/jobs/certify", json={"image": image, "sigma": 0.25, "n0": 20, "n": 200,
                                                                  "seed": 3, "attack_steps": 3}).json())
    assert state["status"] == "done", state["error"]
    result = state["result"]
    generator = torch.Generator().manual_seed(3)
    expected = Smooth(model, 10, 0.25).certify(mnist_test[0][0], 20, 200, 0.001, 500, generator)
    assert (result["certified_class"], result["radius"]) == pytest.approx(expected)
    assert sum(result["counts"]) == 200 and sum(result["selection_counts"]) == 20
    if result["attack"] is not None:
        assert result["attack"]["l2"] <= result["radius"] * (1 + 1e-4)


def test_blackbox_budget_is_the_servers(lab):
    _, client = lab
    image = pick(client, 0)["image"]
    state = finish(client, client.post("/api/jobs/blackbox", json={"image": image, "attack": "square", "eps": 0.02,
                                                                   "budget": 30}).json())
    assert state["status"] == "done", state["error"]
    assert state["result"]["queries"] == state["result"]["server_queries"] == 30
    assert state["result"]["budget_exhausted"] and not state["result"]["success"]


def test_blackbox_against_a_server_elsewhere_stops_at_its_budget(lab, lenet_mnist):
    from advlab.serve import create_app, running_server

    _, client = lab
    model, meta, _ = lenet_mnist
    image = pick(client, 0)["image"]
    served = create_app(model, meta["classes"], query_budget=25, token="t0k", input_shape=(1, 28, 28))
    with running_server(served) as url:
        body = {"image": image, "attack": "square", "eps": 0.02, "budget": 1000, "url": url}
        refused = finish(client, client.post("/api/jobs/blackbox", json=body).json())
        assert refused["status"] == "error" and "token" in refused["error"]
        state = finish(client, client.post("/api/jobs/blackbox", json={**body, "url_token": "t0k"}).json())
    assert state["status"] == "done", state["error"]
    assert state["result"]["queries"] == 25 and state["result"]["budget_exhausted"]
    assert client.post("/api/jobs/blackbox", json={**body, "url": "file:///etc/passwd"}).status_code == 422


def test_a_long_job_does_not_block_the_page_and_cancels(lab):
    _, client = lab
    image = pick(client, 0)["image"]
    started = client.post("/api/jobs/blackbox", json={"image": image, "eps": 0.01, "budget": 100_000}).json()
    deadline = time.monotonic() + 120
    while client.get(f"/api/jobs/{started['job']}").json()["live"].get("queries", 0) < 3:
        assert time.monotonic() < deadline, "the black-box job never started querying"
        time.sleep(0.05)
    assert pick(client, 1)["label"] is not None  # answered while the attack runs in its worker thread
    assert client.get(f"/api/jobs/{started['job']}").json()["status"] == "running"
    assert client.post(f"/api/jobs/{started['job']}/cancel").status_code == 200
    state = finish(client, started)
    assert state["status"] == "cancelled" and state["live"]["queries"] < 100_000


def test_the_queue_is_bounded(lenet_mnist):
    _, _, checkpoint = lenet_mnist
    app = create_lab_app(ModelRegistry([checkpoint], scan_cache=False), max_jobs=1, max_waiting=1)
    client = TestClient(app)
    image = pick(client, 0)["image"]
    body = {"image": image, "eps": 0.01, "budget": 100_000}
    first = client.post("/api/jobs/blackbox", json=body).json()
    while client.get(f"/api/jobs/{first['job']}").json()["status"] == "queued":
        time.sleep(0.02)
    second = client.post("/api/jobs/blackbox", json=body).json()
    third = client.post("/api/jobs/blackbox", json=body)
    assert third.status_code == 429 and "waiting" in third.json()["detail"]
    for started in (second, first):
        client.post(f"/api/jobs/{started['job']}/cancel")
        assert finish(client, started)["status"] == "cancelled"
    app.state.runner.shutdown()


def test_events_stream_ends_with_the_result(lab):
    _, client = lab
    started = client.post("/api/jobs/fooling", json={"target": 1}).json()
    with client.stream("GET", f"/api/jobs/{started['job']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "done" and events[-1]["result"]["target"] == 1


def test_a_job_cancels_between_forward_passes(lenet_mnist):
    model, _, _ = lenet_mnist
    job = Job("test")
    clone = watched_copy(model, job)
    clone(torch.zeros(1, 1, 28, 28))
    assert job.forwards == 1
    job.cancel()
    with pytest.raises(Cancelled):
        clone(torch.zeros(1, 1, 28, 28))
    assert not model._forward_pre_hooks  # the library's model is untouched


def test_bad_requests_get_one_line_reasons(lab):
    _, client = lab
    image = pick(client, 0)["image"]
    assert client.post("/api/jobs/whitebox", json={"image": image, "attack": "nope"}).status_code == 400
    assert client.post("/api/jobs/whitebox", json={"image": image, "eps": -1}).status_code == 422
    assert client.post("/api/jobs/whitebox", json={"image": "feedfeed"}).status_code == 404
    assert client.post("/api/jobs/whitebox", json={"image": image, "target": 10}).status_code == 400
    assert client.post("/api/jobs/blackbox", json={"image": image, "budget": 10**9}).status_code == 422
    assert client.post("/api/images/pick", json={"model": "nope"}).status_code == 404
    assert client.post("/api/backdoor/toggle", json={"image": image}).status_code == 409
    cw = finish(client, client.post("/api/jobs/whitebox", json={"image": image, "attack": "cw", "norm": "linf"}).json())
    assert cw["status"] == "error" and "l2" in cw["error"]


def test_uploads_are_checked_before_decoding(lab):
    _, client = lab
    ok = client.post("/api/images/upload", content=png(mode="RGBA", colour=(0, 0, 0, 0)))
    assert ok.status_code == 200 and ok.json()["label"] is None
    jpeg = client.post("/api/images/upload", content=png(fmt="JPEG"))
    assert jpeg.status_code == 200
    bomb = client.post("/api/images/upload", content=png(size=(6000, 6000), mode="L", colour=0))
    assert bomb.status_code == 400 and "limit" in bomb.json()["detail"]
    huge = client.post("/api/images/upload", content=b"\0" * (2**20 + 1))
    assert huge.status_code == 413
    gif = client.post("/api/images/upload", content=png(fmt="GIF", mode="L", colour=0))
    assert gif.status_code == 400 and "PNG or JPEG" in gif.json()["detail"]
    assert client.post("/api/images/upload", content=b"not an image").status_code == 400


def test_decode_upload_fits_the_model_shape():
    x = decode_upload(png(size=(90, 60), colour=(255, 0, 0)), (3, 32, 32))
    assert x.shape == (3, 32, 32) and x[0].min() > 0.99 and x[1].max() < 0.01
    with pytest.raises(AdvlabError, match="decompression bomb|limit"):
        decode_upload(png(size=(3000, 3000), mode="L", colour=0), (1, 28, 28), max_pixels=1000 * 1000)


def test_token_guards_the_api(lenet_mnist):
    _, _, checkpoint = lenet_mnist
    app = create_lab_app(ModelRegistry([checkpoint], scan_cache=False), token="s3cret")
    client = TestClient(app)
    assert client.get("/").status_code == 200  # the page holds no data; its API calls carry the token
    assert client.get("/api/info").status_code == 401
    assert client.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/info?token=s3cret").status_code == 200
    app.state.runner.shutdown()


def test_cli_refuses_a_public_bind_without_token(capsys):
    with pytest.raises(AdvlabError, match="--token"):
        check_bind("0.0.0.0", 8765, None)
    check_bind("0.0.0.0", 8765, "t")
    check_bind("::1", 8765, None)
    check_bind("localhost", 0, None)
    assert main(["lab", "--host", "0.0.0.0", "--model", "missing.safetensors"]) == 2
    assert "--token" in capsys.readouterr().err
    assert url_for("127.0.0.1", 8765, "abc") == "http://127.0.0.1:8765/?token=abc"


def test_cli_refuses_a_missing_checkpoint(capsys):
    assert main(["lab", "--model", "missing.safetensors", "--no-cache-models"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_serves_the_page_on_loopback(lenet_mnist):
    """`advlab lab` as a user starts it: the printed URL answers, on 127.0.0.1 only."""
    import os
    import re
    import subprocess
    import sys

    import httpx

    _, _, checkpoint = lenet_mnist
    process = subprocess.Popen([sys.executable, "-m", "advlab", "lab", "--model", str(checkpoint), "--port", "0",
                                "--no-cache-models", "--token", "random"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "open http" not in line:
            assert time.monotonic() < deadline and process.poll() is None, f"the lab did not start: {line}"
            line = process.stdout.readline()
        url = re.search(r"open (http://\S+)", line).group(1)
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        base, token = url.split("?token=")
        assert httpx.get(base, timeout=30).status_code == 200
        assert httpx.get(base + "api/info", timeout=30).status_code == 401
        info = httpx.get(base + "api/info", params={"token": token}, timeout=30).json()
        assert info["models"][0]["path"] == str(checkpoint)
    finally:
        process.terminate()
        process.wait(timeout=30)


LAB_FACTORY = '''
import torch
from torch import nn


def digits(num_classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
'''


def test_the_lab_takes_a_foreign_model_spec_with_its_test_set(tmp_path, lenet_mnist):
    factory = tmp_path / "nets.py"
    factory.write_text(LAB_FACTORY)
    spec = f"{factory}:digits"
    _, _, checkpoint = lenet_mnist
    registry = ModelRegistry([spec, checkpoint], scan_cache=False, dataset="mnist")
    app = create_lab_app(registry, max_upload_bytes=2**20)
    client = TestClient(app)
    try:
        info = client.get("/api/info").json()
        assert info["models"][0]["architecture"] == spec and info["models"][0]["input_shape"] == [1, 28, 28]
        assert info["models"][1]["path"] == str(checkpoint)  # checkpoints are listed as before
        image = pick(client, 3)["image"]
        state = finish(client, client.post("/api/jobs/whitebox", json={"image": image, "attack": "fgsm", "eps": 0.1,
                                                                       "seed": 0}).json())
        assert state["status"] == "done", state["error"]
        model = registry.model(registry.get(None))
        assert isinstance(model, torch.nn.Sequential) and registry.get(None).meta["spec"] == spec
    finally:
        app.state.runner.shutdown()


def test_cli_refuses_spec_options_without_a_spec_and_a_spec_that_does_not_fit(tmp_path, capsys):
    assert main(["lab", "--weights", "w.safetensors", "--no-cache-models"]) == 2
    assert "apply to a --model spec" in capsys.readouterr().err
    factory = tmp_path / "nets.py"
    factory.write_text(LAB_FACTORY)
    assert main(["lab", "--model", f"{factory}:digits", "--dataset", "cifar10", "--no-cache-models"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
