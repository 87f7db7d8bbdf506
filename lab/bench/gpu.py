"""The GPU bench: the fast backend against the HF backend and transformers' own paths, side by side in one process.

    python -m lab bench gpu [--models default,random:smollm2,random:llama-1b] [--tokens 128] [--prompts 4]
                            [--compiled] [--spec] [--fp32-check] [--out results/gpu-<date>.json]

- ar: greedy tokens/s of `lab-fast`, `lab-hf`, `transformers-eager` (generate) and, with --compiled,
  `transformers-static-compiled` (generate with a static cache, auto-compiled; timed after a warm-up call on the
  same prompt, its best case), on each model, against the HBM roofline (weight bytes over the copy bandwidth
  measured here). `random:NAME` builds a model of that architecture's shape with random weights (speed does not
  depend on weight values); `default` is the embedded SmolLM2 (or give a GGUF / folder path).
- agreement: whether lab-fast's greedy tokens equal lab-hf's (bf16: rounding may flip near-ties; --fp32-check also
  compares them in float32, where they must be equal).
- tree_verify: the time of a 64-token verification forward over one of a 1-token step on the fast backend.
- spec (with --spec, on trained models): every training-free speculative method on the fast backend against the
  fast backend's own greedy (the spec bench's runner).
Writes JSON with the command and prints a table last.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from .. import registry
from ..errors import LabError
from ..metrics import BASELINE, summarize

SHAPES = {  # architecture shapes for random-weight speed runs (the public configs of these models)
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, rope_theta=100000.0,
                    max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, vocab_size=128256, rope_theta=500000.0,
                     max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=128256, rope_theta=500000.0,
                     max_position_embeddings=8192, tie_word_embeddings=False, rms_norm_eps=1e-5),
}


def sync() -> None:
    torch.cuda.synchronize()


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read plus written), median of 10 copies of 2 GiB."""
    a = torch.empty(2**30, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        sync()
        start = time.perf_counter()
        b.copy_(a)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * a.numel() * a.element_size() / statistics.median(times[2:])


def load(name: str, dtype: torch.dtype):
    """(model, tokenizer or None, short name) for 'default', a path, or 'random:SHAPE'."""
    if name.startswith("random:"):
        from transformers import AutoModelForCausalLM, LlamaConfig

        shape = name.split(":", 1)[1]
        if shape not in SHAPES:
            raise LabError(f"unknown shape {shape!r}: use {', '.join(SHAPES)}")
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[shape]), dtype=dtype).eval()
        model.generation_config.eos_token_id = None
        return model, None, shape
    from .. import models

    model, tokenizer = models.load(name, "cuda", dtype)
    return model, tokenizer, "smollm2" if name == "default" or "smollm2" in name.lower() else Path(name).stem


def prompts_for(lab, n: int) -> list[list[int]]:
    """Chat and copy-heavy prompts (real models), or random prompts of varied lengths (random models)."""
    if lab.tokenizer is None:
        g = torch.Generator().manual_seed(0)
        lengths = (23, 57, 131, 301, 77, 199)[:n]
        return [torch.randint(10, lab.target.vocab_size, (length,), generator=g).tolist() for length in lengths]
    from .engine import prompts as mix

    return [lab.encode(r["prompt"], r["chat"]) for r in mix(n)]


def timed(fn) -> tuple[list[int], float]:
    sync()
    start = time.perf_counter()
    tokens = fn()
    sync()
    return tokens, time.perf_counter() - start


