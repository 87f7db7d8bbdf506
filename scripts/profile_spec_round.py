"""Where a speculative round's time goes on the GPU (default model, fast backend, bf16): wall time inside the
round's parts (each wrapped with a timer: drafting, bursts, graph input writes and replays, verification), and the
GPU's kernel time for one prompt under torch.profiler against the wall time (the rest is the GPU waiting for the
host). `--cprofile` instead profiles the host calls (cumulative, and the callees of the round's parts) after every
graph is captured; `--host-ops` times single host-side operations on this machine (a pinned copy, an event, a tiny
kernel launch ...).

    python scripts/profile_spec_round.py .whl/chat_suite.jsonl 4 greedy,sps,pld
    python scripts/profile_spec_round.py --host-ops
    python scripts/profile_spec_round.py --cprofile .whl/chat_suite.jsonl 3 sps,pld

The first call of each method captures its graphs; the timed calls follow on every prompt (greedy's numbers still
include captures for new column buckets).
"""
import collections
import functools
import json
import sys
import time

import torch

from lab.api import Lab
from lab.backends.fast import backend as fb, graphs
from lab.speculative import loop
from lab.speculative.drafters import sps as spsmod


def host_ops() -> None:
    x = torch.zeros(25, dtype=torch.long).pin_memory(); y = x.cuda(); e = torch.cuda.Event()  # noqa: E702
    for name, f in [("copy_ pinned", lambda: y.copy_(x, non_blocking=True)), ("event record", lambda: e.record()),
                    ("event sync", lambda: e.synchronize()),
                    ("pin_memory 8 longs", lambda: torch.tensor([1] * 8).pin_memory()),
                    ("tensor.to cuda nb", lambda: torch.tensor([1] * 8).pin_memory().to("cuda", non_blocking=True)),
                    ("tiny kernel", lambda: y.add_(1)), ("numpy", lambda: x.numpy())]:
        for _ in range(100):
            f()
        torch.cuda.synchronize(); t = time.perf_counter()  # noqa: E702
        for _ in range(1000):
            f()
        dt = time.perf_counter() - t; torch.cuda.synchronize()  # noqa: E702
        print(f"{name:22s} {dt*1e3:.1f} us/call (host)")


def host_calls(suite: str, prompts: int, methods: str) -> None:
    import cProfile
    import pstats

    lab = Lab("default", device="cuda", dtype=torch.bfloat16, backend="fast")
    rows = [json.loads(line) for line in open(suite) if line.strip()][:prompts]
    ids = [lab.encode(r["prompt"], chat=r["chat"]) for r in rows]
    for name in methods.split(","):
        for p in ids:
            lab.generate(name, p, max_new_tokens=96)  # every graph captured
        pr = cProfile.Profile(); t = time.perf_counter(); pr.enable()  # noqa: E702
        for p in ids:
            lab.generate(name, p, max_new_tokens=96)
        pr.disable(); print(f"==== {name} {time.perf_counter()-t:.3f} s")  # noqa: E702
        st = pstats.Stats(pr); st.sort_stats("cumulative").print_stats(45)  # noqa: E702
        st.print_callees("write|replay|_run|score_one|propose|_rounds|greedy_tree|drive|hold|_bursts|__call__")


if "--host-ops" in sys.argv:
    host_ops()
    sys.exit()
if sys.argv[1] == "--cprofile":
    host_calls(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    sys.exit()

acc = collections.defaultdict(float); cnt = collections.Counter()  # noqa: E702


def wrap(owner, name, label):
    f = getattr(owner, name)

    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[label] += time.perf_counter() - t; cnt[label] += 1  # noqa: E702
    setattr(owner, name, g)


wrap(spsmod.DraftModel, "propose", "propose")
wrap(fb.FastBackend, "_run", "_run")
wrap(fb.FastBackend, "hold", "hold")
wrap(fb.FastBackend, "_bursts", "bursts")
wrap(graphs.Inputs, "write", "write")
wrap(graphs.Burst, "__call__", "burst_call")
wrap(loop, "score_one", "score_one")
wrap(loop.Exact, "verify", "verify")
wrap(loop, "greedy_tree", "greedy_tree")
wrap(torch.cuda.CUDAGraph, "replay", "replay")

lab = Lab("default", device="cuda", dtype=torch.bfloat16, backend="fast")
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][:int(sys.argv[2])]
ids = [lab.encode(r["prompt"], chat=r["chat"]) for r in rows]
for name in sys.argv[3].split(","):
    lab.generate(name, ids[0], max_new_tokens=96)
    acc.clear(); cnt.clear()
    torch.cuda.synchronize(); t = time.perf_counter(); fw = tok = 0
    for p in ids:
        tr = lab.generate(name, p, max_new_tokens=96).trace; fw += tr.forwards; tok += tr.new_tokens
    torch.cuda.synchronize(); wall = time.perf_counter() - t
    print(f"== {name}: {tok/wall:.1f} tok/s, {fw} forwards, {tok} tokens, wall {wall*1e3:.1f} ms, {wall/fw*1e3:.3f} ms/forward")
    for k in acc: print(f"   {k:12s} {acc[k]*1e3:8.1f} ms  {cnt[k]:5d} calls  {acc[k]/cnt[k]*1e6:8.1f} us/call  {acc[k]/fw*1e6:8.1f} us/forward")
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize(); t = time.perf_counter()
        tr = lab.generate(name, ids[0], max_new_tokens=96).trace
        torch.cuda.synchronize(); wall1 = time.perf_counter() - t
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in ev if e.device_time) / 1e3
    ka = prof.key_averages()
    print(f"   profiled prompt 0: wall {wall1*1e3:.1f} ms (profiler on), GPU kernel time {busy:.1f} ms, {len(ev)} GPU events, {tr.forwards} forwards")
    print(ka.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
