"""Fixtures of the dashboard's browser tests: Debian's chromium driven by Playwright, a daemon of their own, and
screenshots of each view in test-artifacts/screenshots/ (kept out of the repository by .gitignore). tests/conftest.py
registers the fixtures (`browser`, `dashboard`, `page`) for every module; `shot` is imported where it is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hf_server import FakeHub

REPO = Path(__file__).resolve().parents[1]

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
HUB_REPO = "lms-test/Tiny-GGUF"
HUB_FILE = "tiny-Q4_1.gguf"


def _chromium() -> str:
    """Debian's chromium, installed when missing (`playwright install` downloads from elsewhere: not possible
    here)."""
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, capture_output=True, timeout=900, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)  # no package lists yet
        subprocess.run(install, check=True, capture_output=True, timeout=900, env=env)
    return shutil.which("chromium") or CHROMIUM


@pytest.fixture(scope="module")
def browser():
    """Per module, not per session: Playwright's sync API keeps an event loop running on the main thread while it
    is open, and the tests after these (asyncio.run in the unit tests) need it gone."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """A fresh lms with the server on and its dashboard; the bundled chat model is on disk, nothing is loaded.
    The daemon's Hugging Face Hub is `dashboard.hub`, a local one holding `lms-test/Tiny-GGUF` (one GGUF)."""
    from lms.store.catalog import bundled_model_file
    from tests.conftest import _new_lms  # here: tests/conftest.py imports this module

    root = tmp_path_factory.mktemp("dashboard")
    with FakeHub() as hub:
        hub.add_repo(HUB_REPO, {HUB_FILE: bundled_model_file()}, tags=["gguf"], downloads=10)
        instance = _new_lms(root / "home")
        instance.settings.update(hub.client_env(root / "hf-home", base={}))
        instance.hub = hub
        instance.run("server", "start", "-p", str(instance.port))
        try:
            yield instance
        finally:
            instance.stop()


@pytest.fixture
def page(browser, dashboard):
    """A new browser context (its own storage) with the dashboard open; the test fails on a JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(dashboard.base_url + "/ui/")
    opened.errors = errors
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> Path:
    """A full-page screenshot, test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
