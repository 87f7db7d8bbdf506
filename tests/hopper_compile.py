"""Compile the vocabulary and attention kernels for an H200 (sm_90) without a GPU, at `bench gpu --kernels`' shapes;
print one JSON line a kernel: registers, bytes spilled, global loads and stores and how many are 16-byte vectors.

Run without TRITON_INTERPRET (test_kernels runs it in a subprocess): the interpreter runs code that the compiler
rejects (a variable given another type inside an `if`), and says nothing of registers or vector widths.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

assert os.environ.get("TRITON_INTERPRET") != "1", "compiles only without the interpreter"
from lab.kernels import (bitmask, dllm_commit, gemv, head_argmax, rejection, sampling, tree_attention,  # noqa: E402
                         tree_rejection)

TOOL = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_sm90(fn, args: dict[str, str], constants: dict, num_warps: int, num_stages: int = 3) -> dict:
    """args: runtime argument -> Triton type ('*fp32', 'i32', 'fp32'); 'i32:16' for an int Triton would see as a
    multiple of 16 (pointers are taken as 16-byte aligned, as torch allocates them)."""
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        kind = "constexpr" if name in constants else args[name]
        signature[name] = kind.split(":")[0]
        if kind.startswith("*") or kind.endswith(":16"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    kernel = triton.compile(ASTSource(fn, signature, constants, attrs), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(TOOL), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    ptx = kernel.asm["ptx"]
    count = lambda pattern: len(re.findall(pattern, ptx))  # noqa: E731
    return {"registers": int(re.search(r"REG:(\d+)", usage).group(1)),
            "spilled": int(re.search(r"LOCAL:(\d+)", usage).group(1)) + int(re.search(r"STACK:(\d+)", usage).group(1)),
            "loads": count(r"ld(\.volatile)?\.global"), "loads_v4": count(r"ld(\.volatile)?\.global[.\w]*\.v4"),
            "stores": count(r"st\.global"), "stores_v4": count(r"st\.global[.\w]*\.v4")}


def attention(k: int, heads: int, kv_heads: int, dim: int, columns: int = 4096) -> tuple:
    """`tree_attention`'s kernels as its launch would compile them for bfloat16 on 132 SMs."""
    _, constants, _, _, _, second = tree_attention._launch(k, columns, heads, kv_heads, dim, torch.bfloat16, 132, None,
                                                           None, False)
    constants = dict(constants)
    warps, stages = constants.pop("num_warps"), constants.pop("num_stages")
    constants["VISIBLE"] = True  # the fast backend's calls: the committed prefix read from the device
    args = {name: "*bf16" for name in ("q", "keys", "values", "out")}
    args |= {"mask": "*i8", "scratch": "*fp32", "finished": "*i32", "k": "i32", "columns": "i32", "splits": "i32",
             "scale": "fp32", "visible": "*i64"}
    args |= {name: "i32:16" for name in ("sq_h", "sq_i", "sk_h", "sk_c", "sv_h", "sv_c", "sm_i")}
    out = [(f"attention k={k} H={heads}", tree_attention._attend, args, constants, warps, stages)]
    if second:
        out.append((f"attention merge k={k} H={heads}", tree_attention._combine,
                    {"scratch": "*fp32", "out": "*bf16", "k": "i32", "heads": "i32", "splits": "i32"}, second[1], 4, 3))
    return out


def kernels() -> list[tuple]:
    """(name, fn, args, constants, warps, stages) at the bench's shapes."""
    block, blocks, warps = 4096, 12, 8  # vocab_blocks(49152)
    chain = {"drafts": "*i64", "draft_probs": "*fp32", "target_probs": "*fp32", "uniforms": "*fp32", "noise": "*fp32",
             "tokens": "*i64", "accepted_out": "*i64", "partial": "*fp32", "partial_token": "*i32",
             "finished": "*i32", "blocks": "i32"}
    return [("bitmask", bitmask._apply, {"logits": "*fp32", "bitmask": "*i32", "vocab": "i32:16", "words": "i32"},
             {"WORDS": bitmask.WORDS}, 4, 3),
            ("dllm commit", dllm_commit._commit,
             {"logits": "*fp32", "masked": "*i1", "out": "*i64", "finished": "*i32", "vocab": "i32:16",
              "threshold": "fp32", "k": "i32", "block_size": "i32:16"},
             {"WINDOW": 32, "BLOCKS": 16, "BLOCK": block}, warps, 3),
            *[(f"chain rejection{'' if q else ' fixed drafts'}", rejection._chain, chain,
               {"k": 8, "vocab": 49152, "HAS_Q": q, "KS": 8, "BLOCKS": 16, "BLOCK": block}, warps, 3)
              for q in (True, False)],
            *min_p(64, 128256), *attention(1, 9, 3, 64), *attention(1, 32, 8, 128), *attention(64, 32, 8, 128),
            *matrix_vector(), *tree()]


