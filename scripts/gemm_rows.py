"""The products of a Llama-8B layer (and its LM head) for 1, 16 and 64 new tokens, three ways, on a GPU: what a
64-token verification pays beyond a decode step in its matrix products (`python -m lab bench gpu`'s tree_verify).

    python scripts/gemm_rows.py [--out FILE]

Ways: F.linear(x, W) (x @ W^T, the fast backend's), (W @ x^T)^T (the same product with the long side as cuBLAS's M),
and F.linear with cuBLASLt preferred. Each is the sum over one layer's four products (qkv, out, gate_up, down) times
32 layers plus the head, timed as one CUDA graph (`bench gpu`'s graph_us: do_bench over its replays; 16 GB of
weights do not fit in L2 anyway).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    from lab.bench.gpu import graph_us

    bf16, dev = torch.bfloat16, "cuda"
    hidden, inter, layers = 4096, 14336, 32
    shapes = [(6144, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)]
    weights = [[torch.randn(n, k, device=dev, dtype=bf16) * 0.02 for n, k in shapes] for _ in range(layers)]
    head = torch.randn(128256, hidden, device=dev, dtype=bf16) * 0.02
    nbytes = sum(w.numel() * 2 for ws in weights for w in ws) + head.numel() * 2
    ways = {"F.linear": lambda x, w: F.linear(x, w), "(W x^T)^T": lambda x, w: (w @ x.T).T}
    rows = []
    for lib in ("default", "cublaslt"):
        if lib == "cublaslt":
            torch.backends.cuda.preferred_blas_library("cublaslt")
        for name, product in ways.items():
            for m in (1, 16, 64):
                xs = {k: torch.randn(m, k, device=dev, dtype=bf16) for k in (hidden, inter)}

                def step():
                    for ws in weights:
                        for w in ws:
                            product(xs[w.shape[1]], w)
                    product(xs[hidden], head)
                ms = graph_us(step) / 1000
                row = {"blas": lib, "way": name, "rows": m, "ms": round(ms, 3),
                       "bandwidth_tb_s": round(nbytes / (ms * 1e-3) / 1e12, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "command": "python scripts/gemm_rows.py",
                       "rows": rows}, f, indent=0)


if __name__ == "__main__":
    main()
