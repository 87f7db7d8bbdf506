"""Self Speculative Decoding for Diffusion Large Language Models (Gao, Ji, Wang, Qi, Xu and Zhang, 2025; SSD).

The idea: the dLLM is its own drafter and its own verifier. One forward ranks every masked position; its surest
decision is certain, and the next `drafts - 1` positions of that ranking, each with its `branches` likeliest
tokens, form a hierarchical verification tree: the node at level j fills the first j - 1 drafted decisions plus one
candidate token at the j-th drafted position; a node whose token is the draft's own extends the tree, the others are
leaves. The whole tree runs in one batched forward. Walking down from the root, a child is accepted when
one-token-per-step decoding, run on its parent's canvas, makes exactly the child's decision (its position and its
token), so a draft whose position was right but whose token changed once the decisions before it were filled in is
still accepted through a sibling. The forward on the last accepted node drafts the next round. The output is that of
one-token-per-step low-confidence decoding (`llada` with steps=0), token for token, in fewer forwards.

`lookup=n` (the lab's addition, after Prompt Lookup Decoding, Saxena 2023) guesses the next tokens by copying: the
tokens that followed the latest earlier occurrence of the last n decided tokens (else fewer) in the prompt and the
output, then the draft's own tokens, form a second chain from the certain decision beside the draft's own tree, so a
wrong guess costs tree nodes, not accepted decisions. Verification is unchanged, so the output stays exact. Left to
right or `leftmost-N` only (the surest-first order rarely commits the next positions in turn): each guess is
placed at the position it copies, in the place the reference's ranking of the draft gives that position.

`order=leftmost-N` (the lab's): the reference commits the surest of the block's N left-most masked positions, so
the next decision may be any of N rows (`leftmost-N@T`: the left-most one whenever its confidence is at least T).
`detours` more states join the tree, the likeliest first by the draft's probabilities (as EAGLE-2 grows a dynamic
tree, here over canvases), and the walk goes from canvas to canvas: a state is a set of decisions, so a walk that
took rows a then b rejoins the chain that took b then a.
"""
from __future__ import annotations

import heapq

import torch

from ...errors import LabError
from ...registry import method
from ...speculative.drafters import pld
from ..loop import check_order, decision, draft_and_verify
from ..rules import parse_order


