"""Greedy speculative rounds on the device: draft a chain, verify it, accept, and again, the host out of the loop.

At temperature 0 a draft model's chain is its own argmax continuation, and the target keeps the longest prefix
that equals its own argmaxes, then adds its own next token ("Fast Inference from Transformers via Speculative
Decoding", Leviathan et al., 2023; "Accelerating LLM Decoding with Speculative Sampling", Chen et al., 2023).
Every quantity of such a round can live on the device: the draft's steps and the target's verification take
their positions, cache columns and masks from a cache length held in a tensor, the accepted count moves that
length on, and the next round starts from the target's token. So `rounds` rounds run as one captured graph on a
GPU (the host launches once and reads back once, instead of twice a round), and eagerly, the same code, on the
CPU, which is what the tests compare with the host loop.

Both caches are indexed by position: a round writes the draft's chain and the target's verification at the
columns after the committed ones, and what a rejection leaves there is hidden by the length and overwritten by
the next round. A round's first draft step feeds two tokens, the one before the target's token (again) and the
target's token: when every draft was accepted, the last one never went through the draft, and this way its cache
holds it without a draft step of its own (at this size a step of one or two tokens costs the same: its time is
kernel launches, not bytes).

With `siblings`, each depth also proposes the draft's second choice there, a static tree of k chain nodes and k
siblings verified in the same target forward (tree attention: a sibling sees its parent's prefix and itself). Where
the chain is rejected at depth i, the sibling of depth i is accepted when it is the target's token, and the target's
token after it is the bonus: its keys and values move from their spare cache column to the accepted one (one copy
of a column per round, made always: from the column onto itself when no sibling was accepted). The draft's cache
needs no such move: the next round's first step writes the last accepted token at its column again.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...kernels import triton_ready
from .graphs import capture, head_mode, pick
from .weights import step


class Round(NamedTuple):
    """One greedy round: the k chain drafts and their draft probabilities, the target's argmax after each verified
    node (k + 1 for a chain: the root, then each draft; with siblings k more, one per sibling), how many chain drafts
    it accepted (m), and with siblings the k siblings, their probabilities, and whether the sibling at depth m + 1
    was accepted."""
    drafts: list[int]
    beliefs: list[float]
    best: list[int]
    accepted: int
    siblings: list[int] = []
    sibling_beliefs: list[float] = []
    sibling_hit: bool = False

    @property
    def committed(self) -> list[int]:
        """The tokens the round commits: the accepted drafts (and sibling), then the target's own next token."""
        m = self.accepted
        return self.best[:m + 1] + ([self.best[len(self.drafts) + 1 + m]] if self.sibling_hit else [])


