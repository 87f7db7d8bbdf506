"""Speculative sampling of a draft tree in two launches: multi-round rejection at every row, then the path and the
token after it.

SpecInfer (Miao et al., 2024) verifies a token tree by multi-round rejection sampling: at each node the children are
tried in order; child c, drawn from q_c (or fixed: a point mass on its token), is accepted with probability
min(1, left(c) / q_c(c)), where `left` is the target's distribution p at that node with every earlier sibling's q
taken out (left <- norm(max(left - q_c, 0)); left stays as it was where that is zero everywhere: p == q there, so the
rejection had probability 0). The first accepted child continues the path; where none is, the next token is drawn
from `left` (recovered), and after the path's last node from that node's own row (bonus). This keeps the target's
distribution exactly (`lab.speculative.verify` holds the walk it is tested against).

`_rows`: one program per target row, trying the row's children in node order. It keeps the row's residual
unnormalised in float32 (R and its sum S, left = R / S; R starts as p with S = 1): child c passes when
u q_c(c) S < R(c), and the next R is max(R - S q_c, 0), one pass over the vocabulary a rejected child (two scratch
buffers a row, so that a residual that comes out zero leaves R as it was). After a row's first accepted child its
later children are not tried. Rows do not depend on each other, so the tree's levels need no sync between them.
`_path`: one program walks from the root along the accepted children and draws the next token from the last row's
R by the exponential race argmax R / E (E ~ Exp(1) given; R's scale does not change it), as
`rejection.chain_rejection` draws. The host reads back four numbers.
"""
from __future__ import annotations

import torch

from . import triton_ready

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 1024  # vocabulary entries a step (fewer for a smaller vocabulary)


def tree_rejection_reference(parents: torch.Tensor, tokens: torch.Tensor, draft_probs: torch.Tensor,
                             q_index: torch.Tensor, target_probs: torch.Tensor, uniforms: torch.Tensor,
                             noise: torch.Tensor) -> torch.Tensor:
    """parents [n] (-1: the root; node i's parent's row is parents[i] + 1), tokens [n], draft_probs [m, V] (the
    drawn nodes' q), q_index [n] (node i's row of draft_probs, -1: a fixed candidate), target_probs [rows, V] (row
    0 the root's, row i + 1 node i's; nodes whose parent has no row are never tried), uniforms [n], noise [V]
    Exp(1). Returns [leaf (-1: nothing accepted), depth, end row, token (-1 when the end row is past the rows)],
    with the kernels' arithmetic: float32 R and S as above."""
    rows, vocab = target_probs.shape
    parent, token, qi = parents.tolist(), tokens.tolist(), q_index.tolist()
    residual = target_probs.float().clone()
    total = torch.ones(rows, dtype=torch.float32, device=target_probs.device)
    accepted = [False] * len(parent)
    for r in range(rows):
        for i in (i for i, p in enumerate(parent) if p + 1 == r):
            q = draft_probs[qi[i]].float() if qi[i] >= 0 else \
                torch.zeros(vocab, device=target_probs.device).index_fill_(0, tokens[i:i + 1], 1.0)
            if q[token[i]] > 0 and uniforms[i].float() * q[token[i]] * total[r] < residual[r, token[i]]:
                accepted[i] = True
                break
            new = (residual[r] - total[r] * q).clamp_min(0.0)
            if new.sum() > 0:
                residual[r], total[r] = new, new.sum()
    node, depth = -1, 0
    while node + 1 < rows:
        child = next((i for i, p in enumerate(parent) if p == node and accepted[i]), None)
        if child is None:
            break
        node, depth = child, depth + 1
    end = node + 1
    drawn = int((residual[end] / noise).argmax()) if end < rows else -1
    return torch.tensor([node, depth, end, drawn], dtype=torch.long, device=target_probs.device)


