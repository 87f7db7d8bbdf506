"""`python -m lab bench NAME [options]`: dispatch to a benchmark."""
from __future__ import annotations

import importlib

from ..errors import LabError

BENCHMARKS = {"greedy-vs-hf": "lab.bench.greedy_vs_hf", "spec": "lab.bench.spec", "engine": "lab.bench.engine",
              "gpu": "lab.bench.gpu", "routes": "lab.bench.routes", "dllm": "lab.bench.dllm"}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in BENCHMARKS:
        raise LabError(f"name a benchmark: {', '.join(sorted(BENCHMARKS))}")
    importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
