"""Backends: the only code that calls a model (see base.py for the protocol).

`hf.HFBackend` serves any transformers causal LM on the CPU or a GPU and is the reference every other backend is
tested against; `fast.FastBackend` runs Llama-family models over a static cache with CUDA graphs.
`backend_for(model)` picks the backend for a loaded model.
"""
from __future__ import annotations

from .base import TAPS, Backend, Description, Forward

KINDS = ("auto", "hf", "fast")


def backend_for(model, kind: str = "auto") -> Backend:
    """The backend that runs `model`: 'hf' (the reference), 'fast' (Llama family), or 'auto': fast on a GPU
    when the model is supported, else hf."""
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}: use {', '.join(KINDS)}")
    from .fast import FastBackend, supports
    from .hf import HFBackend
    from .layers import spread

    if spread(model):  # a device_map over several devices: only the HF backend runs it (accelerate moves states)
        if kind == "fast":
            raise ValueError("the fast backend holds a model on one device; this one is spread by a device_map")
        return HFBackend(model)
    on_gpu = next(model.parameters()).device.type == "cuda"
    if kind == "fast" or (kind == "auto" and on_gpu and supports(model) is None):
        return FastBackend(model)
    return HFBackend(model)


__all__ = ["KINDS", "TAPS", "Backend", "Description", "Forward", "backend_for"]