if triton is not None:
    @triton.jit
    def _rows(parents, tokens, draft_probs, q_index, target_probs, uniforms, scratch, state, accepted, n,
              VOCAB: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0)
        row = r.to(tl.int64)
        total = tl.full([], 1.0, tl.float32)  # S
        cur = tl.full([], -1, tl.int32)  # the scratch buffer holding R; -1: R is the row of p itself
        done = tl.full([], 0, tl.int32)
        i = 0
        while i < n:  # a `for` over a run-time count breaks the interpreter
            if tl.load(parents + i) + 1 == r:
                if done == 0:
                    t = tl.load(tokens + i)
                    qi = tl.load(q_index + i)
                    drawn = qi >= 0
                    q_row = draft_probs + tl.maximum(qi, 0).to(tl.int64) * VOCAB
                    q_t = tl.where(drawn, tl.load(q_row + t, mask=drawn, other=0.0), 1.0)
                    if cur < 0:
                        r_t = tl.load(target_probs + row * VOCAB + t)
                    else:
                        r_t = tl.load(scratch + (row * 2 + cur) * VOCAB + t)
                    ok = (q_t > 0) & (tl.load(uniforms + i) * q_t * total < r_t)
                    tl.store(accepted + i, ok.to(tl.int8))
                    if ok:
                        done = done + 1
                    else:  # the residual without this child, into the other buffer
                        other = tl.where(cur == 0, 1, 0)
                        sums = tl.zeros((BLOCK,), tl.float32)
                        for start in range(0, VOCAB, BLOCK):
                            v = start + tl.arange(0, BLOCK)
                            inside = v < VOCAB
                            if cur < 0:
                                x = tl.load(target_probs + row * VOCAB + v, mask=inside, other=0.0)
                            else:
                                x = tl.load(scratch + (row * 2 + cur) * VOCAB + v, mask=inside, other=0.0)
                            q = tl.load(q_row + v, mask=inside & drawn, other=0.0)
                            q = tl.where(drawn, q, tl.where(v == t, 1.0, 0.0))
                            new = tl.maximum(x - total * q, 0.0)
                            tl.store(scratch + (row * 2 + other) * VOCAB + v, new, mask=inside)
                            sums += new
                        mass = tl.sum(sums, 0)
                        tl.debug_barrier()  # the new R's stores before this program reads it back
                        if mass > 0:  # else p == q here: R stays
                            total = mass
                            cur = other
                else:
                    tl.store(accepted + i, tl.full([], 0, tl.int8))
            i += 1
        tl.store(state + r, cur)

    @triton.jit
    def _path(parents, accepted, target_probs, scratch, state, noise, out, n, rows, NS: tl.constexpr,
              VOCAB: tl.constexpr, BLOCK: tl.constexpr):
        nodes = tl.arange(0, NS)
        live = nodes < n
        parent = tl.load(parents + nodes, mask=live, other=-2)
        passed = live & (tl.load(accepted + nodes, mask=live, other=0) != 0)
        node = tl.full([], -1, tl.int32)
        depth = tl.full([], 0, tl.int32)
        going = rows > 0
        while going:
            child = tl.max(tl.where(passed & (parent == node), nodes, -1), 0)  # a row passes one child at most
            going = (child >= 0) & (node + 1 < rows)
            node = tl.where(going, child, node)
            depth += going.to(tl.int32)
            going = going & (node + 1 < rows)
        end = node + 1
        token = tl.full([], -1, tl.int32)
        if end < rows:
            at = tl.load(state + end)
            best = tl.full([], -1.0, tl.float32)
            for start in range(0, VOCAB, BLOCK):
                v = start + tl.arange(0, BLOCK)
                inside = v < VOCAB
                if at < 0:
                    x = tl.load(target_probs + end.to(tl.int64) * VOCAB + v, mask=inside, other=0.0)
                else:
                    x = tl.load(scratch + (end.to(tl.int64) * 2 + at) * VOCAB + v, mask=inside, other=0.0)
                race = tl.where(inside, tl.div_rn(x, tl.load(noise + v, mask=inside, other=1.0)), -1.0)
                value = tl.max(race, 0)
                better = value > best  # the first of equal maxima, as torch's argmax
                token = tl.where(better, start + tl.argmax(race, 0), token)
                best = tl.where(better, value, best)
        tl.store(out + 0, node.to(tl.int64))
        tl.store(out + 1, depth.to(tl.int64))
        tl.store(out + 2, end.to(tl.int64))
        tl.store(out + 3, token.to(tl.int64))