class GreedyRounds:
    """`rounds` rounds of k drafts each between a draft and a target backend over `columns` cache columns of
    their slabs; captured as one graph when `graphs` (at the first call, whose `token` and `length` it is given:
    the capture's warm-up runs write the very columns, with the very values, that this call's replay writes
    again), else run eagerly at each call."""

    def __init__(self, target, draft, k: int, rounds: int, columns: int, graphs: bool, before: int, token: int,
                 length: int, siblings: bool = False):
        device = target.slab.keys.device
        self.k, self.rounds, self.siblings = k, rounds, siblings
        # the cache length, the token before the one to feed next (the cache's last), the token to feed next
        self.state = torch.zeros(3, dtype=torch.long, device=device)
        self.host = torch.tensor([length, int(before), int(token)])
        if graphs:
            self.host = self.host.pin_memory()
        # tensors the graph reads are kept here: freed with `run`'s closure they would be reused under the replays
        self.live = torch.ones(1, dtype=torch.bool, device=device)
        self.cols = torch.arange(columns, device=device)
        self.offsets = torch.arange(-1, k + 1, device=device)  # a round's columns from its length (`ladder`)
        # with siblings, verified nodes [root, d_1..d_k, s_1..s_k]: their positions, cache columns and the last
        # column of their prefix (a sibling's is its parent's: its own column comes after the chain's)
        chain = list(range(k + 1))
        self.tree_positions = torch.tensor(chain + chain[1:], device=device)
        self.tree_slots = torch.arange(2 * k + 1, device=device)
        self.tree_prefix = torch.tensor(chain + chain[:-1], device=device)
        fused = triton_ready(self.live)
        tw, tl, ts = target.w, list(target.run_layers), target.slab
        dw, dl, ds = draft.w, list(draft.run_layers), draft.slab

        def run() -> torch.Tensor:
            length, pair = self.state[:1], self.state[1:3]  # pair: the cache's last token, the one to feed
            out = []
            for _ in range(rounds):
                token, drafts, beliefs, sibs, sib_beliefs = pair[1:], [], [], [], []
                # each step's positions (= cache columns) and masks, made once a round: the first step feeds both
                # tokens of the pair (columns length - 1 and length), then one token a step; the verification
                # feeds the target's token and the chain (columns length .. length + k)
                ladder = length + self.offsets
                masks = self.cols[None] <= ladder[:, None]
                fed = pair
                for i in range(k):
                    rows = slice(0, 2) if i == 0 else slice(i + 1, i + 2)
                    at = ladder[rows]
                    logits = step(dw, dl, fed, at, at, masks[rows], ds.keys, ds.values, columns,
                                  logits="rows" if siblings else head_mode(dw, True), visible=at[:1])[0]  # every row
                    # sees the columns before its first
                    if siblings:  # the draft's two best tokens and their probabilities
                        top, index = logits[-1].topk(2)
                        probs = (top - logits[-1].logsumexp(0)).exp()
                        fed, sib, belief = index[:1], index[1:], probs[:1]
                        sib = sib if dw.vocab is None else dw.vocab[sib]
                        sibs.append(sib)
                        sib_beliefs.append(probs[1:])
                        fed = fed if dw.vocab is None else dw.vocab[fed]  # a trimmed head's column -> its token
                    else:
                        fed, belief = pick(dw, logits, self.live, fused, True)
                    drafts.append(fed)
                    beliefs.append(belief.view(1))
                chain = torch.cat(drafts)
                if not siblings:
                    at = ladder[1:]
                    best = step(tw, tl, torch.cat([token, chain]), at, at, masks[1:], ts.keys, ts.values, columns,
                                logits="tokens", visible=at[:1])[0][0]  # [k + 1]: the target's token after each prefix
                    accepted = (best[:k] == chain).long().cumprod(0).sum(0, keepdim=True)  # [1]
                    pair = torch.cat([token, best]).unfold(0, 2, 1).index_select(0, accepted)[0]  # last accepted, next
                    length = length + accepted + 1
                    out.append(torch.cat([chain.double(), best.double(), accepted.double(),
                                          torch.cat(beliefs).double()]))
                    continue
                sib = torch.cat(sibs)
                slots = length + self.tree_slots
                mask = (self.cols[None] <= (length + self.tree_prefix)[:, None]) | (self.cols[None] == slots[:, None])
                best = step(tw, tl, torch.cat([token, chain, sib]), length + self.tree_positions, slots, mask,
                            ts.keys, ts.values, columns, visible=length)[0].argmax(-1)  # [2k + 1]: after each node
                accepted = (best[:k] == chain).long().cumprod(0).sum(0, keepdim=True)  # [1]: chain drafts, m
                hit = (accepted < k) & (sib.index_select(0, accepted.clamp(max=k - 1)) == best.index_select(0, accepted))
                after = best.index_select(0, (k + 1 + accepted).clamp(max=2 * k))  # the target's token after the sibling
                miss = torch.cat([token, best]).unfold(0, 2, 1).index_select(0, accepted)[0]
                pair = torch.where(hit, torch.cat([best.index_select(0, accepted), after]), miss)
                dst = length + accepted + 1  # the accepted sibling's keys and values to the chain's column at its depth
                src = torch.where(hit, length + k + 1 + accepted, dst)
                for cache in (ts.keys, ts.values):
                    cache.index_copy_(2, dst, cache.index_select(2, src))
                length = length + accepted + hit.long() + 1
                out.append(torch.cat([chain.double(), best.double(), accepted.double(), torch.cat(beliefs).double(),
                                      sib.double(), torch.cat(sib_beliefs).double(), hit.double()]))
            return torch.stack(out)  # one readback for every round

        self.run = run
        self.graph = None
        if graphs:
            self.graph, self.out = capture(run, ts.memory, lambda: self.state.copy_(self.host, non_blocking=True))

    def __call__(self, before: int, token: int, length: int) -> list[Round]:
        """Rounds from `token` at cache column `length` (`before` is the token at column length - 1)."""
        self.host[0], self.host[1], self.host[2] = length, int(before), int(token)
        if self.graph is None:
            self.state.copy_(self.host)
            out = self.run()
        else:
            self.state.copy_(self.host, non_blocking=True)
            self.graph.replay()
            out = self.out
        k, rows = self.k, out.tolist()
        if not self.siblings:
            return [Round([int(t) for t in r[:k]], r[2 * k + 2:], [int(t) for t in r[k:2 * k + 1]], int(r[2 * k + 1]))
                    for r in rows]
        b = 3 * k + 1  # after the chain and the 2k + 1 argmax tokens: m, then the chain's beliefs
        return [Round([int(t) for t in r[:k]], r[b + 1:b + 1 + k], [int(t) for t in r[k:b]], int(r[b]),
                      [int(t) for t in r[b + 1 + k:b + 1 + 2 * k]], r[b + 1 + 2 * k:b + 1 + 3 * k], bool(r[-1]))
                for r in rows]
