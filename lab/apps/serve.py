"""Serve the arena with Panel at http://localhost:PORT (the default model is loaded before the first visit)."""
from __future__ import annotations


def server(port: int = 5006, model: str = "default", threaded: bool = False, show: bool = False, **kwargs):
    import panel as pn

    from ..api import get_lab
    from .arena import create_app

    get_lab(model)  # convert / load once, before anyone waits on it in the browser
    origins = [f"localhost:{port}", f"127.0.0.1:{port}", f"0.0.0.0:{port}"]
    def app():  # one fresh arena per browser session
        return create_app(model)

    return pn.serve(app, port=port, show=show, threaded=threaded,
                    title="decoding-lab arena", websocket_origin=origins, **kwargs)


def serve(port: int = 5006, show: bool = False, model: str = "default") -> None:
    print(f"decoding-lab arena on http://localhost:{port}", flush=True)
    server(port=port, model=model, show=show)
