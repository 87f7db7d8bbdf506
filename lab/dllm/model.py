"""What makes a model a diffusion LM here: a mask token, shifted logits or not, and what its canvas may see.

A `DLLM` spec rides on the model object (`model.dllm`), so a Lab, its forks and the registry find it through the
backend's weights. Two kinds of attention:

- "global" (LLaDA, Dream): every token of prompt and canvas sees every other; semi-autoregressive blocks are only
  a schedule of which positions may be committed.
- "block" (block diffusion: BD3-LM, Fast-dLLM v2, SDAR, the lab's `dllm-default`): the prompt and every finished
  block are clean context seen causally (the autoregressive model's own cache), and the block being denoised
  sees that context and itself both ways. The trained block size is part of the model.

`shift` (Dream, and the lab's conversions of autoregressive models): the logits at position i predict token i+1,
as in the autoregressive model the weights came from; without it (LLaDA) position i predicts itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import LabError

ATTENTION = ("global", "block")


@dataclass(frozen=True)
class DLLM:
    mask_id: int
    shift: bool = False
    attention: str = "global"
    block_size: int | None = None  # the block size a block-diffusion model was trained with

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ValueError(f"attention is one of {ATTENTION}, got {self.attention!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def spec_of(backend, method: str = "this method") -> DLLM:
    """The DLLM spec of the model behind a backend, or a LabError naming the fix."""
    spec = getattr(backend.weights, "dllm", None)
    if not isinstance(spec, DLLM):
        raise LabError(f"{method} needs a diffusion LM (a model with a mask token): use --model dllm-default, "
                       "a LLaDA or Dream hub id with trust_remote_code, or lab.dllm.tiny_dllm() in tests")
    return spec


def tiny_dllm(attention: str = "block", shift: bool = True, mask_id: int = 3, vocab_size: int = 64,
              block_size: int | None = 4, **kwargs):
    """A tiny random Llama used as a diffusion LM (tests): the backend gives it block-bidirectional visibility.
    Its predictions never depend on training; what tests check is the mechanism (caches, exactness, counting)."""
    from ..models import tiny

    model = tiny("llama", vocab_size=vocab_size, **kwargs)
    model.dllm = DLLM(mask_id=mask_id, shift=shift, attention=attention,
                      block_size=block_size if attention == "block" else None)
    model.name_or_path = f"tiny-dllm-{attention}"
    return model
