"""The arena is safe to serve: this machine only by default, and no DNS rebinding."""
from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest

from .test_app import free_port, wait_until_up


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
