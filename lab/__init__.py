"""decoding-lab: run, compare and see LLM decoding methods on real Hugging Face models.

    import lab
    result = lab.generate("pld", "Summarize: ...", max_new_tokens=64)
    result.text, result.tokens, result.trace
"""
from .api import Lab, Result, generate, generate_batch, get_lab, stream
from .errors import LabError
from .registry import METHODS, get, load_all, method
from .trace import Step, Trace

__version__ = "0.1.0"
__all__ = ["Lab", "Result", "generate", "generate_batch", "stream", "get_lab", "LabError", "METHODS", "get", "load_all",
           "method", "Step", "Trace"]
