"""The arena is safe to serve: this machine only by default, no DNS rebinding, only the models it was started with
(a few at most), user text never rendered as markup, and an error keeps the last result on show."""
from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest

from lab.apps.labs import Labs
from lab.errors import LabError

from .test_app import browser, free_port, wait_until_up  # noqa: F401 (fixtures)

INJECTION = '<img src=x onerror="window.pwned = 1">'


def test_labs_serve_only_allowed_models_and_keep_a_few():
    loads = []
    labs = Labs(["mine"], size=2, load=lambda name: loads.append(name) or f"lab of {name}")
    assert labs.get(" default ") == "lab of default" and labs.get("mine") == "lab of mine"
    for name in (INJECTION, "./some/folder", "HuggingFaceTB/SmolLM2-360M", ""):
        with pytest.raises(LabError, match="not served here"):
            labs.get(name)
    assert loads == ["default", "mine"]  # refused before anything loads
    labs.get("default")
    labs.allow_any = True
    labs.get("other")  # the third: 'mine', the least recently used, is dropped ...
    labs.get("mine")  # ... and loaded again
    assert loads == ["default", "mine", "other", "mine"]


@pytest.fixture(scope="module")
def arena_url():
    from lab.apps.serve import server

    port = free_port()
    thread = server(port=port, threaded=True, show=False)
    wait_until_up(f"http://localhost:{port}/")
    yield port
    thread.stop()


def test_served_on_this_machine_only(arena_url):
    port = arena_url
    with socket.socket() as s:  # listening on every interface would hold this address's port too
        s.bind(("127.0.0.2", port))
    page = lambda host: urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/",
                                                                      headers={"Host": host}), timeout=30)
    assert page(f"localhost:{port}").status == 200 and page(f"127.0.0.1:{port}").status == 200
    with pytest.raises(urllib.error.HTTPError, match="403"):
        page(f"rebound.example:{port}")  # a foreign page whose name now resolves to 127.0.0.1


def test_websocket_only_from_localhost(arena_url):
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    port = arena_url

    async def connect(origin: str, host: str | None = None) -> int:
        headers = {"Origin": origin, **({"Host": host} if host else {})}
        try:
            ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers),
                                         subprotocols=["bokeh"])
        except Exception as err:
            return getattr(err, "code", 0)
        ws.close()
        return 101

    assert asyncio.run(connect(f"http://localhost:{port}")) == 101
    assert asyncio.run(connect(f"http://evil.example:{port}")) == 403
    assert asyncio.run(connect(f"http://evil.example:{port}", host=f"evil.example:{port}")) == 403  # DNS rebinding


def test_an_error_keeps_the_last_result():
    from lab.apps.arena import Arena

    arena = Arena("default")
    arena.methods.value, arena.max_tokens.value = ["greedy"], 3
    arena.start()
    arena._worker.join()
    arena.refresh()
    shown = arena.streams.objects[0].object
    assert "3 tokens" in shown and arena.message == "Done."
    arena.model.value = INJECTION
    arena.start()
    arena._worker.join()
    arena.refresh()
    assert arena.streams.objects[0].object == shown and list(arena.traces) == ["greedy"]
    assert "not served here" in arena.status.object and "<img" not in arena.status.object


@pytest.mark.browser
def test_injected_model_name_is_text(browser, arena_url):  # noqa: F811
    """Markup typed into the model field is refused before any load and shown as text, in both tabs."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"http://localhost:{arena_url}/")
    page.get_by_role("button", name="Run").wait_for(timeout=60_000)
    field = page.get_by_role("textbox").first
    field.fill(INJECTION)
    field.press("Enter")
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Drafters", exact=True).click()
    page.get_by_role("button", name="Start the drafters").click()
    messages = [page.locator(f".{pane}-status").get_by_text("Error:") for pane in ("arena", "drafters")]
    for message in messages:
        message.wait_for(timeout=30_000)
    assert page.evaluate("window.pwned") is None and page.locator('img[src="x"]').count() == 0
    for message in messages:  # the markup shown as text, and refused before any model load
        assert INJECTION in message.inner_text() and "is not served here" in message.inner_text()
    page.close()
