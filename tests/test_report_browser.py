"""The generated report renders in a real browser (headless Chromium) and every image loads."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from advlab.cli.main import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Appended to a copy of the report only: counts images that decoded, after the page has loaded.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const p = document.createElement('pre'); p.id = 'probe';
  p.textContent = `images ${imgs.length} loaded ${ok} sections ${document.querySelectorAll('section').length}`;
  document.body.appendChild(p);
});</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is required for this test: `make test` installs Debian's chromium package")
    return path


def test_report_renders_and_every_image_loads(tmp_path, lenet_mnist):
    _, _, checkpoint = lenet_mnist
    run = tmp_path / "run"
    assert main(["eval", str(checkpoint), "--n", "200", "--out", str(run), "--no-progress"]) == 0
    probe_page = tmp_path / "probe.html"
    probe_page.write_text((run / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    browser = chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", probe_page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r"images (\d+) loaded (\d+) sections (\d+)", dom.stdout)
    assert match, f"the page did not render: {dom.stderr[-500:]}"
    images, loaded, sections = map(int, match.groups())
    assert images >= 1 and loaded == images and sections >= 1
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1200,900", (run / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000  # a blank page compresses to far less
