"""Which layers could each token have skipped? An oracle, compared with what layer-skip, clasp and del chose.

After the oracle of "Duo-LLM: A Framework for Studying Adaptive Computation in Large Language Models" (Alizadeh
et al., 2024): for every generated token, which layers can be skipped for that token alone without changing the
model's argmax. Three readings per token, all on the full model's own KV cache of the context (as a
self-speculative draft sees it):

- `exits[t][E]`: the argmax of the early exit after E layers (the logit lens with the final norm; E = L is the
  model itself), so the earliest exit that predicts the token is known;
- `skippable[t][l]`: skipping layer l alone keeps the argmax (one forward per layer through the other layers);
- `greedy[t]` (optional): a large skip set, grown by adding the layers whose lone skip hurt the token's logit
  margin least while the argmax stays.

Departures from Duo-LLM: the criterion is the argmax, not the loss; the search is per layer and greedy, not over
every configuration; attention and FFN of a layer are skipped together.
`compare` then reads a Trace of layer-skip or del (`exit_layer` in each Step's info) or clasp (`skipped`): did
the chosen exit or skip set predict each token the step committed, and how far was it from the oracle's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import LabError
from ..trace import Trace


@dataclass
class SkipOracle:
    layers: int
    prompt: list[int]
    tokens: list[int]  # the model's own (argmax) token at each generated position examined
    exits: list[list[int]]  # [n][L + 1]: argmax of the exit after E layers (E = 0: the embeddings)
    skippable: list[list[bool]]  # [n][L] ([] when not asked for)
    greedy: list[list[int]] | None = None
    agrees: list[bool] = field(default_factory=list)  # the trace's token is the model's argmax (a greedy run)

    def earliest_exit(self, t: int) -> int:
        """The fewest layers whose early exit predicts token t (L if only the whole model does)."""
        return next(e for e in range(1, self.layers + 1) if self.exits[t][e] == self.tokens[t])

    def skippable_share(self) -> list[float]:
        """Per layer, the fraction of tokens for which skipping it alone keeps the argmax."""
        n = max(len(self.tokens), 1)
        return [sum(row[layer] for row in self.skippable) / n for layer in range(self.layers)]


def _step(view, token: int) -> torch.Tensor:
    view.start()
    try:
        return view.step(token).float()
    finally:
        view.finish()


def _margin(logits: torch.Tensor, token: int) -> float:
    others = logits.clone()
    others[token] = -float("inf")
    return float(logits[token] - others.max())


@torch.no_grad()
def skip_oracle(lab, trace: Trace, *, max_tokens: int = 16, alone: bool = True, greedy: bool = False) -> SkipOracle:
    """The oracle for the first `max_tokens` generated tokens of `trace` (run on `lab`'s model): early exits
    always (one forward), lone-layer skips with `alone` (one forward per layer and token), greedy sets with
    `greedy` (up to one more per layer and token)."""
    if not trace.tokens:
        raise LabError("the trace has no generated tokens to examine")
    if max_tokens < 1:
        raise LabError(f"max_tokens must be >= 1, got {max_tokens}")
    target, L = lab.target, lab.target.num_layers
    ids = list(trace.prompt) + list(trace.tokens)
    start, n = len(trace.prompt), min(max_tokens, len(trace.tokens))
    full = target.fork().forward(ids[:start + n - 1], taps=("hidden",))
    rows = list(range(start - 1, start + n - 1))  # the positions that predict the tokens examined
    model_tokens = full.logits[rows].argmax(-1).tolist()
    exits = torch.stack([target.exit_logits(full.hidden[e][rows]).argmax(-1) for e in range(L)]
                        + [full.logits[rows].argmax(-1)], 1).tolist()
    agrees = [a == b for a, b in zip(model_tokens, trace.tokens[:n])]
    if not (alone or greedy):
        return SkipOracle(L, list(trace.prompt), model_tokens, exits, [], None, agrees)
    owner = target.fork()
    if start > 1:
        owner.forward(ids[:start - 1], logits=False)
    lone = [owner.draft_on_cache([i for i in range(L) if i != layer]) for layer in range(L)]
    skippable, sets = [], []
    for t in range(n):
        token, previous = model_tokens[t], ids[start + t - 1]
        logits = [_step(view, previous) for view in lone]
        skippable.append([int(x.argmax()) == token for x in logits])
        if greedy:
            order = sorted((layer for layer in range(L) if skippable[-1][layer]),
                           key=lambda layer: -_margin(logits[layer], token))
            chosen: list[int] = []
            for layer in order:
                trial = sorted(chosen + [layer])
                view = owner.draft_on_cache([i for i in range(L) if i not in trial])
                if int(_step(view, previous).argmax()) == token:
                    chosen = trial
            sets.append(chosen)
        owner.forward([previous], logits=False)
    return SkipOracle(L, list(trace.prompt), model_tokens, exits, skippable, sets if greedy else None, agrees)


@torch.no_grad()
def compare(lab, oracle: SkipOracle, trace: Trace) -> list[dict]:
    """Per speculative step within the oracle's tokens: what the method chose (`choice`, `layers_run`), whether that
    choice predicts each token the step committed (`hits`; the first is the draft's first token, so at T = 0 it
    hit exactly when a draft token was accepted), and the oracle's earliest exit (and greedy layers run)."""
    L, rows, views = oracle.layers, [], {}
    ids = oracle.prompt + list(trace.tokens)
    owner = None
    for n, step in enumerate(trace.steps):
        tokens = [q for q in step.positions if q < len(oracle.tokens)]
        if not step.proposed or not tokens:
            continue
        row = {"step": n, "tokens": len(tokens), "accepted": len(step.accepted),
               "earliest_exit": [oracle.earliest_exit(q) for q in tokens]}
        if isinstance(step.info.get("exit_layer"), int):
            e = step.info["exit_layer"]
            hits = [oracle.exits[q][e] == oracle.tokens[q] for q in tokens]
            row.update(choice=f"exit after {e}", layers_run=e, hits=hits, predicted=sum(hits))
        elif isinstance(step.info.get("skipped"), list):
            skipped = sorted(step.info["skipped"])
            kept = tuple(i for i in range(L) if i not in skipped)
            if owner is None:
                owner = lab.target.fork()
            if kept not in views:
                views[kept] = owner.draft_on_cache(list(kept))
            hits = []
            for q in tokens:  # the kept layers on the full model's cache of the context before token q
                start = len(oracle.prompt) + q
                owner.sync(ids[:start - 1]) if start > 1 else owner.rollback(0)
                hits.append(int(_step(views[kept], ids[start - 1]).argmax()) == oracle.tokens[q])
            row.update(choice=f"skip {skipped}", layers_run=len(kept), hits=hits, predicted=sum(hits))
            if oracle.skippable:  # the share of the skipped layers that the oracle could skip alone
                row["alone_skippable"] = round(sum(oracle.skippable[q][i] for q in tokens for i in skipped)
                                               / max(len(tokens) * len(skipped), 1), 3)
        else:
            continue
        if oracle.greedy is not None:
            row["oracle_layers_run"] = [L - len(oracle.greedy[q]) for q in tokens]
        rows.append(row)
    return rows
