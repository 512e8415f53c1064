"""The lab's page driven end to end in a real browser: Playwright's Python API with the system Chromium
(Debian's package, installed by `make browser`; Playwright's own browser download is never used).

Set ADVLAB_LAB_SCREENSHOTS=DIR to also write a screenshot of each panel there (docs/figures/ for
docs/lab.md); normal runs write nothing outside tmp_path.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from advlab.attacks import PGD
from advlab.lab import LabBackdoorSettings, ModelRegistry, create_lab_app
from advlab.serve import running_server

try:
    from playwright import sync_api
except ImportError:  # a missing test dependency is a failure to fix, not a reason to skip
    sync_api = None

SHOTS = os.environ.get("ADVLAB_LAB_SCREENSHOTS")
BACKDOOR = LabBackdoorSettings()  # the lab's default: LeNet on 4,000 MNIST images, 300 poisons, 4 epochs


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is required for this test: `make browser` installs Debian's chromium package")
    return path


@pytest.fixture(scope="module")
def lab(lenet_mnist):
    _, _, checkpoint = lenet_mnist
    registry = ModelRegistry([checkpoint], scan_cache=False)
    app = create_lab_app(registry, backdoor=BACKDOOR)
    with running_server(app) as url:
        yield app, url
    app.state.runner.shutdown()


@pytest.fixture(scope="module")
def browser():
    if sync_api is None:
        pytest.fail("Playwright is required for this test: pip install -e '.[test]' (its browser download is not "
                    "needed: the tests use the system Chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, lab):
    _, url = lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    yield page
    context.close()
    outside = [r for r in requests if not (r.startswith(url) or r.startswith("data:"))]
    assert not outside, f"the page fetched from elsewhere: {outside}"


def shoot(page, selector: str, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.locator(selector).screenshot(path=str(Path(SHOTS) / name))


def until(page, condition: str, timeout: float = 60_000) -> None:
    """Wait until the JavaScript expression holds (as a function: the page's CSP forbids eval)."""
    page.wait_for_function("() => " + condition, timeout=timeout)


def pick(page, index: int) -> None:
    page.fill("#pick-index", str(index))
    page.click("#pick")
    until(page, f"document.querySelector('#image-caption').textContent.includes('test image {index},')")


def set_value(page, selector: str, value) -> None:
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def wait_text(page, selector: str, timeout: float = 60_000) -> str:
    until(page, f"document.querySelector({selector!r}).textContent.trim().length > 0", timeout=timeout)
    return page.inner_text(selector).strip()


def test_pick_and_pgd_match_the_library(page, lab, lenet_mnist, mnist_test):
    model, _, _ = lenet_mnist
    pick(page, 0)
    x, y = mnist_test[0]
    assert page.inner_text("#image-caption").endswith(f"label {mnist_test.classes[int(y)]}")
    page.select_option("#wb-attack", "pgd")
    set_value(page, "#wb-eps", 0.3)
    page.fill("#wb-steps", "20")
    page.fill("#wb-seed", "0")
    page.click("#wb-run")
    shown = wait_text(page, "#wb-adv-pred")
    expected = PGD(eps=0.3, steps=20, seed=0)(model, x.unsqueeze(0), y.view(1)).adv_pred.item()
    assert int(page.get_attribute("#wb-adv-pred", "data-index")) == expected
    assert shown == mnist_test.classes[expected]
    assert page.locator("#wb-top5-adv .bar").count() == 5
    # the downloads are real files: a lossless PNG, the numbers, the triptych
    for link, kind in (("#wb-dl-adv", "image/png"), ("#wb-dl-json", "application/json"),
                       ("#wb-dl-triptych", "image/png")):
        response = page.request.get(page.eval_on_selector(link, "a => a.href"))
        assert response.ok and response.headers["content-type"].startswith(kind)
    shoot(page, "#panel-image", "lab-image.png")

    page.click("#wb-curve")
    page.wait_for_selector("#wb-curve-svg circle", timeout=60_000)
    assert page.locator("#wb-curve-svg circle").count() == 8

    shoot(page, "#panel-whitebox", "lab-whitebox.png")

    page.fill("#phys-draws", "4")
    page.click("#phys-run")
    until(page, "document.querySelector('#phys-summary').textContent.includes('simulated photographs')")
    assert page.locator("#phys-draws-shown figure").count() == 4
    shoot(page, "#panel-physical", "lab-physical.png")


def test_fooling_image_reaches_the_class(page):
    page.select_option("#fool-target", "3")
    page.fill("#fool-steps", "5")
    page.click("#fool-run")
    caption = wait_text(page, "#fool-caption")
    assert "for 3" in caption
    shoot(page, "#panel-fooling", "lab-fooling.png")


def test_blackbox_counter_moves_and_stops_at_the_budget(page):
    pick(page, 0)
    page.select_option("#bb-attack", "square")
    page.fill("#bb-eps", "0.05")  # too small to fool the model: the budget ends the attack
    page.fill("#bb-budget", "100")
    page.click("#bb-run")
    seen = set()
    deadline = time.monotonic() + 120
    while not page.inner_text("#bb-outcome").strip():
        seen.add(int(page.inner_text("#bb-queries") or 0))
        assert time.monotonic() < deadline, "the black-box attack did not finish"
        time.sleep(0.05)
    assert any(0 < v < 100 for v in seen), f"the counter never moved live: {sorted(seen)}"
    assert page.inner_text("#bb-queries") == "100"
    assert "budget" in page.inner_text("#bb-outcome")
    shoot(page, "#panel-blackbox", "lab-blackbox.png")


def test_blackbox_can_be_cancelled(page):
    pick(page, 1)
    page.fill("#bb-eps", "0.01")
    page.fill("#bb-budget", "100000")
    page.click("#bb-run")
    until(page, "Number(document.querySelector('#bb-queries').textContent) > 5", timeout=60_000)
    page.click("#panel-blackbox button.cancel")
    until(page, "document.querySelector('#blackbox-error').textContent === 'cancelled'", timeout=60_000)
    assert int(page.inner_text("#bb-queries")) < 100000


def test_certify_and_the_attack_inside_the_radius(page):
    pick(page, 0)
    page.fill("#cert-n0", "50")
    page.fill("#cert-n", "500")
    page.click("#cert-run")
    summary = wait_text(page, "#cert-summary")
    assert "certified L2 radius" in summary or "abstains" in summary
    assert page.locator("#cert-hist .bar").count() >= 1
    if "certified L2 radius" in summary:
        assert "the attack failed, as certified" in page.inner_text("#cert-attack")
    shoot(page, "#panel-certify", "lab-certify.png")


def test_backdoor_trigger_flips_the_prediction(page, lab, mnist_test):
    app, _ = lab
    page.click("#bd-prepare")
    until(page, "document.querySelector('#backdoor-message').textContent === 'ready'", timeout=300_000)
    built = app.state.poisoned["model"]
    target = built.summary["target"]
    # the first test image of another class that the poisoned model gets right and the trigger flips
    with torch.no_grad():
        for index in range(200):
            x, y = mnist_test[index]
            clean = built.model(x.unsqueeze(0)).argmax(1).item()
            triggered = built.model(built.poisoned.trigger(x.unsqueeze(0))).argmax(1).item()
            if int(y) != target and clean == int(y) and triggered == target:
                break
        else:
            pytest.fail("the poisoned model has no working backdoor on 200 test images")
    pick(page, index)
    until(page, f"document.querySelector('#bd-pred').dataset.index === '{clean}'")
    page.check("#bd-trigger")
    until(page, f"document.querySelector('#bd-pred').dataset.index === '{target}'")
    assert page.get_attribute("#bd-projection", "src").startswith("data:image/png")
    shoot(page, "#panel-backdoor", "lab-backdoor.png")
    page.uncheck("#bd-trigger")
    until(page, f"document.querySelector('#bd-pred').dataset.index === '{clean}'")


def test_upload_png_and_a_bomb(page, tmp_path):
    from PIL import Image

    png = tmp_path / "digit.png"
    image = Image.new("L", (64, 64), 0)
    image.paste(255, (28, 8, 36, 56))  # a white bar: something like a 1
    image.save(png)
    page.set_input_files("#upload", str(png))
    until(page, "document.querySelector('#image-caption').textContent.startsWith('uploaded')")
    assert page.locator("#image-top5 .bar").count() == 5
    assert page.inner_text("#image-error") == ""
    bomb = tmp_path / "bomb.png"
    buffer = io.BytesIO()
    Image.new("L", (12_000, 12_000), 0).save(buffer, format="PNG")  # 144 Mpixels in well under 1 MB
    bomb.write_bytes(buffer.getvalue())
    page.set_input_files("#upload", str(bomb))
    error = wait_text(page, "#image-error")
    assert "decompression bomb" in error or "more than the limit" in error
    shoot(page, "#panel-image", "lab-upload-error.png")


def test_the_page_carries_the_token(browser, lenet_mnist):
    """With --token, the URL's ?token= reaches every API call, the event stream and the downloads."""
    _, _, checkpoint = lenet_mnist
    app = create_lab_app(ModelRegistry([checkpoint], scan_cache=False), token="tok3n")
    with running_server(app) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/?token=tok3n")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        pick(page, 2)
        page.click("#fool-run")
        assert "for 0" in wait_text(page, "#fool-caption")
        page.goto(url + "/")  # without the token the page says what is wrong
        until(page, "document.querySelector('#status').textContent.includes('missing token')")
        context.close()
    app.state.runner.shutdown()
