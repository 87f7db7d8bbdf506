"""Backends: the only code that calls a model (see base.py for the protocol).

`hf.HFBackend` serves any transformers causal LM on the CPU or a GPU and is the reference every other backend is
tested against. `backend_for(model)` picks the backend for a loaded model.
"""
from __future__ import annotations

from .base import TAPS, Backend, Description, Forward


def backend_for(model, kind: str = "auto") -> Backend:
    """The backend that runs `model`: 'hf' (the reference; also what 'auto' picks today)."""
    if kind not in ("auto", "hf"):
        raise ValueError(f"unknown backend {kind!r}: use 'auto' or 'hf'")
    from .hf import HFBackend

    return HFBackend(model)


__all__ = ["TAPS", "Backend", "Description", "Forward", "backend_for"]
