"""Triton kernels for the lab's hot paths, each beside its torch reference (installed as lab.kernels).

Each public function runs its Triton kernel on CUDA tensors when Triton is there, and its torch reference otherwise
(the CPU, CI): `bitmask.apply_token_bitmask` (grammar masks in llguidance's layout), `rejection.chain_rejection`
(speculative sampling of a chain: accepted, recovered, bonus), `tree_rejection.tree_rejection` (SpecInfer's
multi-round rejection over a draft tree in two launches; the exact verifier's on a GPU),
`sampling.sample_min_p` (temperature and min-p sampling without a sort, rows split over programs; the exponential
race both samplers share),
`topk_topp.sample_top_k_top_p` (temperature, top-k and top-p sampling without a sort: thresholds from a few
candidates), `dllm_commit.commit_rows` (a dLLM window's argmax tokens, their confidence and the rows
to commit under Fast-dLLM's threshold rule or the k surest per block), `tree_attention.tree_attention` (k new
tokens' grouped-query attention over a static KV cache under a tree mask, split-K over the columns: decode and tree
verification); and the fast backend's fused forward: `rms_norm.add_rms_norm` (residual add and RMSNorm),
`rope_cache.rope_and_cache` (rotary embedding with the KV-cache write), `silu_mul.silu_mul` (SwiGLU's product), each
rounding as its torch reference does (`rounding.to_dtype`), `gemv.gemv` (a decode step's products with the norm
or activation before them, the first gathering the token embeddings) and `head_argmax.head_argmax` (a greedy step's
final norm, head and argmax with its probability in one launch). `commit_rows`, `sample_min_p`, `chain_rejection`,
`tree_attention` and `head_argmax`, whose last program merges the others' partials, take their counters from
`counters` (kept per stream or per captured graph; the kernel sets them back to 0). The tests run every kernel in
Triton's interpreter on the CPU against its reference; `python -m lab bench gpu --kernels` times them against the
references and the memory bandwidth.

Never installed as a top-level `kernels`: transformers probes for a package of that name (Hugging Face's kernel
hub) and would take this one for it.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch


def triton_available() -> bool:
    """Whether Triton imports (the fast backend's fused forward needs it on CUDA)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_TRITON = triton_available()


def triton_ready(*tensors: torch.Tensor) -> bool:
    """Whether to run the Triton kernel: Triton importable, and CUDA tensors (or its CPU interpreter asked for)."""
    if not _TRITON:
        return False
    for t in tensors:  # (the environment is read only off CUDA: a call per launch)
        if not t.is_cuda:
            return os.environ.get("TRITON_INTERPRET") == "1"
    return True


try:  # the raw pointer of the current stream, as Triton's launcher reads it
    from torch._C import _cuda_getCurrentRawStream as _raw_stream
except ImportError:  # a CPU build of torch
    def _raw_stream(index: int) -> int:
        return torch.cuda.current_stream(index).cuda_stream

_COUNTERS: dict = {}


_CAPTURE = threading.local()  # the counters of the graph this thread is capturing (`graph_counters`)


def counters(device: torch.device, n: int) -> torch.Tensor:
    """At least n int32 zeros for a kernel's "last program merges" counters, which the kernel sets back to 0 before
    it ends, so no fill is launched per call. Eager: one buffer per (device, stream), kept (kernels on one stream run
    in order and each finds it zero; threads on separate streams never share one). While a CUDA graph is being
    captured: the graph's own (two graphs replayed on separate streams must not share one), zeroed before the capture
    by `graph_counters`, else fresh zeros (the fill is then captured with the graph)."""
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            own = getattr(_CAPTURE, "buffer", None)
            index = torch.cuda.current_device() if device.index is None else device.index
            if own is not None and own.device.index == index and own.numel() >= n:
                return own
            return torch.zeros(n, dtype=torch.int32, device=device)
        key = (device.index, _raw_stream(device.index))
    else:  # Triton's interpreter
        key = (device, 0)
    buffer = _COUNTERS.get(key)
    if buffer is None or buffer.numel() < n:
        buffer = _COUNTERS[key] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return buffer


def vocab_blocks(vocab: int) -> tuple[int, int, int]:
    """(block, blocks, warps) for kernels that split each row of a vocabulary over programs: blocks of a power of two
    from 128 to 4096 entries, about 8 a row until they reach 4096 (V = 49152: 12 of 4096), at most 16 entries a
    thread."""
    block = min(4096, max(128, 1 << max(0, (-(-vocab // 8) - 1).bit_length())))
    return block, -(-vocab // block), max(1, min(8, block // 512))


@contextlib.contextmanager
def graph_counters(device: torch.device, n: int = 4096):
    """Counters for the graph this thread captures inside the block, yielded: allocated and zeroed here, before the
    capture, so the graph records no fill. Kernels in one graph run in order on one stream and set them back to 0, so
    they share them; the caller keeps them alive as long as the graph."""
    _CAPTURE.buffer = own = torch.zeros(n, dtype=torch.int32, device=device)
    try:
        yield own
    finally:
        _CAPTURE.buffer = None
