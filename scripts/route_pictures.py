"""Make the README's pictures of information-flow routes (docs/routes.png, docs/rejection.png, docs/lens.png).

    python scripts/route_pictures.py
Needs Debian's Chromium (/usr/bin/chromium) and the lab's dev extras; runs the default model on the CPU.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lab
from lab import interp
from lab.widgets import lens_figure, route_figure

DOCS = Path(__file__).resolve().parent.parent / "docs"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    model = lab.Lab("default")
    flow = interp.flow(model, "The capital of France is")
    route = flow.route(tau=0.04)
    trace = model.generate("layer-skip", "Repeat this list: apples, bananas, cherries, dates.", chat=True,
                           max_new_tokens=24).trace
    event = interp.rejection(model, trace)
    figures = {"routes": route_figure(route), "rejection": route_figure(event.route, event),
               "lens": lens_figure(interp.logit_lens(model, flow, track=(route.predicted,)))}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        for name, fig in figures.items():
            path = Path(tmp) / f"{name}.html"
            path.write_text(fig.update_layout(width=980).to_html(include_plotlyjs=True, full_html=True))
            page.goto(path.as_uri())
            time.sleep(1.0)
            page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
        browser.close()
    print("wrote", ", ".join(f"docs/{name}.png" for name in figures))


if __name__ == "__main__":
    main()
