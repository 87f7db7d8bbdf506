"""What policies share: proposals with Gumbel-noise temperature, confidence measures, how many to commit.

`propose` and `confidence` work on the window's logits [w, V] on the device; `host` brings a step's tokens and
confidences back in one transfer (the loop's one sync a step); the commit rules then rank short host lists.
"""
from __future__ import annotations

import torch

CONFIDENCES = ("probability", "margin", "entropy", "random")


def gumbel(shape, rng: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise in float64."""
    u = torch.rand(shape, generator=rng, dtype=torch.float64, device=device).clamp_min(1e-300)
    return -torch.log(-torch.log(u))


def propose(logits: torch.Tensor, temperature: float, rng: torch.Generator | None,
            noise: torch.Tensor | None = None) -> torch.Tensor:
    """A token per position: argmax at temperature 0, else argmax(logits / T + Gumbel noise) in float64, which
    draws from softmax(logits / T) (LLaDA's low-precision warning is why it is float64). Passing the same `noise`
    for two distributions couples their draws (equal where the distributions agree; APD's coupling)."""
    if temperature <= 0:
        return logits.argmax(-1)
    noise = gumbel(logits.shape, rng, logits.device) if noise is None else noise
    return (logits.double() / temperature + noise).argmax(-1)


def confidence(logits: torch.Tensor, tokens: torch.Tensor, kind: str = "probability",
               rng: torch.Generator | None = None) -> torch.Tensor:
    """How sure the model is at each position [w]: the chosen token's probability (LLaDA's low-confidence
    remasking, Dream's maskgit_plus), the top-2 probability margin, minus the entropy, or random (LLaDA's random
    remasking). Higher is surer."""
    if kind == "random":
        return torch.rand(tokens.shape, generator=rng, dtype=torch.float64, device=tokens.device)
    probs = torch.softmax(logits.double(), -1)
    if kind == "probability":
        return probs.gather(-1, tokens[..., None])[..., 0]
    if kind == "margin":
        top = probs.topk(2, -1).values
        return top[..., 0] - top[..., 1]
    if kind == "entropy":
        return (probs * torch.log(probs.clamp_min(1e-300))).sum(-1)
    raise ValueError(f"confidence is one of {', '.join(CONFIDENCES)}, got {kind!r}")


def top2_gap(logits: torch.Tensor) -> torch.Tensor:
    """The gap between the two largest logits at each position [w] (Prophet's signal)."""
    top = logits.double().topk(2, -1).values
    return top[..., 0] - top[..., 1]


def host(tokens: torch.Tensor, conf: torch.Tensor) -> tuple[list[int], list[float]]:
    """Tokens and confidences as host lists, in one transfer (token ids are exact in float64)."""
    both = torch.stack([tokens.to(torch.float64), conf.to(torch.float64)]).tolist()
    return [int(t) for t in both[0]], both[1]


ORDERS = ("confidence", "left-to-right", "leftmost-N", "leftmost-N@T")


def parse_order(order: str) -> tuple[int, float] | None:
    """An order as (width, sure): how many of the block's left-most masked rows it chooses among (0: all of them),
    and the confidence (T) at or above which it takes the left-most row regardless (2: never); None: not an
    order."""
    if order == "confidence":
        return 0, 2.0
    if order == "left-to-right":
        return 1, 2.0
    name, at, sure = order.partition("@")
    width = name.removeprefix("leftmost-")
    if width == name or not width.isdigit() or int(width) < 1:
        return None
    try:
        tau = float(sure) if at else 2.0
    except ValueError:
        return None
    return (int(width), tau) if not at or 0 < tau <= 1 else None


def rank(conf: list[float], rows: list[int], order: str = "confidence") -> list[int]:
    """`rows` in the order one-token-per-step decoding commits them: surest first (ties: the left-most first), left
    to right (the window's rows are in position order), or `leftmost-N`: the surest of the N left-most rows still
    masked, each time (N = 1 is left to right; the lab's middle way between the two). `leftmost-N@T` takes the
    left-most row whenever its confidence is at least T, else as leftmost-N: left to right where the model is sure,
    the surer neighbour where it is not (the lab's too)."""
    width, sure = parse_order(order)
    if not width:
        return sorted(rows, key=lambda j: -conf[j])
    left, ranked = sorted(rows), []
    while left:
        pick = left[0] if conf[left[0]] >= sure else max(left[:width], key=lambda j: conf[j])  # equals: the left-most
        ranked.append(pick)
        left.remove(pick)
    return ranked


def block_steps(steps: int, size: int, length: int) -> int:
    """A block's share of `steps` over a canvas of `length` (its ceiling); 0 steps: one token per step."""
    return size if steps == 0 else max(1, -(-steps * size // length))


def transfer_counts(masked: int, steps: int) -> list[int]:
    """LLaDA's schedule: `masked` tokens over `steps` steps, as evenly as possible, the extra ones first."""
    steps = max(1, min(steps, masked))
    base, extra = divmod(masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def above_threshold(conf: list[float], rows: list[int], threshold: float) -> list[int]:
    """Fast-dLLM's threshold rule: every position surer than `threshold`, and always the surest one."""
    ordered = rank(conf, rows)
    return ordered[:max(1, sum(conf[j] >= threshold for j in ordered))]


def by_factor(conf: list[float], rows: list[int], factor: float) -> list[int]:
    """Fast-dLLM's factor rule: the n surest positions, n the longest prefix (by confidence) with the n-th
    confidence c_n >= 1 - factor / (n + 1); always at least one."""
    ordered = rank(conf, rows)
    values = [conf[j] for j in ordered]
    n = 1
    while n < len(values) and values[n] >= 1 - factor / (n + 2):
        n += 1
    return ordered[:n]
