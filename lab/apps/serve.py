"""Serve the arena with Panel, on this machine only unless told otherwise; the first model loads before any visit.

It listens on localhost and answers (page and websocket alike) only requests addressed to localhost:PORT or
127.0.0.1:PORT, which also shuts out a foreign page whose name was made to resolve to 127.0.0.1 (DNS rebinding).
`address` and `allow_websocket_origin` open it to other machines on purpose, as in `panel serve`.
"""
from __future__ import annotations

import errno

from bokeh.server.auth_provider import AuthProvider
from bokeh.server.util import check_allowlist, create_hosts_allowlist
from tornado import netutil
from tornado.web import HTTPError

from ..errors import LabError


def bind_port(address: str, port: int) -> int:
    """The port the arena will get on `address` (a free one for 0); a LabError, before any model loads, if none."""
    if not 0 <= port <= 65535:
        raise LabError(f"--port {port}: use 1 to 65535 (0: any free port)")
    try:
        sockets = netutil.bind_sockets(port, address)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise LabError(f"port {port} on {address} is in use: stop what uses it or pick another --port "
                           "(0: any free port)") from None
        raise LabError(f"cannot listen on {address}:{port} ({err.strerror or err}): check --address") from None
    port = sockets[0].getsockname()[1]
    for s in sockets:
        s.close()
    return port


class KnownHosts(AuthProvider):
    """Answer only requests whose Host header is in the allow list (as the websocket's Origin must be)."""

    def __init__(self, hosts: list[str]):
        self.hosts = hosts
        super().__init__()

    @property
    def get_user(self):
        return lambda handler: "visitor" if check_allowlist(handler.request.host.lower(), self.hosts) else None

    @property
    def get_login_url(self):
        def refuse(handler):
            raise HTTPError(403, reason="this arena answers only to " + ", ".join(self.hosts))
        return refuse


def server(port: int = 5006, model: str = "default", address: str = "localhost",
           allow_websocket_origin: list[str] = (), models: list[str] = (), allow_any_model: bool = False,
           max_models: int = 2, threaded: bool = False, show: bool = False, announce: bool = False, **kwargs):
    """Serve the arena (on a thread with `threaded`, else block). Bad settings and a busy port raise a LabError
    before the model loads; `announce` prints the address with the port really got (port 0: any free one)."""
    import panel as pn

    from .arena import create_app
    from .labs import Labs

    port = bind_port(address, port)
    labs = Labs([model, *models], allow_any=allow_any_model, size=max_models)
    try:
        hosts = create_hosts_allowlist([f"localhost:{port}", f"127.0.0.1:{port}", *allow_websocket_origin], port)
    except ValueError as err:
        raise LabError(f"--allow-websocket-origin: {err}; use HOST:PORT") from None
    labs.get(model)  # convert / load once, before anyone waits on it in the browser
    if announce:
        print(f"decoding-lab arena on http://{address}:{port}", flush=True)

    def app():  # one fresh arena per browser session
        return create_app(model, labs)

    return pn.serve(app, port=port, address=address, show=show, threaded=threaded, verbose=False,
                    title="decoding-lab arena", websocket_origin=hosts, auth_provider=KnownHosts(hosts), **kwargs)


def serve(**kwargs) -> None:
    """`python -m lab serve`: `server` in the foreground, its address printed."""
    server(announce=True, **kwargs)
