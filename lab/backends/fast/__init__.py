"""The fast backend: a static KV cache and CUDA graphs for Llama-family models (see backend.py)."""
from .backend import FastBackend
from .weights import supports

__all__ = ["FastBackend", "supports"]
