"""Keep notebooks small in git: drop widget state and rich outputs, keep short text outputs (nbval checks those).

    python scripts/strip_notebooks.py notebooks/*.ipynb
"""
import sys

import nbformat

KEEP = {"stream", "error"}


def strip(path: str) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type in KEEP:
                kept.append(out)
            elif "text/plain" in out.get("data", {}) and len(out["data"]) == 1:
                kept.append(out)
        cell.outputs = kept
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        strip(p)
