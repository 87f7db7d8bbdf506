"""Every registered method on a GPU, on a tiny random model in fp32: lossless ones must give transformers' greedy
tokens, and every method must run at T > 0 (device random streams, device verifiers, pinned copies).

    python scripts/gpu_smoke.py [--device cuda]

Prints one line per method and a summary last; exits 1 if any lossless method differs or any method fails.
"""
from __future__ import annotations

import argparse
import sys
import traceback

import torch

import lab
from lab.api import Lab
from lab.models import tiny


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="auto", help="auto, hf or fast")
    args = ap.parse_args()
    bad = []
    for arch in ("llama", "gpt2"):
        model = tiny(arch, vocab_size=96, layers=2, seed=1).to(args.device)
        if args.backend == "fast" and arch == "gpt2":
            continue  # the fast backend runs the Llama family only
        tl = Lab(model_obj=model, backend=args.backend)
        print(f"{arch}: {type(tl.target).__name__}")
        prompt = [(i * 3) % 50 + 1 for i in range(12)] * 2
        x = torch.tensor([prompt], device=args.device)
        want = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=20, do_sample=False)[0, 24:].tolist()
        for name, info in sorted(lab.load_all().items()):
            opts = {"draft": "layers:1"} if "draft" in info.options else {}
            try:
                greedy = tl.generate(name, prompt, max_new_tokens=20, **opts).tokens
                sampled = tl.generate(name, prompt, max_new_tokens=12, temperature=0.8, seed=1, **opts).tokens
                ok = greedy == want or not info.lossless or name == "beam"
                print(f"{arch:6} {name:20} T=0 {'ok' if ok else 'DIFFERS'}  T=0.8 {sampled[:6]}")
                if not ok:
                    bad.append(f"{arch}/{name}: differs")
            except Exception as err:
                traceback.print_exc(limit=-3)
                bad.append(f"{arch}/{name}: {type(err).__name__}: {err}")
        if "bass" in lab.load_all():
            batch = tl.generate_batch("bass", [prompt, prompt[:10]], max_new_tokens=12, draft="layers:1")
            if batch[0].tokens != want[:12]:
                bad.append(f"{arch}/bass batch differs")
    out = tl.target.fork()  # the last model's backend
    out.prefill([1, 2, 3])
    taps = out.forward([4, 5], taps=("hidden", "attentions", "heads", "mlp")).taps
    print("taps:", {k: tuple(v[0].shape) for k, v in taps.items()})
    print(f"\n{'all methods ran on ' + args.device if not bad else 'FAILED: ' + '; '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
