"""Verify a draft tree against the target's distributions: which path is accepted, and the token after it.

Greedy: follow the children that equal the target's argmax (token identity with greedy decoding).
Stochastic: at each node, try its children in order; child c (drawn from q_c) is accepted with
probability min(1, p(c) / q_c(c)); on rejection the target distribution becomes the residual
norm(max(p - q_c, 0)) for the next child ("Fast Inference from Transformers via Speculative Decoding";
for several children, SpecInfer's multi-round rejection). When no child is accepted the next token is
drawn from what is left (recovered); after an accepted leaf it is drawn from p (bonus). This keeps the
target distribution exactly when the children were drawn i.i.d. from q, or are fixed tokens (q one-hot).

`greedy_tree` reads each row's argmax back and walks the tree on the host. `rejection_tree` is batched tensor
operations on the device (named as vLLM's rejection sampler names them: accepted, recovered, bonus) that read one
small tensor back; `rejection_tree_kernel` is the same in two Triton launches (`lab.kernels.tree_rejection`,
what the exact verifier runs on a GPU unless DECODING_LAB_TREE_KERNEL=0); `verify_stochastic` walks the tree node
by node and is kept as the reference the tests compare them with. A node past `tree.rows` has no row of its own
(it was drafted while the target ran): it can be accepted, but the target says nothing after it (no bonus).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backends.transfer import to_device
from ..sampling import draw
from ..tree import Tree, buffers


@dataclass
class Verdict:
    """`accepted`: node indices of the accepted root-to-node path; `bonus`: the target's next token (None when
    the last accepted node had no row); `recovered`: the bonus was drawn from a residual after rejections."""

    accepted: list[int]
    bonus: int | None
    recovered: bool = False
    info: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return len(self.accepted) + (self.bonus is not None)

    def committed(self, tree: Tree) -> tuple[list[int], list[str]]:
        """Tokens to commit (accepted drafts, then the bonus) and their origins."""
        tokens = [tree.tokens[i] for i in self.accepted]
        origins = ["draft"] * len(tokens)
        if self.bonus is not None:
            tokens.append(self.bonus)
            origins.append("bonus")
        return tokens, origins


# -- the verifiers: greedy on the host, rejection sampling on the device -------------------------------------
def _on_path(tree: Tree, first: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(deepest node whose every ancestor passed, its depth; 0 when no child of the root passed)."""
    shape = buffers(tree.parents, device)
    ancestors = shape.among[1:, 1:]  # node i, node j: j is i or one of its ancestors
    ok = ~(ancestors & ~first[None, :]).any(1)
    depth = torch.where(ok, shape.depth, 0)
    return depth.argmax(), depth.max()


def greedy_tree(tree: Tree, logits: torch.Tensor) -> Verdict:
    """Longest path of nodes equal to the target's argmax; `logits[0]` is the root's row, `logits[i+1]` node i's.

    The argmax of every row is read back (one small tensor) and the tree walked on the host: at most 128 nodes,
    cheaper than the dozen small device operations a batched walk launches (each costs a GPU launch from Python,
    about 10 us on the H200 machine, more than the whole host walk)."""
    best = logits.argmax(-1).tolist()
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        children.setdefault(p, []).append(i)
    node, path = -1, []
    while True:
        if node + 1 >= len(best):
            return Verdict(path, None)
        want = best[node + 1]
        nxt = next((c for c in children.get(node, []) if tree.tokens[c] == want), None)
        if nxt is None:
            return Verdict(path, int(want))
        path.append(nxt)
        node = nxt


