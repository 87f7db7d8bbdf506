"""What every benchmark writes: its JSON (settings and summary indented, one line per run) and its figures (one HTML
beside the JSON, and a PNG per figure through headless Chromium where the machine has it)."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from collections.abc import Callable

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=4000"]


def to_json(results: dict) -> str:
    """The results as JSON: settings and summary indented, one line per run."""
    head = json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1)
    runs = ",\n  ".join(json.dumps(r) for r in results["runs"])
    return head[:-2] + f',\n "runs": [\n  {runs}\n ]\n}}\n'


def html_to_png(html_path: Path, png_path: Path, width: int = 1000, height: int = 520) -> bool:
    """Screenshot an HTML file with headless Chromium (Debian's /usr/bin/chromium); False if there is none."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        return False
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png_path.resolve()}", html_path.resolve().as_uri()]
        subprocess.run(cmd, capture_output=True, timeout=120)
    return png_path.exists()


def write_figures(figures: dict, out: Path, png: bool = True, height: int = 520) -> list[Path]:
    """One HTML of every figure beside `out` (the JSON), and one PNG per figure named `<stem>_<name>.png`."""
    html = out.with_suffix(".html")
    parts = [fig.to_html(include_plotlyjs="cdn" if i == 0 else False, full_html=False)
             for i, fig in enumerate(figures.values())]
    html.write_text(f"<html><head><meta charset='utf-8'><title>{out.stem}</title></head><body>"
                    + "".join(parts) + "</body></html>")
    written = [html]
    if png:
        with tempfile.TemporaryDirectory() as tmp:
            for name, fig in figures.items():
                page = Path(tmp) / f"{name}.html"
                page.write_text(fig.to_html(include_plotlyjs=True, full_html=True,
                                            config={"displayModeBar": False, "staticPlot": True}))
                target = out.with_name(f"{out.stem}_{name}.png")
                if html_to_png(page, target, int(fig.layout.width or 1000), int(fig.layout.height or height)):
                    written.append(target)
    return written


def save(results: dict, out: Path, figures: Callable[[], dict] | None, png: bool = True, height: int = 520) -> None:
    """A bench's output: the JSON at `out`, then its figures beside it unless `figures` is None (--no-plots); says
    what it wrote."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(results))
    written = [] if figures is None else write_figures(figures(), out, png, height)
    print(f"\nwrote {out}" + "".join(f", {p}" for p in written))
