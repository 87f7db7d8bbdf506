"""Regenerate the methods table in README.md from the registry (between the METHODS markers).

    python scripts/readme_methods.py          # rewrite README.md
    python scripts/readme_methods.py --check  # exit 1 if the table is stale (the tests run this)
"""
import sys
from pathlib import Path

import lab

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- METHODS:BEGIN -->", "<!-- METHODS:END -->"


def table() -> str:
    rows = ["| method | family | lossless | training-free | paper | departures from the paper |",
            "|---|---|---|---|---|---|"]
    for m in sorted(lab.load_all().values(), key=lambda m: (m.family, m.name)):
        rows.append(f"| `{m.name}` | {m.family} | {'yes' if m.lossless else 'no'} | "
                    f"{'yes' if m.training_free else 'no'} | {m.paper} | {m.departures.replace('|', '/')} |")
    return "\n".join(rows)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    current = README.read_text()
    fresh = render(current)
    if "--check" in sys.argv:
        sys.exit(0 if fresh == current else 1)
    README.write_text(fresh)
