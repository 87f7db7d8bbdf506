"""What the learned commitment policies share (learn2pd, tracelock): a small trained filter, its file, where the
shipped one lives, the labels it is trained on, and the commit rule around it.

A filter is a tiny MLP over features of the masked positions of a block (each policy file says which); its
sigmoid outputs estimate, per position, that the current prediction is already the token the reference decoding
(one token per step, low confidence: `llada steps=0`) finally commits there. A policy commits every masked position
of the block the filter accepts (score >= threshold), and always the surest one (the reference's own choice), so a
filter that accepts nothing is one-token-per-step decoding exactly.

The file is JSON (a few KB): kind, policy, the model and block size it was trained on, feature names, input
normalisation and the layers. `python -m lab train learn2pd | tracelock` writes one; the filter for `dllm-default`
ships as lab/data/dllm-default/<policy>.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import LabError
from . import rules

KIND = "decoding-lab/dllm-filter"
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "dllm-default"
LABELS = ("final", "persistent")


class Filter:
    """An MLP (ReLU between layers) on standardised features; `logits(x)` is [n, out] on x's device."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], mean: torch.Tensor, std: torch.Tensor,
                 meta: dict):
        self.layers, self.mean, self.std, self.meta = layers, mean, std, meta
        self._on: dict = {}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._on:
            move = lambda t: t.to(x.device, x.dtype)  # noqa: E731
            self._on[key] = ([(move(w), move(b)) for w, b in self.layers], move(self.mean), move(self.std))
        layers, mean, std = self._on[key]
        h = (x - mean) / std
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h

    def to_dict(self) -> dict:
        rounded = lambda t: [round(v, 6) for v in t.flatten().tolist()]  # noqa: E731
        return {**self.meta, "kind": KIND, "mean": rounded(self.mean), "std": rounded(self.std),
                "layers": [{"shape": list(w.shape), "weight": rounded(w), "bias": rounded(b)} for w, b in self.layers]}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "Filter":
        layers = [(torch.tensor(layer["weight"], dtype=torch.float32).reshape(layer["shape"]),
                   torch.tensor(layer["bias"], dtype=torch.float32)) for layer in data["layers"]]
        meta = {k: v for k, v in data.items() if k not in ("kind", "mean", "std", "layers")}
        return cls(layers, torch.tensor(data["mean"]), torch.tensor(data["std"]), meta)


def load(policy: str, option: str, model: str) -> Filter:
    """The filter a policy runs with: `option` (a file, or a folder holding <policy>.json), else the one shipped for
    dllm-default; a one-line LabError saying how to train one when there is none."""
    train = f"python -m lab train {policy} --model {model or 'MODEL'} --out DIR"
    if option:
        path = Path(option).expanduser()
        path = path / f"{policy}.json" if path.is_dir() else path
        if not path.is_file():
            raise LabError(f"{policy}: no filter at {option!r}: train one with `{train}` and pass filter=DIR")
    elif shipped(policy, model):
        path = SHIPPED / f"{policy}.json"
    else:
        note = " (none is shipped yet)" if model == "dllm-default" else ""
        raise LabError(f"{policy} needs a trained filter for {model or 'this model'}{note}: train one with "
                       f"`{train}` and pass filter=DIR")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LabError(f"{policy}: cannot read the filter {str(path)!r} ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("policy") != policy:
        raise LabError(f"{policy}: {str(path)!r} is not a {policy} filter: train one with `{train}`")
    return Filter.from_dict(data)


def shipped(policy: str, model: str) -> bool:
    """Whether a filter for `policy` ships for `model` (only dllm-default has shipped filters)."""
    return model == "dllm-default" and (SHIPPED / f"{policy}.json").is_file()


def accepted(scores: torch.Tensor, block: list[int], confidence: list[float], threshold: float) -> list[int]:
    """The block rows whose filter score clears `threshold`, and always the surest row (by confidence)."""
    chosen = {j for j, s in zip(block, scores.tolist()) if s >= threshold}  # the step's second sync
    chosen.add(rules.rank(confidence, block)[0])
    return sorted(chosen)


def stability_labels(trajectory: list[dict[int, int]], final: dict[int, int], kind: str = "final") \
        -> list[dict[int, bool]]:
    """Per step of a reference trajectory (position -> the token predicted there while masked), whether each
    prediction is stable. "final": it is the token finally committed there (Learn2PD's oracle; TraceLock's future
    stability); "persistent": besides, no later step predicts anything else there. Positions with no final token
    (past the end of the text) get no label."""
    if kind not in LABELS:
        raise LabError(f"labels={kind!r}: use {' or '.join(LABELS)}")
    out = []
    for s, predicted in enumerate(trajectory):
        labels = {}
        for p, token in predicted.items():
            if p in final:
                labels[p] = token == final[p] and (kind == "final" or all(
                    later.get(p, token) == token for later in trajectory[s + 1:]))
        out.append(labels)
    return out