def autoregressive(model, tokenizer, short: str, n: int, tokens: int, compiled: bool, roofline: float) -> tuple:
    from ..api import Lab

    fast = Lab(model_obj=model, tokenizer=tokenizer, backend="fast")
    hf = Lab(model_obj=model, tokenizer=tokenizer, backend="hf")
    prompts = prompts_for(hf, n)
    eos = None if tokenizer is None else model.generation_config.eos_token_id

    def generate(ids, **extra):
        x = torch.tensor([ids], device="cuda")
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos, **extra)
        return out[0, len(ids):].tolist()

    engines = {"lab-fast": lambda ids: fast.generate("greedy", ids, max_new_tokens=tokens).tokens,
               "lab-hf": lambda ids: hf.generate("greedy", ids, max_new_tokens=tokens).tokens,
               "transformers-eager": generate}
    if compiled:
        engines["transformers-static-compiled"] = lambda ids: generate(ids, cache_implementation="static")
    rates: dict[str, list[float]] = {e: [] for e in engines}
    outputs: dict[str, list] = {e: [] for e in engines}
    for i, ids in enumerate(prompts):
        for name, fn in engines.items():
            fn(ids)  # warm-up on this very prompt: graphs, kernels, the compiled path's compile
            got, seconds = timed(lambda: fn(ids))
            rates[name].append(len(got) / seconds)
            outputs[name].append(got)
        print(f"  {short} prompt {i}: " + ", ".join(f"{e} {rates[e][-1]:.0f}" for e in engines), flush=True)
    rows = [{"model": short, "engine": e, "tok_s": round(statistics.median(r), 1), "roofline_tok_s": round(roofline, 1)}
            for e, r in rates.items()]
    same = [a == b for a, b in zip(outputs["lab-fast"], outputs["lab-hf"])]
    first = [next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)
             for a, b in zip(outputs["lab-fast"], outputs["lab-hf"])]
    return rows, {"model": short, "identical": sum(same), "prompts": len(same), "first_divergence": first}, fast


def tree_verify(lab, short: str) -> dict:
    """Seconds of a 64-token chain verification over a 1-token step on the fast backend (graphs warm)."""
    backend = lab.target.fork()
    backend.prefill(list(range(10, 210)))
    cost = {}
    for k in (1, 64):
        times = []
        for _ in range(30):
            sync()
            start = time.perf_counter()
            backend.forward(list(range(20, 20 + k)))
            sync()
            times.append(time.perf_counter() - start)
            backend.rollback(200)
        cost[k] = statistics.median(times[5:])
    return {"model": short, "tokens": 64, "one_s": round(cost[1], 6), "tree_s": round(cost[64], 6),
            "cost_vs_one": round(cost[64] / cost[1], 3)}


def attention_inputs(device: str, g: torch.Generator, heads: int, kv_heads: int, dim: int, k: int,
                     columns: int) -> tuple:
    """(q, keys, values, mask) in bfloat16: k new tokens over the first `columns` columns of a bigger static cache
    (a strided view, as the fast backend reads it), each seeing the prefix and its ancestors in a random tree."""
    from ..tree import ancestor_mask

    dtype = torch.bfloat16
    q = torch.randn(k, heads, dim, device=device, generator=g).to(dtype).transpose(0, 1)
    cache = torch.randn(2, kv_heads, columns + 256, dim, device=device, generator=g).to(dtype)
    keys, values = cache[0, :, :columns], cache[1, :, :columns]
    parents = [-1] + [int(torch.randint(0, i, (), generator=g, device=device)) for i in range(1, k)]
    mask = torch.cat([torch.ones(k, columns - k, dtype=torch.bool), ancestor_mask(parents)], 1).to(device)
    return q, keys, values, mask


def attention_case(name: str, device: str, g: torch.Generator, heads: int, kv_heads: int, dim: int, k: int,
                   columns: int) -> tuple:
    """A tree attention case on `attention_inputs`, called as the fast backend calls it: told on the device how
    many leading columns every row sees (the committed prefix, `visible`), whose mask it then does not read."""
    from ..kernels import tree_attention

    q, keys, values, mask = attention_inputs(device, g, heads, kv_heads, dim, k, columns)
    visible = torch.tensor([columns - k], device=device)
    shape = f"H={heads}, KVH={kv_heads}, D={dim}, k={k}, C={columns} bf16"
    return (name, shape, 2 * keys.numel() * keys.element_size(),  # the keys and values read
            lambda: tree_attention.tree_attention(q, keys, values, mask, visible=visible),
            lambda: tree_attention.tree_attention_reference(q, keys, values, mask), 2e-2)


