"""The one speculative loop: propose a tree per row, score all rows in one forward, verify, commit a path.

Every speculative method runs here, one prompt (a batch of one) or B prompts at once: a drafter (drafter.py)
says what is new about its proposals, a verifier says what is accepted (exact by default: greedy at T = 0,
multi-round rejection sampling at T > 0; fuzzy-sd plugs in a lossy one), the backend keeps each row's accepted
path (lookahead-reasoning runs rounds of whole steps instead: steps.py). Per step the host reads back one small
tensor per row: the argmax of every scored node at T = 0, what was accepted at T > 0.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Iterator

import torch

from ..batch import Rows
from ..decoding import Decoding
from ..kernels import triton_available
from ..trace import Step
from ..tree import Tree
from .drafter import Drafter
from .timeline import Timeline
from .verify import Verdict, greedy_tree, rejection_tree, rejection_tree_kernel


# On a GPU the exact verifier samples with lab.kernels.tree_rejection (two launches) instead of the batched torch
# operations of `rejection_tree`: equal outputs on the H200 (scripts/gpu_kernels.sh tree), fastdraft at T = 1 0.79x
# greedy's speed against 0.45x (results/t1-tree-kernel-{1,0}-2026-12-02.json). DECODING_LAB_TREE_KERNEL=0 turns it off.
TREE_KERNEL = triton_available() and os.environ.get("DECODING_LAB_TREE_KERNEL", "1") != "0"


class Verifier:
    """Decides which path of a tree the target accepts, and the token after it."""

    def verify(self, dec: Decoding, tree: Tree, logits: torch.Tensor) -> Verdict:
        raise NotImplementedError


class Exact(Verifier):
    """Token identity with greedy decoding at T = 0; exactly the target's distribution at T > 0."""

    def verify(self, dec: Decoding, tree: Tree, logits: torch.Tensor) -> Verdict:
        if dec.greedy:
            return greedy_tree(tree, logits)
        probs = dec.probs(logits)
        if probs.is_cuda and TREE_KERNEL:  # two kernel launches instead of a dozen small operations a level
            return rejection_tree_kernel(tree, probs, dec.rng)
        return rejection_tree(tree, probs, dec.rng)[0]


EXACT = Exact()


def speculate(dec: Decoding, drafter: Drafter, verifier: Verifier = EXACT) -> Iterator[Step]:
    """Prefill, then propose -> score -> commit until the output is done (one prompt)."""
    for steps in speculate_rows(Rows.of_one(dec), drafter, verifier):
        if 0 in steps:
            yield steps[0]


def speculate_rows(rows: Rows, drafter: Drafter, verifier: Verifier = EXACT) -> Iterator[dict[int, Step]]:
    """Prefill all rows, then propose -> score -> commit for every live row until all are done (then the
    drafter's timeline, if it keeps one, is resolved: its Steps' info["timeline"] fill in)."""
    try:
        yield from _rounds(rows, drafter, verifier)
    finally:
        if drafter.timeline is not None:
            drafter.timeline.resolve()


def _rounds(rows: Rows, drafter: Drafter, verifier: Verifier) -> Iterator[dict[int, Step]]:
    logits = rows.prefill()
    roots = [dec.choose(logits[b]) for b, dec in enumerate(rows.live_rows())]
    yield {i: Step(committed=[r], origin=["plain"], forwards=0, prefill=True) for i, r in zip(rows.live, roots)}
    while True:
        kept = rows.retire()
        if not kept:
            return
        if len(kept) < len(roots):
            roots = [roots[b] for b in kept]
            drafter.select(kept)
        before = drafter.forwards
        trees = drafter.propose_rows(rows, roots)
        if rows.single:
            dec, tree = rows.rows[0], trees[0]
            verdict, out = score_one(dec, drafter, verifier, roots[0], tree)
            verdicts = [verdict]
            if len(tree) or drafter.learns_from_plain_steps:
                drafter.accepted(dec, tree, verdict, out.logits, out.taps)
        else:
            verdicts, logits = score_rows(rows, verifier, roots, trees)
            drafter.accepted_rows(rows, trees, verdicts, logits)
        spent = drafter.forwards - before
        steps = {}
        for b, (i, tree, verdict) in enumerate(zip(rows.live, trees, verdicts)):
            committed, origin = verdict.committed(tree)
            roots[b] = committed[-1]
            info = {**dict(drafter.info), **drafter.row_info(b), **verdict.info}
            if rows.batched:
                info["batch"] = len(kept)
            if not len(tree):  # nothing proposed: a plain autoregressive step
                steps[i] = Step(committed=committed, origin=["plain"], draft_forwards=spent, info=info)
                continue
            steps[i] = Step(committed=committed, origin=origin, proposed=list(tree.tokens), parents=list(tree.parents),
                            draft_probs=[round(p, 4) for p in tree.draft_probs], accepted=list(verdict.accepted),
                            bonus=verdict.bonus, draft_forwards=spent,
                            info={"recovered": verdict.recovered, **info})
        yield steps