def random_inputs(g: torch.Generator, vocab: int, trial: int, most: int = 8) -> tuple:
    """`tree_rejection`'s arguments for a random tree of up to `most` nodes (the tests' and
    scripts/check_tree_rejection_gpu.py's cases), varied by `trial`: odd trials bushy, with drafts near the target
    (later siblings are tried, and pass); every third, drawn nodes whose q is their row's p (a rejection leaves the
    residual as it was); every fourth, the last nodes without rows of their own. 70% of the nodes drawn."""
    n = int(torch.randint(0, most + 1, (), generator=g))
    bushy = trial % 2
    parents = [int(torch.randint(-1, min(i, 2) if bushy else i, (), generator=g)) if i else -1 for i in range(n)]
    rows = n + 1 if trial % 4 else max(1, n - 1)
    p = (torch.randn(n + 1, vocab, generator=g) * 1.5).softmax(-1)
    drawn = [bool(torch.rand((), generator=g) < 0.7) for _ in range(n)]
    q = torch.stack([(p[parents[i] + 1].log() * bushy + torch.randn(vocab, generator=g) * (0.7 if bushy else 2))
                     .softmax(-1) for i in range(n) if drawn[i]]) if any(drawn) else torch.zeros(0, vocab)
    index = torch.tensor([sum(drawn[:i]) if d else -1 for i, d in enumerate(drawn)], dtype=torch.long)
    for i in range(n):
        if drawn[i] and trial % 3 == 0:
            q[index[i]] = p[parents[i] + 1]
    tokens = torch.stack([torch.multinomial(q[index[i]], 1, generator=g)[0] if drawn[i]
                          else torch.randint(vocab, (), generator=g) for i in range(n)]) if n else \
        torch.zeros(0, dtype=torch.long)
    return (torch.tensor(parents, dtype=torch.long), tokens, q, index, p[:rows], torch.rand(n, generator=g),
            torch.empty(vocab).exponential_(generator=g))


def tree_rejection(parents: torch.Tensor, tokens: torch.Tensor, draft_probs: torch.Tensor, q_index: torch.Tensor,
                   target_probs: torch.Tensor, uniforms: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`tree_rejection_reference`'s contract; the two Triton kernels on CUDA, else the reference. target_probs is
    read as float32 (a copy if it is not)."""
    if not triton_ready(target_probs):
        return tree_rejection_reference(parents, tokens, draft_probs, q_index, target_probs, uniforms, noise)
    rows, vocab = target_probs.shape
    n, device = parents.numel(), target_probs.device
    probs = target_probs.float().contiguous()
    q = draft_probs.float().contiguous() if draft_probs.numel() else probs  # never read without drawn nodes
    scratch = torch.empty(rows * 2 * vocab, dtype=torch.float32, device=device)
    state = torch.empty(rows, dtype=torch.int32, device=device)
    accepted = torch.empty(max(n, 1), dtype=torch.int8, device=device)
    out = torch.empty(4, dtype=torch.long, device=device)
    parents, tokens, q_index = (t.to(device=device, dtype=torch.int32).contiguous() for t in (parents, tokens, q_index))
    uniforms = uniforms.to(device=device, dtype=torch.float32).contiguous()
    block = min(BLOCK, triton.next_power_of_2(vocab))
    _rows[(rows,)](parents, tokens, q, q_index, probs, uniforms, scratch, state, accepted, n, VOCAB=vocab,
                   BLOCK=block)
    _path[(1,)](parents, accepted, probs, scratch, state, noise.float().contiguous(), out, n, rows,
                NS=max(2, triton.next_power_of_2(n)), VOCAB=vocab, BLOCK=block)
    return out