def decoder_cases(device: str, g: torch.Generator, hidden: int = 576, intermediate: int = 1536, heads: int = 9,
                  kv_heads: int = 3, dim: int = 64, vocab: int = 49152) -> list[tuple]:
    """The fast backend's fused decode-step kernels at one token of SmolLM2's shape, bfloat16 (tolerance: about one
    bfloat16 step of their outputs, where a float32 sum in another order may round the other way)."""
    from ..kernels import gemv, head_argmax, rms_norm, rope_cache, silu_mul

    bf16 = torch.bfloat16
    x, delta = (torch.randn(1, hidden, device=device, generator=g).to(bf16) for _ in range(2))
    norm = (torch.rand(hidden, device=device, generator=g) + 0.5).to(bf16)
    weight = (torch.randn((heads + 2 * kv_heads) * dim, hidden, device=device, generator=g) / hidden ** 0.5).to(bf16)
    gate_up = torch.randn(1, 2 * intermediate, device=device, generator=g).to(bf16)
    angles = torch.arange(4096, device=device)[:, None] * torch.rand(dim // 2, device=device, generator=g)[None]
    cos, sin = (torch.cat([f(angles)] * 2, -1).to(bf16).contiguous() for f in (torch.cos, torch.sin))
    qkv = torch.randn(1, (heads + 2 * kv_heads) * dim, device=device, generator=g).to(bf16)
    position, slot = torch.tensor([4000], device=device), torch.tensor([17], device=device)
    caches = [torch.zeros(kv_heads, 64, dim, dtype=bf16, device=device) for _ in range(4)]
    head = (torch.randn(vocab, hidden, device=device, generator=g) / hidden ** 0.5).to(bf16)
    row = 2 * hidden
    return [("residual add + RMSNorm", f"1x{hidden} bf16", 4 * row, lambda: rms_norm.add_rms_norm(delta, x, norm, 1e-5),
             lambda: rms_norm.add_rms_norm_reference(delta, x, norm, 1e-5), 5e-2),
            ("RoPE + KV-cache write", f"1 token, H={heads}, KVH={kv_heads}, D={dim} bf16", 4 * qkv.numel(),
             lambda: rope_cache.rope_and_cache(qkv, cos, sin, position, slot, *caches[:2], heads, kv_heads),
             lambda: rope_cache.rope_and_cache_reference(qkv, cos, sin, position, slot, *caches[2:], heads, kv_heads),
             None),
            ("silu * up", f"1x{2 * intermediate} bf16", 3 * intermediate * 2, lambda: silu_mul.silu_mul(gate_up),
             lambda: silu_mul.silu_mul_reference(gate_up), 5e-2),
            ("RMSNorm + matrix-vector (QKV)", f"{hidden}->{weight.shape[0]} bf16", weight.numel() * 2,
             lambda: gemv.gemv(x, weight, None, "norm", delta, norm, 1e-5),
             lambda: gemv.gemv_reference(x, weight, None, "norm", delta, norm, 1e-5), 5e-2),
            ("greedy head (norm, head, argmax and its probability)", f"{hidden}->{vocab} bf16", head.numel() * 2,
             lambda: head_argmax.head_argmax(x, delta, norm, 1e-5, head),
             lambda: head_argmax.head_argmax_reference(x, delta, norm, 1e-5, head), 1e-4)]


def kernel_cases(device: str = "cuda", rows: int = 64, vocab: int = 128256, small: int = 49152, k: int = 8,
                 window: int = 32, columns: int = 4096, tree: int = 64, long: int = 32768,
                 prefill: int = 2048) -> list[tuple]:
    """(name, shape, bytes it must move, kernel, reference, tolerance) for each Triton kernel, on random inputs;
    `small` is the default model's vocabulary, `window` a dLLM window's rows, `columns` the cache columns attention
    reads, `tree` the tokens it verifies, `long` a long context's columns (where split-K decode attention is for:
    its keys and values, not launches, then decide the time) and `prefill` the tokens of silu * up's large case.
    The tolerance: None (`agree`'s exact-ish default) or an absolute one (bfloat16 attention)."""
    from ..kernels import bitmask, dllm_commit, rejection, sampling, topk_topp

    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(rows, vocab, device=device, generator=g)
    words = torch.randint(-2**31, 2**31 - 1, (rows, (vocab + 31) // 32), device=device, generator=g,
                          dtype=torch.int64).to(torch.int32)
    noise = torch.empty(rows, vocab, device=device).exponential_(generator=g)
    p = torch.rand(rows, k + 1, small, device=device, generator=g).softmax(-1)
    q = torch.rand(rows, k, small, device=device, generator=g).softmax(-1)
    drafts = q.argmax(-1)
    u, e = torch.rand(rows, k, device=device, generator=g), noise[:, :small].contiguous()
    scores = logits[:, :small].contiguous() * 3
    masked = torch.rand(window, device=device, generator=g) < 0.7
    # the bitmask is applied in place to a copy of its own each (applying it again moves the same bytes and changes
    # nothing): a clone inside the timed call would add a copy's bytes to the time
    mine, theirs = logits.clone(), logits.clone()
    return [("bitmask apply", f"{rows}x{vocab} fp32", 4 * rows * vocab * 2 + words.numel() * 4,
             lambda: bitmask.apply_token_bitmask(mine, words),
             lambda: bitmask.apply_token_bitmask_reference(theirs, words), None),
            ("chain rejection", f"{rows} rows, k={k}, V={small}", 4 * rows * small * 3,  # p_r, q_r, the noise
             lambda: rejection.chain_rejection(drafts, q, p, u, e),
             lambda: rejection.chain_rejection_reference(drafts, q, p, u, e), None),
            ("min-p sampling", f"{rows}x{vocab} fp32", 4 * rows * vocab * 3,
             lambda: sampling.sample_min_p(logits, 0.8, 0.05, noise),
             lambda: sampling.sample_min_p_reference(logits, 0.8, 0.05, noise), None),
            ("top-k top-p sampling", f"{rows}x{small} fp32, k=50, p=0.9", 4 * rows * small * 2,  # logits, noise once
             lambda: topk_topp.sample_top_k_top_p(scores, 0.8, 50, 0.9, e),
             lambda: topk_topp.sample_top_k_top_p_reference(scores, 0.8, 50, 0.9, e), None),
            ("top-k top-p sampling, one row", f"1x{small} fp32, k=50, p=0.9", 4 * small * 2,  # FlashInfer's B=1
             lambda: topk_topp.sample_top_k_top_p(scores[:1], 0.8, 50, 0.9, e[:1]),
             lambda: topk_topp.sample_top_k_top_p_reference(scores[:1], 0.8, 50, 0.9, e[:1]), None),
            ("dllm commit", f"{window}x{small} fp32, threshold 0.9", 4 * window * small,
             lambda: dllm_commit.commit_rows(scores[:window], masked, 0.9),
             lambda: dllm_commit.commit_rows_reference(scores[:window], masked, 0.9), None),
            attention_case("tree attention decode", device, g, 9, 3, 64, 1, columns),  # SmolLM2's shape
            attention_case("tree attention verify", device, g, 32, 8, 128, tree, columns),  # Llama-8B's
            attention_case("tree attention decode, long context", device, g, 32, 8, 128, 1, long),
            attention_case("tree attention verify, long context", device, g, 32, 8, 128, tree, long),
            *decoder_cases(device, g, vocab=small), silu_case(device, g, prefill), tree_case(device, g, small)]


def tree_case(device: str, g: torch.Generator, vocab: int, nodes: int = 32) -> tuple:
    """Multi-round rejection over a random tree of `nodes` drawn drafts (lab.kernels.tree_rejection against the
    batched torch operations the exact verifier ran before, `rejection_tree`), the same uniforms: the accepted
    paths must agree (each draws the token after it from its own random stream). Both read back to the host."""
    from ..speculative.verify import rejection_tree, rejection_tree_kernel
    from ..tree import Tree

    tree = Tree()
    probs = torch.randn(nodes + 1, vocab, device=device, generator=g).softmax(-1)
    for i in range(nodes):
        parent = int(torch.randint(-1, i, (), device=device, generator=g)) if i else -1
        q = (probs[parent + 1].log() + torch.randn(vocab, device=device, generator=g)).softmax(-1)
        tree.add(int(torch.multinomial(q, 1, generator=g)), parent, 1.0, q)
    u = torch.rand(nodes, device=device, generator=g)
    noise = torch.empty(vocab, device=device).exponential_(generator=g)
    return ("tree rejection", f"{nodes} drawn nodes, V={vocab}", 4 * (2 * nodes + 1) * vocab,  # p and q once, R
            lambda: rejection_tree_kernel(tree, probs, g, uniforms=u, noise=noise).accepted,
            lambda: rejection_tree(tree, probs, g, uniforms=u)[0].accepted, None)


def silu_case(device: str, g: torch.Generator, tokens: int = 2048, intermediate: int = 14336) -> tuple:
    """silu * up where the bytes, not the launch, decide its time: Llama-8B's intermediate size over a prefill of
    2,048 tokens (176 MB moved; the fast backend runs it on at most 64 tokens at a time, where it is launch-bound)."""
    from ..kernels import silu_mul

    gate_up = torch.randn(tokens, 2 * intermediate, device=device, generator=g).to(torch.bfloat16)
    return ("silu * up, large", f"{tokens}x{2 * intermediate} bf16", 3 * tokens * intermediate * 2,
            lambda: silu_mul.silu_mul(gate_up), lambda: silu_mul.silu_mul_reference(gate_up), 5e-2)


def graph_us(fn) -> float | None:
    """Median microseconds of one call of fn replayed as a CUDA graph, L2 flushed before each as do_bench does: its
    GPU time without the host's launch work (do_bench's time includes that work wherever it outlasts the flush);
    None if fn cannot be captured."""
    from triton.testing import do_bench

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # warm on the side stream, as capture wants
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception:  # a reference that syncs or allocates on the host cannot be captured
        torch.cuda.synchronize()
        return None
    return round(1000 * do_bench(graph.replay, return_mode="median"), 1)


def replay_us(graph, replays: int = 50) -> float:
    """Median microseconds of one replay of a captured graph, CUDA events around each (no L2 flush: the GPU time of
    the kernels with their inputs as a model's step leaves them)."""
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def cold_us(fn, repeats: int = 100) -> float:
    """Median microseconds of one call of fn after a read of 256 MB has evicted its inputs from L2, leaving L2 clean.
    do_bench's flush writes 256 MB of zeros instead, and the dirty lines it leaves are written back to memory while
    the timed call runs: on the H200 that charged silu * up's large case 49.1 us against 43.8 here, and the bitmask
    22.1 against 19.0, while kernels that only read (the long-context decode) timed the same either way
    (results/gpu-kernels-2026-12-02.json)."""
    flush = torch.empty(2**26, dtype=torch.float32, device="cuda")
    fn()
    starts, ends = ([torch.cuda.Event(enable_timing=True) for _ in range(repeats)] for _ in range(2))
    for start, end in zip(starts, ends):
        flush.sum()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return round(1000 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)), 1)


