"""The Python API, mirroring the CLI: `lab.generate(method, prompt, model=..., **opts)`.

`Lab` holds one loaded model and runs any registered method on it; `generate` returns a Result with
`.text`, `.tokens` and `.trace`; `stream` yields each Step as it is committed (or pass `on_step`).
Every call decodes on its own fork of the model's backend (same weights, own caches), so one Lab serves
several threads, interleaved streams and abandoned streams alike.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import dllm, drafts, models, registry  # noqa: F401  (lab.dllm registers its model loaders)
from .backends import KINDS, Backend, backend_for
from .decoding import Call, Decoding, drive
from .errors import LabError
from .sampling import Sampling, generator
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
                 *, model_obj=None, tokenizer=None, trust_remote_code: bool = False, backend: str = "auto",
                 device_map: str | None = None, max_memory: str | None = None):
        if model_obj is None:  # device_map / max_memory: a model too large for one device (models.load)
            model_obj, tokenizer = models.load(model, device, dtype, trust_remote_code, device_map, max_memory)
            self.name = model
        else:
            self.name = getattr(model_obj, "name_or_path", "") or type(model_obj).__name__
        self.model = model_obj
        self.tokenizer = tokenizer
        if backend not in KINDS:
            raise LabError(f"unknown backend {backend!r}: use {', '.join(KINDS)}")
        self.backend = backend
        try:
            self.target: Backend = backend_for(model_obj, backend)
        except ValueError as err:
            raise LabError(str(err)) from None
        eos = model_obj.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        self.context_length = getattr(model_obj.config.get_text_config(), "max_position_embeddings", None)
        self._drafts: dict[str, Backend] = {}  # draft spec -> a backend over its weights (each call forks it)
        self._lock = threading.RLock()  # draft("default") asks for draft("fastdraft")

    def fork(self) -> "Lab":
        """Another Lab on the same weights with its own caches and drafts."""
        twin = Lab(self.name, model_obj=self.model, tokenizer=self.tokenizer, backend=self.backend)
        twin.name = self.name
        return twin

    # -- prompts -------------------------------------------------------------------------------------
    def encode(self, prompt: str | list[int], chat: bool = False, special: bool = False) -> list[int]:
        """Token ids of a prompt; `chat` wraps it in the tokenizer's chat template (generation prompt added).

        Text that spells the tokenizer's special tokens (`<|im_end|>` ...) stays text unless `special` is True,
        so a prompt cannot forge chat turns."""
        if not isinstance(chat, bool) or not isinstance(special, bool):
            raise LabError(f"chat and special must be true or false, got chat={chat!r}, special={special!r}")
        if isinstance(prompt, (list, tuple)):
            ids = [self._token_id(t) for t in prompt]
        else:
            if not isinstance(prompt, str) or not prompt.strip():
                raise LabError("empty prompt: give some text (or token ids)")
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:
                raise LabError("the prompt is not valid text (it holds a lone surrogate): fix its encoding") from None
            if self.tokenizer is None:
                raise LabError("this model has no tokenizer: pass the prompt as token ids")
            if chat and not getattr(self.tokenizer, "chat_template", None):
                raise LabError("this tokenizer has no chat template: use chat=false")
            ids = self._chat_ids(prompt, special) if chat else self._text_ids(prompt, special, True)
        if not ids:
            raise LabError("empty prompt: it has no tokens")
        return ids

    def _token_id(self, token) -> int:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.target.vocab_size:
            raise LabError(f"token id {token!r} is not in the vocabulary (0 .. {self.target.vocab_size - 1})")
        return int(token)

    def _text_ids(self, text: str, special: bool, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens,
                                   split_special_tokens=not special)["input_ids"])

    def _chat_ids(self, prompt: str, special: bool) -> list[int]:
        def template(content: str):
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                                     add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

        spelled = [t for t in getattr(self.tokenizer, "all_special_tokens", []) if t and t in prompt]
        if special or not spelled:
            return template(prompt)
        # the template around a placeholder, then the prompt's own tokens (special strings split) in its place
        marker = "\u2063decoding-lab\u2063"
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True,
                                                  tokenize=False)
        before, after = text.split(marker, 1)
        return (self._text_ids(before, True, False) + self._text_ids(prompt, False, False)
                + self._text_ids(after, True, False))

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

    # -- checks ------------------------------------------------------------------------------------
    def check_budget(self, max_new_tokens) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise LabError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")

    def check_context(self, ids: list[int], max_new_tokens: int, what: str = "prompt") -> None:
        if self.context_length and len(ids) + max_new_tokens > self.context_length:
            raise LabError(f"{what} ({len(ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                           f"model's context of {self.context_length}: shorten the prompt or ask for fewer tokens")

    # -- running -----------------------------------------------------------------------------------
    def stream(self, method: str, prompt: str | list[int], *, max_new_tokens: int = 128, temperature: float = 0.0,
               seed: int | None = None, rng: torch.Generator | None = None, chat: bool = False,
               special: bool = False, cancel: Callable[[], bool] | None = None, trace: Trace | None = None,
               sampling: Sampling | None = None, **opts) -> Iterator[Step]:
        """Yield each committed Step; the Trace (pass your own to watch it fill) is complete at the end.
        `special=True` lets text that spells special tokens (`<|im_end|>` ...) be those tokens."""
        info = registry.get(method)
        options = registry.parse_options(info, opts)
        self.check_budget(max_new_tokens)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise LabError(f"seed must be an integer >= 0, got {seed!r}")
        sampling = sampling or Sampling(temperature=temperature)
        ids = self.encode(prompt, chat, special)
        self.check_context(ids, max_new_tokens)
        target = self.target.fork()  # this call's own cache: calls never share one
        if rng is None:
            rng = generator(target.device, seed if seed is not None else random.randrange(2**63))
        trace = trace if trace is not None else Trace(method)
        trace.method, trace.model, trace.options = method, self.name, dict(options)
        trace.temperature, trace.prompt = sampling.temperature, ids
        trace.prompt_text = prompt if isinstance(prompt, str) else self.decode(ids)
        dec = Decoding(target, ids, sampling, rng, max_new_tokens, self.eos, self.tokenizer, Call(self))
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

    def draft(self, spec: str) -> Backend:
        """A draft backend: 'default' (the trained 'fastdraft' on the default model, else half the target's layers),
        'fastdraft' ('fastdraft:full': with the target's whole LM head, not the trimmed one), 'layers:N' (the
        target's first N layers) or another model with the same tokenizer.
        Each is made once per Lab; decoding calls get forks of it (`Call.draft`)."""
        with self._lock:
            if spec not in self._drafts:
                self._drafts[spec] = self._load_draft(spec)
            return self._drafts[spec]

    def _load_draft(self, spec: str) -> Backend:
        if not isinstance(spec, str) or not spec.strip():
            raise LabError("draft: give 'default', 'fastdraft', 'layers:N' or a model (a hub id or a local folder)")
        if spec == "default":  # the trained draft where the lab ships one for this target, else half its layers
            if self.name == models.DEFAULT and drafts.manifest() is not None:
                return self.draft("fastdraft")
            return self.draft(f"layers:{max(1, self.target.num_layers // 2)}")
        if spec in ("fastdraft", "fastdraft:full"):  # :full: the whole LM head, not the trimmed one
            return backend_for(drafts.load_fastdraft(self.model, trim=spec == "fastdraft"), self.backend)
        if drafts.manifest(Path(spec).expanduser()) is not None:  # a folder exported by `train fastdraft`
            return backend_for(drafts.load_fastdraft(self.model, Path(spec).expanduser()), self.backend)
        if spec.startswith("layers:"):
            try:
                n = int(spec.split(":", 1)[1])
            except ValueError:
                raise LabError(f"draft {spec!r}: use layers:N with N a number of layers") from None
            if not 0 < n <= self.target.num_layers:
                raise LabError(f"draft {spec!r}: the target has {self.target.num_layers} layers")
            return self.target.view(list(range(n)))
        model, tokenizer = models.load(spec, str(self.target.device), self.target.dtype)
        if self.tokenizer is not None and tokenizer is None:
            raise LabError(f"draft {spec!r} has no tokenizer: give a model folder with its tokenizer files "
                           "(speculative decoding needs the target's vocabulary)")
        if self.tokenizer is not None and tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise LabError(f"draft {spec!r} has another tokenizer than the target: speculative decoding needs "
                           "the same vocabulary")
        return backend_for(model)


_LABS: dict = {}
_LABS_LOCK = threading.Lock()


def get_lab(model: str = models.DEFAULT, **kwargs) -> Lab:
    """A Lab per model name, kept for the process."""
    key = (model, tuple(sorted(kwargs.items())))
    with _LABS_LOCK:
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
