"""Make the README's pictures: the arena after a run, and the three views of a pld run (docs/*.png).

    python scripts/screenshots.py
Needs Debian's Chromium (/usr/bin/chromium) and the lab's dev extras.
"""
from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

from lab.widgets import acceptance_figure, draft_tree_figure, token_stream_html

import lab

DOCS = Path(__file__).resolve().parent.parent / "docs"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PROMPT = "Repeat this list exactly, one item per line: apples, bananas, cherries, dates, elderberries, figs, grapes."


def main() -> None:
    from playwright.sync_api import sync_playwright

    DOCS.mkdir(exist_ok=True)
    trace = lab.generate("pld", PROMPT, chat=True, max_new_tokens=48).trace
    tree_trace = lab.generate("specinfer", PROMPT, chat=True, max_new_tokens=24, expansion="3,2,1").trace
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 760, "height": 420})
        views = {"token_stream": f"<html><body style='margin:12px'>{token_stream_html(trace)}</body></html>",
                 "draft_tree": draft_tree_figure(tree_trace).to_html(include_plotlyjs=True, full_html=True),
                 "acceptance": acceptance_figure(trace).update_layout(width=740).to_html(include_plotlyjs=True)}
        for name, html in views.items():
            path = Path(tmp) / f"{name}.html"
            path.write_text(html)
            page.goto(path.as_uri())
            time.sleep(1.0)
            page.screenshot(path=str(DOCS / f"{name}.png"), full_page=name == "token_stream")
        from lab.apps.serve import server

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        thread = server(port=port, threaded=True)
        time.sleep(3)
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        page.goto(f"http://localhost:{port}/")
        page.get_by_role("button", name="Run").click()
        page.get_by_text("Done.").wait_for(timeout=600_000)
        page.get_by_text("Table").click()
        time.sleep(1.5)
        page.screenshot(path=str(DOCS / "arena.png"))
        thread.stop()
        browser.close()
    print("wrote", ", ".join(sorted(p.name for p in DOCS.glob("*.png"))))


if __name__ == "__main__":
    main()
