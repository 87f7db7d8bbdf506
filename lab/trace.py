"""The Trace every method emits: what was proposed, accepted and committed at each step, where, and when.

Widgets, apps, benchmarks and tests read Traces and nothing else, so a new method gets its pictures and its
numbers for free. A Step commits (position, token) pairs: left to right for autoregressive and speculative
methods, in any order for a diffusion canvas. Metrics follow the speculative-decoding literature: tokens per
target forward and the mean accepted length tau (accepted draft tokens + 1 per verification step).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .tree import depths

FORMAT_VERSION = 2  # 2: Steps carry positions (always), confidence and an optional canvas snapshot
ORIGINS = ("plain", "draft", "bonus")  # a token chosen by the target alone / an accepted draft / the target's token after a draft


@dataclass
class Step:
    """One propose -> score -> commit round.

    `proposed`/`parents`/`draft_probs` describe the draft tree (parent -1 is the root, the last committed
    token); `accepted` are indices into `proposed` along the accepted path; `bonus` is the token the
    target chose after it. `committed` are the tokens this step added to the output, `origin` says where each
    came from, `positions` where in the output each one went (0 is the first new token; the driver fills them
    in for methods that append), `confidence` the method's confidence in each when it has one, and `canvas` an
    optional snapshot of the whole output canvas after the step (-1 where nothing is committed yet).
    """

    committed: list[int] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    proposed: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    draft_probs: list[float] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    bonus: int | None = None
    positions: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    canvas: list[int] | None = None
    forwards: int = 1
    draft_forwards: int = 0
    prefill: bool = False
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def speculative(self) -> bool:
        return bool(self.proposed)


@dataclass
class Trace:
    """A whole run: the method, its settings, the prompt, the steps and the generated tokens."""

    method: str
    model: str = ""
    options: dict = field(default_factory=dict)
    temperature: float = 0.0
    prompt: list[int] = field(default_factory=list)
    prompt_text: str = ""
    steps: list[Step] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    pieces: list[str] = field(default_factory=list)
    vocab: dict = field(default_factory=dict)  # str(token id) -> its text, for every token a step shows
    stop: str = ""
    prefill_s: float = 0.0
    wall_s: float = 0.0

    # -- metrics ---------------------------------------------------------------------------------
    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def forwards(self) -> int:
        """Target forward passes after the prefill."""
        return sum(s.forwards for s in self.steps)

    @property
    def draft_forwards(self) -> int:
        return sum(s.draft_forwards for s in self.steps)

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / max(self.forwards, 1)

    @property
    def spec_steps(self) -> list[Step]:
        return [s for s in self.steps if s.speculative]

    @property
    def mean_accepted(self) -> float:
        """tau: accepted draft tokens plus the bonus, averaged over verification steps."""
        steps = self.spec_steps
        return sum(len(s.accepted) + 1 for s in steps) / len(steps) if steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens over proposed tree depth, averaged over verification steps."""
        steps = self.spec_steps
        if not steps:
            return 0.0
        return sum(len(s.accepted) / max(depths(s.parents)) for s in steps) / len(steps)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def token_text(self, token: int) -> str:
        return self.vocab.get(str(token), str(token))

    def origins(self) -> list[str]:
        """The origin of every generated token, in output order."""
        by_position: dict[int, str] = {}
        flat: list[str] = []
        for step in self.steps:
            flat.extend(step.origin)
            for position, origin in zip(step.positions, step.origin):
                by_position[position] = origin
        if len(by_position) >= self.new_tokens:
            return [by_position[i] for i in range(self.new_tokens)]
        return flat[: self.new_tokens]  # a version-1 Trace: no positions, tokens were appended in order

    def commit_order(self) -> list[int]:
        """For each output position, the index of the step that committed it (when each token was decided)."""
        out: dict[int, int] = {}
        for n, step in enumerate(self.steps):
            for position in step.positions:
                out.setdefault(position, n)
        return [out.get(i, -1) for i in range(self.new_tokens)]

    def metrics(self) -> dict:
        return {"new_tokens": self.new_tokens, "forwards": self.forwards,
                "tokens_per_forward": round(self.tokens_per_forward, 4),
                "mean_accepted": round(self.mean_accepted, 4), "draft_forwards": self.draft_forwards,
                "wall_s": round(self.wall_s, 4), "tokens_per_s": round(self.tokens_per_s, 2)}

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Trace":
        version = data.get("format", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"trace format {version!r} is newer than this lab reads ({FORMAT_VERSION}): "
                             "upgrade decoding-lab")
        names = {f.name for f in fields(cls)}
        trace = cls(**{k: v for k, v in data.items() if k in names and k != "steps"})
        step_names = {f.name for f in fields(Step)}
        trace.steps = [Step(**{k: v for k, v in s.items() if k in step_names}) for s in data.get("steps", [])]
        return trace

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Trace":
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))
