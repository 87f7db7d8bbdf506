"""The Python API, mirroring the CLI: `lab.generate(method, prompt, model=..., **opts)`.

`Lab` holds one loaded model and runs any registered method on it; `generate` returns a Result with
`.text`, `.tokens` and `.trace`; `stream` yields each Step as it is committed (or pass `on_step`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from . import models, registry
from .decoding import Decoding, drive
from .errors import LabError
from .runner import Runner
from .sampling import Sampling
from .trace import Step, Trace


@dataclass
class Result:
    trace: Trace

    @property
    def text(self) -> str:
        return self.trace.text

    @property
    def tokens(self) -> list[int]:
        return self.trace.tokens

    def __repr__(self) -> str:
        m = self.trace.metrics()
        return (f"Result({self.trace.method}: {m['new_tokens']} tokens, {m['forwards']} forwards, "
                f"{m['tokens_per_forward']:.2f} tokens/forward, text={self.text[:60]!r})")


class Lab:
    """One model (target) and its tokenizer, ready to run any method."""

    def __init__(self, model: str = models.DEFAULT, device: str | None = None, dtype: torch.dtype | None = None,
                 *, model_obj=None, tokenizer=None, trust_remote_code: bool = False):
        if model_obj is None:
            model_obj, tokenizer = models.load(model, device, dtype, trust_remote_code)
            self.name = model
        else:
            self.name = getattr(model_obj, "name_or_path", "") or type(model_obj).__name__
        self.model = model_obj
        self.tokenizer = tokenizer
        self.target = Runner(model_obj)
        eos = model_obj.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        self.context_length = getattr(model_obj.config.get_text_config(), "max_position_embeddings", None)
        self._drafts: dict = {}

    def fork(self) -> "Lab":
        """Another Lab on the same weights with its own caches (one per app session or thread)."""
        return Lab(self.name, model_obj=self.model, tokenizer=self.tokenizer)._named(self.name)

    def _named(self, name: str) -> "Lab":
        self.name = name
        return self

    # -- prompts -------------------------------------------------------------------------------------
    def encode(self, prompt: str | list[int], chat: bool = False) -> list[int]:
        """Token ids of a prompt; `chat` wraps it in the tokenizer's chat template (generation prompt added)."""
        if isinstance(prompt, (list, tuple)):
            ids = [int(t) for t in prompt]
        else:
            if not isinstance(prompt, str) or not prompt.strip():
                raise LabError("empty prompt: give some text (or token ids)")
            if self.tokenizer is None:
                raise LabError("this model has no tokenizer: pass the prompt as token ids")
            if chat:
                if not getattr(self.tokenizer, "chat_template", None):
                    raise LabError("this tokenizer has no chat template: use chat=false")
                ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                         add_generation_prompt=True, tokenize=True)
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            else:
                ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            raise LabError("empty prompt: it has no tokens")
        return ids

    def decode(self, tokens: list[int]) -> str:
        if self.tokenizer is None:
            return " ".join(map(str, tokens))
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        """A token's own text (for tree views), spaces and newlines kept."""
        if self.tokenizer is None:
            return str(token)
        return self.tokenizer.decode([int(token)])

    def _piece(self, tokens: list[int], i: int) -> str:
        """The text token i adds (decoded with a few tokens of left context, for multi-byte characters)."""
        if self.tokenizer is None:
            return f"{tokens[i]} "
        lo = max(0, i - 4)
        return self.tokenizer.decode(tokens[lo:i + 1]).removeprefix(self.tokenizer.decode(tokens[lo:i]))

    # -- running -----------------------------------------------------------------------------------
    def stream(self, method: str, prompt: str | list[int], *, max_new_tokens: int = 128, temperature: float = 0.0,
               seed: int | None = None, rng: torch.Generator | None = None, chat: bool = False,
               cancel: Callable[[], bool] | None = None, trace: Trace | None = None,
               sampling: Sampling | None = None, **opts) -> Iterator[Step]:
        """Yield each committed Step; the Trace (pass your own to watch it fill) is complete at the end."""
        info = registry.get(method)
        options = registry.parse_options(info, opts)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise LabError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        sampling = sampling or Sampling(temperature=float(temperature))
        ids = self.encode(prompt, chat)
        if self.context_length and len(ids) + max_new_tokens > self.context_length:
            raise LabError(f"prompt ({len(ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                           f"model's context of {self.context_length}: shorten the prompt or ask for fewer tokens")
        if rng is None:
            rng = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**63))
        trace = trace if trace is not None else Trace(method)
        trace.method, trace.model, trace.options = method, self.name, dict(options)
        trace.temperature, trace.prompt = sampling.temperature, ids
        trace.prompt_text = prompt if isinstance(prompt, str) else self.decode(ids)
        dec = Decoding(self.target, ids, sampling, rng, max_new_tokens, self.eos, self.tokenizer, self)
        return self._run(dec, info.fn(dec, **options), trace, cancel)  # all checks above ran eagerly

    def _run(self, dec: Decoding, steps: Iterator[Step], trace: Trace, cancel) -> Iterator[Step]:
        try:
            yield from drive(dec, steps, trace, self._piece, cancel, self.token_text)
        finally:
            trace.text = self.decode(trace.tokens)

    def generate(self, method: str, prompt: str | list[int], *, on_step: Callable[[Step, Trace], None] | None = None,
                 **kwargs) -> Result:
        """Run a method to the end and return its Result; `on_step(step, trace)` sees every commit."""
        trace = Trace(method)
        for step in self.stream(method, prompt, trace=trace, **kwargs):
            if on_step is not None:
                on_step(step, trace)
        return Result(trace)

    def generate_batch(self, method: str, prompts: list, **kwargs) -> list[Result]:
        """Run a batched method (bass, tetris, sps, pld ...) on several prompts together: one Result per prompt,
        in order. Options as in `generate` (max_new_tokens, temperature, seed, rng, chat, method options)."""
        from .batch import generate_batch

        return [Result(trace) for trace in generate_batch(self, method, prompts, **kwargs)]

    def draft(self, spec: str) -> Runner:
        """A draft runner: 'layers:N' (the target's first N layers) or another model with the same tokenizer."""
        if spec not in self._drafts:
            if spec.startswith("layers:"):
                try:
                    n = int(spec.split(":", 1)[1])
                except ValueError:
                    raise LabError(f"draft {spec!r}: use layers:N with N a number of layers") from None
                if not 0 < n <= self.target.num_layers:
                    raise LabError(f"draft {spec!r}: the target has {self.target.num_layers} layers")
                self._drafts[spec] = self.target.view(list(range(n)))
            else:
                model, tokenizer = models.load(spec, str(self.target.device), self.target.dtype)
                if self.tokenizer is not None and tokenizer.get_vocab() != self.tokenizer.get_vocab():
                    raise LabError(f"draft {spec!r} has another tokenizer than the target: speculative "
                                   "decoding needs the same vocabulary")
                self._drafts[spec] = Runner(model)
        return self._drafts[spec]


_LABS: dict = {}


def get_lab(model: str = models.DEFAULT, **kwargs) -> Lab:
    """A Lab per model name, kept for the process."""
    key = (model, tuple(sorted(kwargs.items())))
    if key not in _LABS:
        _LABS[key] = Lab(model, **kwargs)
    return _LABS[key]


def generate(method: str, prompt: str | list[int], model: str = models.DEFAULT, **kwargs) -> Result:
    """Run `method` on `prompt` with `model`; keyword options as in the CLI (max_new_tokens, temperature, ...)."""
    return get_lab(model).generate(method, prompt, **kwargs)


def generate_batch(method: str, prompts: list, model: str = models.DEFAULT, **kwargs) -> list[Result]:
    """Run a batched method on several prompts at once with `model`; one Result per prompt, in order."""
    return get_lab(model).generate_batch(method, prompts, **kwargs)


def stream(method: str, prompt: str | list[int], model: str = models.DEFAULT, **kwargs) -> Iterator[Step]:
    return get_lab(model).stream(method, prompt, **kwargs)