def kernels(bandwidth: float) -> list[dict]:
    """Each Triton kernel against its torch reference on the GPU: microseconds, and the bytes it must move over
    the measured copy bandwidth; and the kernel's and the reference's times replayed as CUDA graphs (`graph_us`,
    `torch_graph_us`: GPU time without the host's launch work, as inside the fast backend's graphs)."""
    from triton.testing import do_bench

    out = []
    theirs = flashinfer_ops()
    for name, shape, nbytes, kernel, reference, tolerance in kernel_cases():
        same = agree(kernel(), reference(), tolerance)
        us, torch_us = 1000 * do_bench(kernel, return_mode="median"), 1000 * do_bench(reference, return_mode="median")
        fi_us = None
        if name in theirs:
            try:  # the first call JIT-builds FlashInfer's module with the machine's nvcc
                fi_us = round(1000 * do_bench(theirs[name], return_mode="median"), 1)
            except Exception as e:  # a failed build leaves the column empty, not the bench
                print(f"flashinfer {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        cold, torch_cold = cold_us(kernel), cold_us(reference)
        out.append({"name": name, "shape": shape, "us": round(us, 1), "torch_us": round(torch_us, 1),
                    "graph_us": graph_us(kernel), "flashinfer_us": fi_us,
                    "bandwidth_frac": round(nbytes / (us * 1e-6) / bandwidth, 3), "agrees_with_reference": same,
                    "cold_us": cold, "torch_cold_us": torch_cold,
                    "flashinfer_cold_us": cold_us(theirs[name]) if fi_us else None,
                    "bandwidth_frac_cold": round(nbytes / (cold * 1e-6) / bandwidth, 3)})
    for row, case in zip(out, kernel_cases()):  # last: a reference whose capture fails cannot disturb the rest
        row["torch_graph_us"] = graph_us(case[4])
    return out


def flashinfer_ops(device: str = "cuda", rows: int = 64, vocab: int = 128256, small: int = 49152,
                   k: int = 8) -> dict:
    """FlashInfer's operation for each kernel case it also has (its sampling module: rejection-based top-k/top-p and
    min-p sampling, chain speculative sampling), on inputs of the case's shape and distribution, or {} where
    flashinfer does not import. Its samplers draw with their own random stream, so only their times compare; min-p
    starts from probabilities (FlashInfer's softmax with the temperature is in the time, as the lab's kernel does
    both)."""
    try:
        from flashinfer import sampling as fi
    except Exception:  # not installed, or no CUDA build for this machine
        return {}
    ops = flashinfer_decode(device)
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(rows, vocab, device=device, generator=g)
    scores = torch.randn(rows, small, device=device, generator=g) * 3 / 0.8  # the case's logits over T = 0.8
    p = torch.rand(rows, k + 1, small, device=device, generator=g).softmax(-1)
    q = torch.rand(rows, k, small, device=device, generator=g).softmax(-1)
    drafts = q.argmax(-1).to(torch.int32)
    return {"min-p sampling": lambda: fi.min_p_sampling_from_probs(fi.softmax(logits, 0.8), 0.05),
            "top-k top-p sampling": lambda: fi.top_k_top_p_sampling_from_logits(scores, 50, 0.9),
            "top-k top-p sampling, one row": lambda: fi.top_k_top_p_sampling_from_logits(scores[:1], 50, 0.9),
            "chain rejection": lambda: fi.chain_speculative_sampling(q, drafts, p), **ops}


def flashinfer_decode(device: str = "cuda", heads: int = 32, kv_heads: int = 8, dim: int = 128,
                      columns: int = 32768) -> dict:
    """FlashInfer's single-request decode attention (`single_decode_with_kv_cache`, keys and values [KVH, C, D]) on
    the long-context decode case's shape, bfloat16: its split-K decode kernel against the lab's. Its cache is
    contiguous (the lab's kernel reads a strided view of a bigger one). {} where it does not import."""
    try:
        from flashinfer import single_decode_with_kv_cache
    except Exception:
        return {}
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(heads, dim, device=device, generator=g).to(torch.bfloat16)
    keys, values = (torch.randn(kv_heads, columns, dim, device=device, generator=g).to(torch.bfloat16)
                    for _ in range(2))
    return {"tree attention decode, long context":
            lambda: single_decode_with_kv_cache(q, keys, values, kv_layout="HND")}


def agree(a, b, tolerance: float | None = None) -> bool:
    """Kernel vs reference output on the same inputs: integer tensors equal, float tensors within 1e-5 (relative),
    or within `tolerance` (absolute) where given."""
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(agree(x, y, tolerance) for x, y in zip(a, b))
    if torch.is_tensor(a):
        if a.dtype.is_floating_point:
            rtol, atol = (1e-5, 1e-6) if tolerance is None else (0.0, tolerance)
            return bool(torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol, equal_nan=True))
        return bool(torch.equal(a, b))
    return a == b