def rejection_tree(tree: Tree, probs: torch.Tensor, rng: torch.Generator | None,
                   uniforms: torch.Tensor | None = None) -> tuple[Verdict, torch.Tensor]:
    """Multi-round rejection sampling over the whole tree at once. `probs[i]` is the target distribution at row i.

    A child's fate depends only on its own uniform and on the residual left by its earlier siblings, never on
    what happens elsewhere, so every child's test is computed in one pass per sibling rank; the accepted path
    is the chain of first-accepted children. Returns the verdict and the distribution its last token was
    drawn from (the tests compare it with the reference walk's)."""
    device, rows, vocab = probs.device, probs.shape[0], probs.shape[-1]
    left = probs.float().clone()  # per row: the residual after the children tried so far
    n = len(tree)
    if n:
        shape = buffers(tree.parents, device)
        if uniforms is None:
            uniforms = torch.rand(n, generator=rng, device=rng.device if rng is not None else device).to(device)
        tokens = to_device(tree.tokens, device)
        drawn = [i for i, q in enumerate(tree.q) if q is not None]
        q = torch.zeros(n, vocab, device=device)
        q[torch.arange(n, device=device), tokens] = 1.0  # a fixed candidate is a point mass
        if drawn:
            q[to_device(drawn, device)] = torch.stack([tree.q[i] for i in drawn]).to(device=device,
                                                                                      dtype=torch.float32)
        accept = torch.zeros(n, dtype=torch.bool, device=device)
        ranks: dict[int, list[int]] = {}  # sibling rank -> nodes of that rank whose parent has a row
        seen: dict[int, int] = {}
        for i, parent in enumerate(tree.parents):
            seen[parent] = seen.get(parent, -1) + 1
            if parent + 1 < rows:
                ranks.setdefault(seen[parent], []).append(i)
        for rank in sorted(ranks):
            nodes = to_device(ranks[rank], device)
            r = shape.parents[nodes] + 1
            p = left[r]
            q_tok = q[nodes, tokens[nodes]]
            accept[nodes] = (q_tok > 0) & (uniforms[nodes] * q_tok < p.gather(1, tokens[nodes, None]).squeeze(1))
            residual = (p - q[nodes]).clamp_min(0.0)
            total = residual.sum(-1, keepdim=True)
            left[r] = torch.where(total > 0, residual / total.clamp_min(1e-30), p)  # p == q: nothing to remove
        first = accept & ~(shape.earlier_sibling & accept[None, :]).any(1)
        leaf, depth = _on_path(tree, first, device)
        end = torch.where(depth > 0, leaf + 1, 0)
    else:
        leaf = depth = end = torch.zeros((), dtype=torch.long, device=device)
    final = left[end.clamp(max=rows - 1)]
    token = draw(final, rng)
    leaf, depth, end, token = torch.stack([leaf, depth, end, token.reshape(())]).tolist()  # the one sync
    path = tree.path(leaf) if depth else []
    has_children = any(p == (path[-1] if path else -1) for p in tree.parents)
    if end >= rows:  # the last accepted node had no row: nothing after it
        return Verdict(path, None), final
    return Verdict(path, token, recovered=has_children), final


def rejection_tree_kernel(tree: Tree, probs: torch.Tensor, rng: torch.Generator | None,
                          uniforms: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> Verdict:
    """`rejection_tree` by `lab.kernels.tree_rejection` (two launches and four numbers read back; the Triton
    kernels on CUDA, else their reference): the same verdict for the same uniforms; the token after the path drawn
    by the exponential race with `noise` (Exp(1) per token), so the same distribution by another random stream."""
    from ..kernels.tree_rejection import tree_rejection

    device, vocab = probs.device, probs.shape[-1]
    source = rng.device if rng is not None else device
    if uniforms is None:
        uniforms = torch.rand(len(tree), generator=rng, device=source)
    if noise is None:
        noise = torch.empty(vocab, device=source).exponential_(generator=rng)
    drawn = [q for q in tree.q if q is not None]
    q = torch.stack(drawn).to(device=device, dtype=torch.float32) if drawn else probs.new_empty(0, vocab)
    index, k = [], 0
    for node_q in tree.q:
        index.append(k if node_q is not None else -1)
        k += node_q is not None
    parents, tokens, index = (to_device(x, device) for x in (tree.parents, tree.tokens, index))
    leaf, depth, end, token = tree_rejection(parents, tokens, q, index, probs, uniforms.to(device),
                                             noise.to(device)).tolist()
    path = tree.path(leaf) if depth else []
    if end >= probs.shape[0]:  # the last accepted node had no row: nothing after it
        return Verdict(path, None)
    return Verdict(path, token, recovered=any(p == (path[-1] if path else -1) for p in tree.parents))


# -- the reference: a walk down the tree ---------------------------------------------------------------
def stochastic_walk(tree: Tree, probs: torch.Tensor, uniform) -> tuple[list[int], torch.Tensor | None, bool]:
    """The multi-round rejection walk: (accepted path, the distribution the next token is drawn from (None when
    the last accepted node has no row), whether rejections shaped it). `uniform(node)` gives node's uniform."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parents):
        children.setdefault(p, []).append(i)
    node, path = -1, []
    while True:
        if node + 1 >= probs.shape[0]:
            return path, None, False
        p = probs[node + 1].float()
        kids = children.get(node, [])
        accepted = None
        for c in kids:
            token = tree.tokens[c]
            q = tree.q[c]
            q_token = float(q[token]) if q is not None else 1.0
            p_token = float(p[token])
            if q_token > 0 and uniform(c) * q_token < p_token:  # u < p/q, without dividing
                accepted = c
                break
            if q is None:
                residual = p.clone()
                residual[token] = 0.0
            else:
                residual = (p - q.to(p.device).float()).clamp_min(0.0)
            total = float(residual.sum())
            if total <= 0.0:  # p == q on this node: rejection had probability 0; keep p
                continue
            p = residual / total
        if accepted is None:
            return path, p, bool(kids)
        path.append(accepted)
        node = accepted


def verify_stochastic(tree: Tree, probs: torch.Tensor, rng: torch.Generator | None) -> Verdict:
    """Multi-round rejection sampling down the tree, one uniform per visited node, in visiting order."""
    device = rng.device if rng is not None else "cpu"
    path, final, recovered = stochastic_walk(tree, probs, lambda c: float(torch.rand((), generator=rng, device=device)))
    if final is None:
        return Verdict(path, None)
    return Verdict(path, int(draw(final, rng)), recovered=recovered)