def grow(chain: list[int], tokens: list[int], alternatives: list[list[int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """The verification tree as (parent, decisions) nodes: node 0 is the certain decision; level j holds the main
    chain's first j decisions plus each candidate token at chain[j] (the draft's own token first: it extends)."""
    nodes = [(-1, [(chain[0], tokens[chain[0]])])]
    for j in range(1, len(chain)):
        parent = len(nodes) - len(alternatives[j - 1]) if j > 1 else 0  # the previous level's main-chain node
        for token in alternatives[j]:
            nodes.append((parent, nodes[parent][1] + [(chain[j], token)]))
    return nodes


def graft(nodes: list[tuple[int, list[tuple[int, int]]]], path: list[tuple[int, int]]):
    """The tree with a second chain from the certain decision (the lookup's guesses): each prefix of `path` the tree
    lacks becomes a child of the one before it, so the draft's own chain and its siblings stay as they were."""
    parent = 0
    for j in range(2, len(path) + 1):
        node = next((k for k, (_, made) in enumerate(nodes) if set(made) == set(path[:j])), None)
        if node is None:
            nodes.append((parent, path[:j]))
            node = len(nodes) - 1
        parent = node
    return nodes


def detour(nodes: list[tuple[int, list[tuple[int, int]]]], tokens: list[int], prob, masked: list[int], width: int,
           budget: int, guessed: dict[int, int], sure: float = 2.0):
    """For a `leftmost-N` reference (N = width > 1), which may take any of the N left-most masked rows next, up to
    `budget` more states, the likeliest first (EAGLE-2's dynamic tree, over canvases): a state is a set of decisions
    (a canvas), reached from a state S by taking row r with probability conf(r) / (the sum over S's N left-most rows)
    times the draft's probability of the token there (`prob(r, t)`; the guess's where S holds guesses). The walk can
    rejoin a chain from such a state: taking row a then b reaches the state that took b then a."""
    index = {frozenset(made): k for k, (_, made) in enumerate(nodes)}
    candidates, pushed = [], 0

    def reach(taken: set[int], r: int, t: int) -> float:  # the chance that the reference takes (r, t) next
        left = sorted(set(masked) - taken)[:width]
        if prob(left[0], tokens[left[0]]) >= sure:  # leftmost-N@T: the left-most row, surely
            return prob(r, t) if r == left[0] else 0.0
        return prob(r, tokens[r]) / (sum(prob(c, tokens[c]) for c in left) or 1.0) * prob(r, t)

    def offer(parent: int, value: float):  # the parent's children as candidates, by their chance of being reached
        nonlocal pushed
        made = nodes[parent][1]
        taken = {r for r, _ in made}
        line = guessed if any(guessed.get(r) == t != tokens[r] for r, t in made) else {}
        for r in sorted(set(masked) - taken)[:width]:
            token = line.get(r, tokens[r])
            pushed += 1
            heapq.heappush(candidates, (-value * reach(taken, r, token), pushed, parent, made + [(r, token)]))

    for k, (_, made) in enumerate(nodes):  # the states there are, valued along the way they were made
        value = 1.0
        for j in range(1, len(made)):
            value *= reach({r for r, _ in made[:j]}, *made[j])
        offer(k, value)
    added = 0
    while candidates and added < budget:
        value, _, parent, made = heapq.heappop(candidates)
        if frozenset(made) in index:
            continue
        nodes.append((parent, made))
        index[frozenset(made)] = len(nodes) - 1
        added += 1
        if len(made) < len(masked):
            offer(len(nodes) - 1, -value)
    return nodes


@method("ssd-dllm", family="diffusion", lossless=True,
        paper="Self Speculative Decoding for Diffusion Large Language Models (Gao et al., 2025)",
        departures="Written from the paper's abstract and public reviews (its full text and code were not at hand), so"
                   " the tree's shape is the lab's: a main chain of `drafts` decisions with the `branches` likeliest "
                   "tokens at each drafted position (non-draft tokens as leaves); no mixed-order (position-jumping) "
                   "verification, but for the lab's leftmost-N detours. Lossless with respect to the lab's one-token-"
                   "per-step low-confidence decoding (llada steps=0, same block_size and cache), greedy only; drafts "
                   "stay inside the current block; the tree's nodes run as copies in one forward of one row (each sees"
                   " the cached context and itself) and count as one forward. The lab's additions: order=left-to-right"
                   " verifies against llada remasking=left_to_right instead, order=leftmost-N against llada leftmost=N"
                   " (with `detours` more states: the other left-most rows taken first, likeliest first), "
                   "order=leftmost-N@T against llada leftmost=N sure=T; lookup=n (not with order=confidence) verifies "
                   "a second chain of prompt-lookup guesses (Prompt Lookup Decoding's copy of what followed the last n"
                   " tokens earlier in the prompt or output) beside the draft's own tree.")
def ssd_dllm(dec, *, drafts: int = 4, branches: int = 2, block_size: int = 0, cache: str = "auto",
             order: str = "confidence", lookup: int = 0, detours: int = -1):
    """SSD: the dLLM drafts its next decisions and verifies them in one batched tree; one-per-step exactly
    (order: the reference's commit order, `llada remasking=low_confidence` (confidence), `left_to_right` or
    `leftmost=N` (leftmost-N), `leftmost=N sure=T` (leftmost-N@T); lookup: the n of prompt-lookup guesses verified
    beside the draft, 0 for none; detours: with order=leftmost-N, how many states off those chains the tree adds,
    the likeliest first; -1: 2 (drafts - 1))."""
    if drafts < 1 or branches < 1:
        raise LabError("drafts and branches must be >= 1")
    check_order(order)
    width, left_at = parse_order(order)  # left_at: leftmost-N@T's T
    if lookup and order == "confidence":  # a copied span fills consecutive positions, rarely the surest-first's next
        raise LabError("lookup guesses the next positions left to right: use order=left-to-right or leftmost-N")

    def verify(den, window, logits, start, end, ranked, tokens, conf):
        chain = ranked[:drafts]  # rows of the window, in the reference's order; chain[0] is certain
        guessed = {}  # row -> the lookup's token: what followed the certain decision earlier, copied after it
        if lookup:
            first = window[chain[0]]
            span = max(window[r] for r in chain) - first  # how far past the certain decision the chain reaches
            copied = pld.lookup(den.prompt + den.canvas[:first] + [tokens[chain[0]]], lookup, 1, max(span, 0))
            at = {first + 1 + i: token for i, token in enumerate(copied)}
            guessed = {r: at[window[r]] for r in chain[1:] if window[r] in at}
        path = [guessed.get(r, tokens[r]) for r in chain]  # the second chain: the guesses where there are some
        top = logits[chain].topk(min(branches, logits.shape[-1]), -1)
        ids = torch.cat([top.indices, torch.tensor(path, device=logits.device)[:, None]], 1)  # the path's p too
        probs = torch.softmax(logits[chain].double(), -1).gather(-1, ids)
        ids, sure = torch.stack([ids.double(), probs]).tolist()  # one transfer
        alternatives = [[tokens[r]] + [int(t) for t in row[:-1] if int(t) != tokens[r]][:branches - 1]
                        for r, row in zip(chain, ids)]
        p_of = {(r, int(t)): p for r, row, ps in zip(chain, ids, sure) for t, p in zip(row, ps)}
        nodes = graft(grow(chain, tokens, alternatives), list(zip(chain, path)))
        straight = len(nodes)  # nodes past this are detours
        if width > 1:  # detours: the reference may take another of the left-most rows first
            nodes = detour(nodes, tokens, lambda r, t: p_of.get((r, t), conf[r] if t == tokens[r] else 0.0), ranked,
                           width, detours if detours >= 0 else 2 * (drafts - 1), guessed, left_at)
        # no forward for a node that fills the block or ends the output (decided up to an end-of-text token)
        run = [k for k, (_, made) in enumerate(nodes)
               if len(made) < len(ranked) and not den.ends({window[r]: t for r, t in made})]
        outputs = {}
        if run:
            contents = []
            for k in run:
                block = den.canvas[start:end]
                for r, t in nodes[k][1]:
                    block[window[r] - start] = t
                contents.append(block)
            cwindow, many = den.predict_many(start, end, contents)
            saved = list(den.canvas)
            for i, k in enumerate(run):  # what one-token-per-step decoding does next on each node's canvas
                den.canvas[start:end] = contents[i]
                order_k, tokens_k = decision(den, cwindow, many[i], start, end, order)[:2]
                outputs[k] = (cwindow[order_k[0]], tokens_k[order_k[0]]), many[i]
            den.canvas = saved
        state = {}  # a canvas (its set of decisions) -> its node: the walk goes by canvas, not by parent
        for k, (_, made) in enumerate(nodes):
            state.setdefault(frozenset(made), k)
        row = {p: r for r, p in enumerate(window)}
        node, made, detoured = 0, nodes[0][1][:1], 0
        while node in outputs:  # walk on while what one-per-step decoding does on a state's canvas leads to a state
            position, token = outputs[node][0]
            step = (row.get(position), token)
            after_step = state.get(frozenset(nodes[node][1]) | {step})
            if after_step is None:
                break
            node = after_step
            made.append(step)
            detoured += node >= straight
        # why the walk ended: the block filled, the output ended, or the reference's next decision was not in the
        # tree: no child there (leaf), its row had children but not its token (token), or none had its row (order)
        stop = "block" if len(nodes[node][1]) == len(ranked) else "eos"
        if node in outputs:
            row_next = row.get(outputs[node][0][0])
            here = frozenset(nodes[node][1])
            rows_there = {r for (_, m) in nodes if len(m) == len(here) + 1 and here < frozenset(m)
                          for r, _ in set(m) - here}
            stop = "leaf" if not rows_there else "token" if row_next in rows_there else "order"
        committed, confidence = list(tokens), list(conf)
        for r, t in made[1:]:  # a sibling's or a guess's token is not the draft's own
            committed[r], confidence[r] = t, p_of.get((r, t), conf[r])
        after = (cwindow, outputs[node][1]) if node in outputs else None
        info = {"drafted": len(chain), "tree_nodes": len(run), "sibling": any(t != tokens[r] for r, t in made),
                "stop": stop}
        if width > 1:
            info["detoured"] = detoured  # accepted states off the chains: the reference took another left-most row
        if lookup:  # the guesses as [position, token]; accepted decisions that took one's token (new: not the draft's)
            taken = [r for r, g in guessed.items() if (r, g) in made]
            info.update(lookup=[[window[r], g] for r, g in guessed.items()], lookup_accepted=len(taken),
                        lookup_new=sum(committed[r] != tokens[r] for r in taken))
        return [r for r, _ in made], committed, confidence, after, info

    return draft_and_verify(dec, "ssd-dllm", block_size, cache, verify, order)
