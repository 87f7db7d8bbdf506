"""The arena in a real browser: served in a thread, driven by Playwright in Debian's Chromium."""
from __future__ import annotations

import shutil
import socket
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail("the arena did not start")


@pytest.fixture(scope="module")
def app_url(default_lab):
    from lab.apps.serve import server

    port = free_port()
    thread = server(port=port, threaded=True, show=False)
    url = f"http://localhost:{port}/"
    wait_until_up(url)
    yield url
    thread.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def open_arena(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.get_by_role("button", name="Run").wait_for(timeout=60_000)
    return page, errors


def test_one_generation_streams_tokens(browser, app_url, tmp_path):
    page, errors = open_arena(browser, app_url)
    page.get_by_role("button", name="Run").click()
    page.locator(".tok").first.wait_for(timeout=120_000)  # tokens appear while the run goes on
    page.get_by_text("Done.").wait_for(timeout=300_000)
    streams = page.locator(".token-stream")
    assert streams.count() == 3  # greedy, pld, sps side by side
    assert page.locator(".tok-draft").count() > 0  # the copy prompt lets drafts be accepted
    texts = [streams.nth(i).locator(".token-text").inner_text() for i in range(3)]
    assert texts[0].strip() and texts[0] == texts[1] == texts[2]  # lossless methods agree at temperature 0
    page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)
    assert not errors, errors


def test_two_sessions_do_not_interfere(browser, app_url):
    one, errors_one = open_arena(browser, app_url)
    two, errors_two = open_arena(browser, app_url)
    one.get_by_role("button", name="Run").click()
    two.get_by_role("button", name="Run").click()
    one.get_by_text("Done.").wait_for(timeout=300_000)
    two.get_by_text("Done.").wait_for(timeout=300_000)
    text = lambda p: [p.locator(".token-text").nth(i).inner_text() for i in range(3)]
    assert text(one) == text(two)
    assert not errors_one and not errors_two
