"""The arena's Diffusion tab in a real browser: an arena served in a thread whose only diffusion LM is a tiny
random one (through the Labs loader hook), three policies run side by side, driven by Playwright in Chromium."""
from __future__ import annotations

import pytest

from lab.apps.labs import Labs

from ..test_app import browser, free_port, wait_until_up  # noqa: F401  (the browser fixture)
from .helpers import text_dllm

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def tiny_arena_url():
    import panel as pn

    from lab.apps.arena import create_app

    labs = Labs(["tiny-dllm"], load=lambda name: text_dllm())
    labs.get("tiny-dllm")  # loaded before any visit, as `serve` does with its first model
    port = free_port()
    server = pn.serve(lambda: create_app("default", labs), port=port, address="localhost", show=False,
                      threaded=True, verbose=False, websocket_origin=[f"localhost:{port}"])
    url = f"http://localhost:{port}/"
    wait_until_up(url)
    yield url
    server.stop()


def test_policies_run_side_by_side_in_the_browser(browser, tiny_arena_url, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(tiny_arena_url)
    page.get_by_text("Diffusion", exact=True).click()
    page.get_by_role("button", name="Run the policies").click()
    page.get_by_text("Done: 3 runs.").wait_for(timeout=60_000)
    assert page.locator(".dllm-canvas").count() == 3  # llada, fast-dllm, freedave side by side
    heads = [page.locator(".diffusion-header").nth(i).inner_text() for i in range(3)]
    assert [h.split(":")[0] for h in heads] == ["llada", "fast-dllm", "freedave"]
    per_forward = [float(page.locator(".tokens-per-forward").nth(i).inner_text()) for i in range(3)]
    assert per_forward[0] == 1.0 and per_forward[2] > 1.0  # freedave: the same tokens in fewer forwards
    assert all("64 of 64 positions committed" in page.locator(".dllm-canvas").nth(i).inner_text() for i in range(3))
    page.screenshot(path=str(tmp_path / "diffusion.png"), full_page=True)
    assert not errors, errors