def score_one(dec: Decoding, drafter: Drafter, verifier: Verifier, root: int, tree: Tree):
    """One target forward over the root and the tree (and what the drafter's layout adds, seeing the part of the
    cache the drafter says, and what it drafts alongside); verify; keep the accepted path in the cache."""
    layout = drafter.layout(dec, root, tree)
    visible = drafter.visible(dec)
    if layout is None:
        tokens, parents = tree.with_root(root)
        forward = lambda: dec.target.forward(tokens, parents, visible=visible, taps=drafter.taps)  # noqa: E731
    else:
        tokens, among, positions = layout
        forward = lambda: dec.target.forward(tokens, among=among, positions=positions, visible=visible,  # noqa: E731
                                             taps=drafter.taps)
    job = drafter.alongside(dec, root, tree)
    timeline = drafter.timeline
    out, overlap = (forward(), None) if job is None else beside(
        job, forward, timeline=timeline, device=dec.target.device, stream=drafter.stream, parallel=drafter.parallel)
    rows = 1 + tree.rows
    verdict = verifier.verify(dec, tree, out.logits[:rows])
    if overlap is not None:
        timed = overlap.pop("timeline", None)
        verdict.info["overlap"] = overlap
        if timed is not None:
            verdict.info["timeline"] = timed  # filled in when the timeline is resolved
    dec.target.keep(drafter.kept([0] + [i + 1 for i in verdict.accepted if i < tree.rows]))
    return verdict, out


def score_rows(rows: Rows, verifier: Verifier, roots: list[int], trees: list[Tree]):
    """One target forward over every row's root and tree; verify each row; keep each row's accepted path."""
    tokens, parents = zip(*(tree.with_root(root) for tree, root in zip(trees, roots)))
    logits = rows.target.forward_rows(list(tokens), list(parents))
    verdicts = []
    for b, (dec, tree) in enumerate(zip(rows.live_rows(), trees)):
        verdict = verifier.verify(dec, tree, logits[b])
        rows.target.keep([0] + [i + 1 for i in verdict.accepted], row=b)
        verdicts.append(verdict)
    return verdicts, logits


def beside(background, foreground, *, timeline: Timeline | None = None, device=None, stream=None,
           parallel: bool = True) -> tuple[object, dict]:
    """Run `background` in a thread while `foreground` runs here (torch releases the GIL inside its ops); return
    the foreground's value and when each ran on the host (seconds from the start, and how long they overlapped).

    On a GPU the two also overlap on the device only if their kernels go to different streams: given `stream`,
    the background runs on it, after what this thread's stream has queued so far (its inputs are ready), and this
    stream waits for it before going on (its outputs are ready for the verifier); the tensors the background
    returns are marked as used on this stream so their memory is not reused under it. `timeline` opens a round
    and times the foreground as its "target" lane on `device`. `parallel=False` runs the background first, then
    the foreground, here and on this stream: the mutual waiting PEARL removes, for comparison."""
    box: dict = {}
    device = torch.device(device or "cpu")
    spans = timeline.round(device) if timeline is not None else None
    here = torch.cuda.current_stream(device) if stream is not None else None
    if here is not None:
        stream.wait_stream(here)
    origin = time.perf_counter()

    def work():
        start = time.perf_counter()
        try:
            if stream is None:
                box["handed"] = background()
            else:
                with torch.cuda.stream(stream):
                    box["handed"] = background()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err
        box["span"] = (start - origin, time.perf_counter() - origin)

    def target():
        if timeline is None:
            return foreground()
        with timeline.span("target", device):
            return foreground()

    thread = None
    if parallel:
        thread = threading.Thread(target=work, name="draft", daemon=True)
        thread.start()
    else:
        work()
    start = time.perf_counter()
    try:
        value = target()
    finally:
        end = time.perf_counter()
        if thread is not None:
            thread.join()
    if "error" in box:
        raise box["error"]
    if here is not None:
        here.wait_stream(stream)
        for tensor in box.get("handed") or ():
            tensor.record_stream(here)
    draft, target_span = box["span"], (start - origin, end - origin)
    overlap = max(0.0, min(draft[1], target_span[1]) - max(draft[0], target_span[0]))
    return value, {"draft_s": [round(t, 6) for t in draft], "target_s": [round(t, 6) for t in target_span],
                   "overlap_s": round(overlap, 6), **({"timeline": spans} if spans is not None else {})}
