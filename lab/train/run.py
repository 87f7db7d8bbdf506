"""`python -m lab train NAME [options]`: dispatch to a training recipe."""
from __future__ import annotations

import importlib

from ..errors import LabError

RECIPES = {"responses": "lab.train.responses", "fastdraft": "lab.train.fastdraft", "draft-vocab": "lab.train.draft_vocab",
           "dllm": "lab.train.dllm",
           "dllm-data": "lab.train.dllm_data", "dllm-trajectories": "lab.train.dllm_trajectories", "learn2pd": "lab.train.learn2pd", "tracelock": "lab.train.tracelock"}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in RECIPES:
        raise LabError(f"name a recipe: {', '.join(sorted(RECIPES))}")
    importlib.import_module(RECIPES[argv[0]]).main(argv[1:])
