"""Diffusion LMs: the one denoise -> commit loop over a canvas (loop.py, denoiser.py), what policies share
(rules.py), the model spec and tiny stand-ins (model.py), loading LLaDA / Dream / dllm-default (models.py), and
the commitment policies (policies/, one file each)."""
from . import models  # noqa: F401  (registers the dLLM loaders with lab.models)
from .denoiser import CACHES, Denoiser
from .model import DLLM, spec_of, tiny_dllm

__all__ = ["DLLM", "Denoiser", "CACHES", "spec_of", "tiny_dllm"]
