"""The speculative loop over a batch: every row proposes its own tree, one target forward scores them all.

Rows accept ragged lengths: each keeps its own accepted path in the BatchRunner (`keep(row, ...)`), takes its
own bonus token, and may propose another depth next round. A batched drafter implements
`propose(batch, roots) -> list[Tree]` (one Tree per live row, hanging from that row's root, the last committed
token) and optionally `accepted(batch, trees, verdicts)`, `select(kept)` (rows that left the batch) and
`row_info(b)` (extra Step.info for row b).
`ChainDrafter` drafts chains of per-row lengths with a draft model in its own BatchRunner, one batched draft
forward per depth. The batched `sps` and `pld` are registered here; `bass` and `tetris` live in drafters/.
"""
from __future__ import annotations

from typing import Iterator

from ..registry import batched
from ..runner import BatchRunner
from ..trace import Step
from .drafters.pld import PromptLookup
from .drafters.sps import DraftModel
from .tree import Tree
from .verify import Verdict, verify_greedy, verify_stochastic


def score_batch(batch, roots: list[int], trees: list[Tree]) -> list[Verdict]:
    """One target forward over every row's root and tree; verify each row; keep each row's accepted path."""
    tokens, parents = zip(*(tree.with_root(root) for tree, root in zip(trees, roots)))
    logits = batch.target.forward(list(tokens), list(parents))
    verdicts = []
    for b, (dec, tree) in enumerate(zip(batch.live_rows(), trees)):
        if dec.greedy:
            verdict = verify_greedy(tree, logits[b])
        else:
            verdict = verify_stochastic(tree, dec.probs(logits[b]), dec.rng)
        batch.target.keep(b, [0] + [i + 1 for i in verdict.accepted])
        verdicts.append(verdict)
    return verdicts


def speculate_batch(batch, drafter) -> Iterator[dict[int, Step]]:
    """Prefill all rows, then propose -> score -> commit for every live row until all are done."""
    logits = batch.prefill()
    roots = [dec.choose(logits[b]) for b, dec in enumerate(batch.live_rows())]
    yield {i: Step(committed=[r], origin=["plain"], forwards=0, prefill=True) for i, r in zip(batch.live, roots)}
    while True:
        kept = batch.retire()
        if not kept:
            return
        if len(kept) < len(roots):
            roots = [roots[b] for b in kept]
            if hasattr(drafter, "select"):
                drafter.select(kept)
        before = getattr(drafter, "forwards", 0)
        trees = drafter.propose(batch, roots)
        verdicts = score_batch(batch, roots, trees)
        if hasattr(drafter, "accepted"):
            drafter.accepted(batch, trees, verdicts)
        draft_forwards = getattr(drafter, "forwards", 0) - before
        steps = {}
        for b, (i, tree, verdict) in enumerate(zip(batch.live, trees, verdicts)):
            roots[b] = verdict.bonus
            info = {"batch": len(kept), **(drafter.row_info(b) if hasattr(drafter, "row_info") else {})}
            if not tree:  # nothing proposed for this row: a plain step inside the batched forward
                steps[i] = Step(committed=[verdict.bonus], origin=["plain"], draft_forwards=draft_forwards, info=info)
                continue
            committed, origin = verdict.committed(tree)
            steps[i] = Step(committed=committed, origin=origin, proposed=list(tree.tokens),
                            parents=list(tree.parents), draft_probs=[round(p, 4) for p in tree.draft_probs],
                            accepted=list(verdict.accepted), bonus=verdict.bonus, draft_forwards=draft_forwards,
                            info={"recovered": verdict.recovered, **info})
        yield steps


class ChainDrafter:
    """Chains from a draft model run in its own BatchRunner: one batched draft forward per depth."""

    def __init__(self, runner: BatchRunner):
        self.runner = runner

    @property
    def forwards(self) -> int:
        return self.runner.forwards

    def select(self, kept: list[int]) -> None:
        if self.runner.rows:
            self.runner.select(kept)

    def draft(self, batch, lengths: list[int], confidence: float = 0.0) -> tuple[list[Tree], list[list[float]]]:
        """A chain of up to lengths[b] tokens (and the row's remaining budget) per live row b, drawn with the
        target's sampling rule; also the draft's top probability at each depth. That number is known before
        the token is drawn, so a selection made with it keeps sampling lossless (TETRIS)."""
        rows = batch.live_rows()
        trees, tops = [Tree() for _ in rows], [[] for _ in rows]
        want = [max(0, min(int(n), dec.remaining)) for n, dec in zip(lengths, rows)]
        if not any(want):
            return trees, tops
        logits = self.runner.sync([dec.context for dec in rows])
        going = [b for b in range(len(rows)) if want[b]]
        for depth in range(max(want)):
            following = []
            for b in going:
                dec = rows[b]
                token = dec.choose(logits[b])
                shown = logits[b].float().softmax(-1)  # the draft's own belief, for the views and the estimates
                trees[b].add(token, depth - 1, float(shown[token]), None if dec.greedy else dec.probs(logits[b]))
                tops[b].append(float(shown.max()))
                if depth + 1 < want[b] and not (confidence and float(shown.max()) < confidence):
                    following.append(b)
            if not following:
                break
            out = self.runner.forward([[trees[b].tokens[-1]] if b in following else [] for b in range(len(rows))])
            logits = logits.clone()
            for b in following:
                logits[b] = out[b][-1]
            going = following
        return trees, tops


class SpsRows(ChainDrafter):
    """Batched `sps`: each row keeps its own adaptive chain length (sps's schedule, one DraftModel per row)."""

    def __init__(self, runner: BatchRunner, length: int, adaptive: bool, confidence: float):
        super().__init__(runner)
        self.length, self.adaptive, self.confidence = length, adaptive, confidence
        self.schedules: list[DraftModel] | None = None

    def propose(self, batch, roots: list[int]) -> list[Tree]:
        if self.schedules is None:
            self.schedules = [DraftModel(None, self.length, self.adaptive, self.confidence) for _ in roots]
        return self.draft(batch, [s.length for s in self.schedules], self.confidence)[0]

    def accepted(self, batch, trees: list[Tree], verdicts: list[Verdict]) -> None:
        for schedule, dec, tree, verdict in zip(self.schedules, batch.live_rows(), trees, verdicts):
            if tree:
                schedule.accepted(dec, tree, verdict, None)

    def select(self, kept: list[int]) -> None:
        super().select(kept)
        self.schedules = [self.schedules[b] for b in kept] if self.schedules else None


class LookupRows:
    """Batched `pld`: every row looks up its own context."""

    def __init__(self, lookup: PromptLookup):
        self.lookup = lookup

    def propose(self, batch, roots: list[int]) -> list[Tree]:
        return [self.lookup.propose(dec, root) for dec, root in zip(batch.live_rows(), roots)]


@batched("sps")
def sps_batch(batch, *, draft: str = "layers:16", length: int = 4, adaptive: bool = True, confidence: float = 0.0):
    """Batched draft-model speculative sampling; every row adapts its own chain length."""
    runner = BatchRunner.like(batch.model.draft(draft))
    yield from speculate_batch(batch, SpsRows(runner, length, adaptive, confidence))


@batched("pld")
def pld_batch(batch, *, max_ngram: int = 3, min_ngram: int = 1, length: int = 10):
    """Batched prompt lookup decoding."""
    yield from speculate_batch(batch, LookupRows(PromptLookup(max_ngram, min_ngram, length)))