def tree() -> list[tuple]:
    """`tree_rejection`'s two kernels at the default model's vocabulary."""
    shape = {"VOCAB": 49152, "BLOCK": tree_rejection.BLOCK}
    return [("tree rejection rows", tree_rejection._rows,
             {"parents": "*i32", "tokens": "*i32", "draft_probs": "*fp32", "q_index": "*i32", "target_probs": "*fp32",
              "uniforms": "*fp32", "scratch": "*fp32", "state": "*i32", "accepted": "*i8", "n": "i32"}, shape, 4, 3),
            ("tree rejection path", tree_rejection._path,
             {"parents": "*i32", "accepted": "*i8", "target_probs": "*fp32", "scratch": "*fp32", "state": "*i32",
              "noise": "*fp32", "out": "*i64", "n": "i32", "rows": "i32"}, shape | {"NS": 64}, 4, 3)]


def matrix_vector() -> list[tuple]:
    """`gemv.gemv` at SmolLM2's shape, bfloat16: the norm + QKV product (576 -> 960), the same gathering its input
    from the embeddings, and silu + down (1,536 -> 576); `head_argmax` over the default model's head (49,152 x 576)."""
    args = {name: "*bf16" for name in ("x", "delta", "total", "norm_weight", "weight", "bias", "out")}
    args |= {"ids": "*i64", "n": "i32", "eps": "fp32"}
    flags = {"HAS_BIAS": False, "HAS_IDS": False}
    head = {name: "*bf16" for name in ("x", "delta", "norm_weight", "weight")}
    head |= {"vocab": "*i64", "out": "*i64", "finished": "*i32", "n": "i32", "eps": "fp32"}
    return [("gemv norm", gemv._gemv, args, flags | {"K": 576, "PROLOGUE": 1, "HAS_DELTA": True, "BLOCK_N": 4,
                                                     "BLOCK_K": 1024}, 4, 3),
            ("gemv embed", gemv._gemv, args, flags | {"K": 576, "PROLOGUE": 1, "HAS_DELTA": False, "HAS_IDS": True,
                                                      "BLOCK_N": 4, "BLOCK_K": 1024}, 4, 3),
            ("gemv silu", gemv._gemv, args, flags | {"K": 1536, "PROLOGUE": 2, "HAS_DELTA": False, "BLOCK_N": 2,
                                                     "BLOCK_K": 2048}, 4, 3),
            ("head argmax", head_argmax._head_argmax, head,
             {"PROGRAMS": 528, "ITERS": 6, "K": 576, "HAS_DELTA": True, "HAS_VOCAB": False, "BLOCK_N": 16,
              "BLOCK_K": 1024, "MERGE": 1024}, 4, 3)]


def min_p(rows: int, vocab: int) -> list[tuple]:
    """`sampling.sample_min_p`'s two kernels as its plan launches them on 132 SMs."""
    parts, split = sampling.plan(rows, vocab, 132)
    shape = {"vocab": vocab, "SPLIT": split, "SPLITS": parts, "BLOCK": sampling.BLOCK}
    return [("min-p range max", sampling._range_max, {"logits": "*fp32", "out": "*i64"}, shape, 8, 3),
            ("min-p race", sampling._range_race,
             {"logits": "*fp32", "noise": "*fp32", "out": "*i64", "finished": "*i32", "temperature": "fp32",
              "log_min_p": "fp32"}, shape | {"WIDTH": triton.next_power_of_2(parts), "MIN_P": True}, 8, 3)]


if __name__ == "__main__":
    for name, fn, args, constants, warps, stages in kernels():
        print(json.dumps({"name": name, "warps": warps, **compile_sm90(fn, args, constants, warps, stages)}))
