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
the next round. The draft feeds its last drafted token too (k + 1 draft steps for k drafts, the last without
the LM head), so that after any acceptance its cache holds every committed token.
"""
from __future__ import annotations

import torch

from ...kernels import triton_ready
from .graphs import argmax_belief, capture
from .weights import step


class GreedyRounds:
    """`rounds` rounds of k drafts each between a draft and a target backend over `columns` cache columns of
    their slabs; captured as one graph when `graphs` (at the first call, whose `token` and `length` it is given:
    the capture's warm-up runs write the very columns, with the very values, that this call's replay writes
    again), else run eagerly at each call."""

    def __init__(self, target, draft, k: int, rounds: int, columns: int, graphs: bool, token: int, length: int):
        device = target.slab.keys.device
        self.k, self.rounds = k, rounds
        self.state = torch.zeros(2, dtype=torch.long, device=device)  # the cache length, the token to feed next
        self.host = torch.tensor([length, int(token)])
        if graphs:
            self.host = self.host.pin_memory()
        # tensors the graph reads are kept here: freed with `run`'s closure they would be reused under the replays
        self.live = torch.ones(1, dtype=torch.bool, device=device)
        self.cols = torch.arange(columns, device=device)
        self.offsets = torch.arange(k + 1, device=device)
        fused = triton_ready(self.live)
        tw, tl, ts = target.w, list(target.run_layers), target.slab
        dw, dl, ds = draft.w, list(draft.run_layers), draft.slab

        def run() -> torch.Tensor:
            length, token = self.state[:1], self.state[1:2]
            out = []
            for _ in range(rounds):
                drafts, beliefs, fed = [], [], token
                for i in range(k + 1):  # the chain, then its last token fed (no LM head) so the cache holds it
                    at = length + i
                    logits = step(dw, dl, fed, at, at, self.cols[None] <= at[:, None], ds.keys, ds.values, columns,
                                  logits=i < k)[0]
                    if i < k:
                        fed, belief = argmax_belief(logits, self.live, fused)
                        drafts.append(fed)
                        beliefs.append(belief.view(1))
                chain = torch.cat(drafts)
                at = length + self.offsets
                best = step(tw, tl, torch.cat([token, chain]), at, at, self.cols[None] <= at[:, None], ts.keys,
                            ts.values, columns)[0].argmax(-1)  # [k + 1]: the target's token after each prefix
                accepted = (best[:k] == chain).long().cumprod(0).sum(0, keepdim=True)  # [1]
                token = best.gather(0, accepted)
                length = length + accepted + 1
                out.append(torch.cat([chain.double(), best.double(), accepted.double(), torch.cat(beliefs).double()]))
            return torch.stack(out)  # one readback for every round

        self.run = run
        self.graph = None
        if graphs:
            self.graph, self.out = capture(run, ts.memory, lambda: self.state.copy_(self.host, non_blocking=True))

    def __call__(self, token: int, length: int) -> list[tuple[list[int], list[float], list[int], int]]:
        """Per round: the k drafted tokens, their draft probabilities, the target's k + 1 argmax tokens and how
        many drafts it accepted (it commits best[:accepted + 1])."""
        self.host[0], self.host[1] = length, int(token)
        if self.graph is None:
            self.state.copy_(self.host)
            out = self.run()
        else:
            self.state.copy_(self.host, non_blocking=True)
            self.graph.replay()
            out = self.out
        k, rows = self.k, out.tolist()
        return [([int(t) for t in r[:k]], r[2 * k + 2:], [int(t) for t in r[k:2 * k + 1]], int(r[2 * k + 1]))
                for r in rows]