def speculative(fast, short: str, args) -> list[dict]:
    """Each method against the fast backend's own greedy (`bench spec`'s runner): speedup, tokens per forward,
    exact match, and greedy's and the method's median tokens/s."""
    from .engine import prompts as mix
    from .spec import run_bench
    from .suite import build_suite

    infos = registry.load_all()
    methods = ([m.strip() for m in args.spec_methods.split(",") if m.strip()] if args.spec_methods else
               sorted(n for n, m in infos.items() if m.family == "speculative" and m.training_free))
    if args.spec_suite:
        prompts = [json.loads(line) for line in Path(args.spec_suite).read_text().splitlines() if line.strip()]
    elif args.spec_categories:
        prompts = build_suite(args.prompts, [c.strip() for c in args.spec_categories.split(",") if c.strip()])
    else:
        prompts = mix(args.prompts)
    runs = run_bench(fast, prompts, methods, max_new_tokens=args.spec_tokens, warm_every_prompt=True)
    def rate(method: str) -> float | None:
        rates = [r["new_tokens"] / r["wall_s"] for r in runs if r["method"] == method and r.get("wall_s")]
        return round(statistics.median(rates), 1) if rates else None

    rows = []
    for m, s in summarize(runs).items():
        if m != BASELINE:
            o = s["overall"]
            rows.append({"model": short, "method": m, "engine": "lab-fast", "prompts": args.spec_suite or args.spec_categories or "mix",
                         "speedup_vs_ar": o["speedup"], "speedup_median": o["speedup_median"],
                         "tokens_per_forward": o["tokens_per_forward"],
                         "exact_match": o["exact_match"], "errors": o["errors"],
                         "tok_s": rate(m), "greedy_tok_s": rate(BASELINE)})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m lab bench gpu")
    ap.add_argument("--models", default="default,random:smollm2,random:llama-1b")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--compiled", action="store_true", help="also transformers' static-cache compiled path")
    ap.add_argument("--spec", action="store_true", help="every training-free drafter on the fast backend")
    ap.add_argument("--spec-tokens", type=int, default=64)
    ap.add_argument("--spec-methods", help="comma-separated methods for --spec (default: every training-free one)")
    ap.add_argument("--spec-categories", help="--spec on `bench spec`'s suite categories (e.g. copy: the copy-heavy "
                    "prompts), --prompts of each, instead of the chat and copy mix")
    ap.add_argument("--spec-suite", help="--spec on a JSONL of prompts (`bench spec --write-suite`), for a machine "
                    "without the data packages")
    ap.add_argument("--fp32-check", action="store_true", help="fast vs hf greedy tokens in float32 too")
    ap.add_argument("--kernels", action="store_true", help="time the Triton kernels against their references")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise LabError("bench gpu needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    bandwidth = copy_bandwidth()
    result = {"benchmark": "gpu", "device": torch.cuda.get_device_name(), "date": date.today().isoformat(),
              "command": "python -m lab bench gpu " + " ".join(argv or []), "dtype": args.dtype,
              "copy_bandwidth_tb_s": round(bandwidth / 1e12, 3), "ar": [], "agreement": [], "spec": [],
              "kernels": [], "tree_verify": [], "fp32_identity": []}
    if args.kernels:
        result["kernels"] = kernels(bandwidth)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, tokenizer, short = load(name, dtype)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        rows, agreement, fast = autoregressive(model, tokenizer, short, args.prompts, args.tokens, args.compiled,
                                               bandwidth / weight_bytes)
        result["ar"] += rows
        result["agreement"].append(agreement)
        result["tree_verify"].append(tree_verify(fast, short))
        if args.spec and tokenizer is not None:
            result["spec"] += speculative(fast, short, args)
        if args.fp32_check and name != "random:llama-8b":
            del fast
            model32, tokenizer32, _ = load(name, torch.float32)
            _, agree32, _ = autoregressive(model32, tokenizer32, short, args.prompts, min(args.tokens, 64), False, 1.0)
            result["fp32_identity"].append(agree32)
            del model32
        del model
        torch.cuda.empty_cache()
    out = Path(args.out or f"results/gpu-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}\n\n{result['device']}, {args.dtype}, copy bandwidth {result['copy_bandwidth_tb_s']} TB/s\n")
    print("| model | engine | tokens/s | roofline tokens/s |\n|---|---|---:|---:|")
    for r in result["ar"]:
        print(f"| {r['model']} | {r['engine']} | {r['tok_s']} | {r['roofline_tok_s']} |")
    for a in result["agreement"] + result["fp32_identity"]:
        print(f"agreement {a['model']}: {a['identical']}/{a['prompts']} identical, first divergence {a['first_divergence']}")
    for t in result["tree_verify"]:
        print(f"tree verify {t['model']}: 64 tokens cost {t['cost_vs_one']}x one ({t['tree_s'] * 1e3:.2f} ms)")
    for r in result["kernels"]:
        print(f"kernel {r['name']} ({r['shape']}): {r['us']} us, torch {r['torch_us']} us, "
              f"{r['bandwidth_frac']:.0%} of the copy bandwidth, as CUDA graphs {r['graph_us']} us against torch "
              f"{r.get('torch_graph_us')} us, "
              f"flashinfer {r['flashinfer_us']} us; on a clean cold L2 {r['cold_us']} us "
              f"({r['bandwidth_frac_cold']:.0%}), torch {r['torch_cold_us']} us, "
              f"flashinfer {r['flashinfer_cold_us']} us")
    for s in sorted(result["spec"], key=lambda r: -(r["speedup_vs_ar"] or 0)):
        print(f"spec {s['method']} ({s['prompts']}): {s['speedup_vs_ar']}x, {s['tokens_per_forward']} tokens/forward, "
              f"exact {s['exact_match']}, {s['tok_s']} vs greedy {s['greedy_tok_s']} tok/s")
    return result


if __name__ == "__main__":
    main()
