"""python -m lab {methods, generate, routes, bench, serve}: the command-line face of the lab.

Bad input ends with one line on stderr naming the fix, exit code 2, and nothing written to stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from .errors import LabError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        raise LabError(f"{self.prog}: {message}")


def read_text(path: Path, what: str) -> str:
    """A UTF-8 text file's contents, or a LabError saying what is wrong with `path`."""
    if path.is_dir():
        raise LabError(f"{what}: {path} is a folder, not a file")
    if not path.is_file():
        raise LabError(f"{what}: no such file {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise LabError(f"{what}: {path} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise LabError(f"{what}: cannot read {path} ({err.strerror})") from None


def read_prompts(args) -> list[dict]:
    """Prompts from --prompt or a JSONL file of {"id", "prompt", "chat"}; all checked before any run."""
    if (args.prompt is None) == (args.prompts is None):
        raise LabError("give exactly one of --prompt TEXT or --prompts FILE.jsonl")
    if args.prompt is not None:
        return [check_prompt({"id": "0", "prompt": args.prompt, "chat": args.chat}, "--prompt")]
    path, rows, lines = Path(args.prompts), [], {}
    for n, line in enumerate(read_text(path, "--prompts").split("\n"), 1):  # not splitlines: U+2028 is JSON text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LabError(f"{path}:{n}: not JSON ({err.msg})") from None
        except RecursionError:
            raise LabError(f"{path}:{n}: not JSON (nested too deeply)") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise LabError(f'{path}:{n}: each line needs {{"id", "prompt": "...", "chat": bool}}')
        row = check_prompt({"id": row.get("id", str(n)), "prompt": row["prompt"], "chat": row.get("chat", args.chat)},
                           f"{path}:{n}")
        key = str(row["id"])
        if key in lines:
            raise LabError(f"{path}:{n}: id {key!r} is also on line {lines[key]}: give every prompt its own id")
        lines[key] = n
        rows.append(row)
    if not rows:
        raise LabError(f"--prompts: {path} has no prompts")
    return rows


def check_prompt(row: dict, where: str) -> dict:
    """One prompt's row, checked: an id (string or integer), text, and a chat flag that is a real boolean."""
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
        raise LabError(f'{where}: "id" must be a string or an integer, not {json.dumps(row["id"])[:40]}')
    if not isinstance(row["chat"], bool):
        raise LabError(f'{where}: "chat" must be true or false, not {json.dumps(row["chat"])[:40]}')
    if not row["prompt"].strip():
        raise LabError(f"prompt {row['id']!r} is empty: give some text")
    try:
        row["prompt"].encode("utf-8")
    except UnicodeEncodeError:
        raise LabError(f"{where}: the prompt is not valid Unicode text (it holds a lone surrogate)") from None
    return row


def trace_file(row_id, method: str) -> str:
    """A Trace's file name from a prompt id: a readable slug plus a hash of the id, so it stays in its folder
    and two ids never share a file."""
    text = str(row_id)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "prompt"
    return f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}.{method}.json"


def check_trace_dir(path: Path) -> None:
    """Refuse a --trace-dir that is a file, lies under one, or cannot be written, before any work."""
    existing = next(p for p in [path.absolute(), *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise LabError(f"--trace-dir {path}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing))  # a real write (root, read-only disks), left as it was found
    except OSError as err:
        raise LabError(f"--trace-dir {path}: {existing} is not writable ({err.strerror})") from None


def parse_opts(pairs: list[str]) -> dict:
    opts = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise LabError(f"--opt {pair!r}: use key=value (a value @path reads a file)")
        key, value = pair.split("=", 1)
        if value.startswith("@"):
            value = read_text(Path(value[1:]), f"--opt {key.strip()!r}")
        opts[key.strip()] = value
    return opts


def cmd_methods(args) -> None:
    from . import registry

    rows = [m.to_dict() for m in sorted(registry.load_all().values(), key=lambda m: (m.family, m.name))]
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        flags = ("lossless" if r["lossless"] else "lossy") + ("" if r["training_free"] else ", trained")
        print(f"{r['name']:<16} {r['family']:<15} {flags:<18} {r['paper']}")


def cmd_generate(args) -> None:
    from . import models, registry
    from .api import Lab
    from .sampling import Sampling, generator

    rows = read_prompts(args)
    info = registry.get(args.method)
    opts = registry.parse_options(info, parse_opts(args.opt))
    if args.max_new_tokens < 1:
        raise LabError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    Sampling(temperature=args.temperature)  # checks the temperature
    if args.batch_size < 1:
        raise LabError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.batch_size > 1:
        from .batch import batched_method

        batched_method(args.method)  # a clear error before anything runs
    if args.trace_dir:
        check_trace_dir(Path(args.trace_dir))
    models.check_device(args.device)
    lab = Lab(args.model, device=args.device, trust_remote_code=args.trust_remote_code, device_map=args.device_map,
              max_memory=args.max_memory)
    for row in rows:  # every prompt is tokenized and checked before anything runs
        lab.check_context(lab.encode(row["prompt"], row["chat"], args.special_tokens), args.max_new_tokens,
                          f"prompt {row['id']!r}")
    if args.trace_dir:
        Path(args.trace_dir).mkdir(parents=True, exist_ok=True)
    rng = generator(lab.target.device, args.seed) if args.seed is not None else None  # one stream for the call
    groups = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    for group in groups:
        if args.batch_size > 1:  # decoded together; still one line per prompt, in input order
            results = lab.generate_batch(args.method, [row["prompt"] for row in group],
                                         chat=[row["chat"] for row in group], max_new_tokens=args.max_new_tokens,
                                         temperature=args.temperature, rng=rng, seed=None,
                                         special=args.special_tokens, **opts)
        else:
            results = [lab.generate(args.method, row["prompt"], chat=row["chat"], max_new_tokens=args.max_new_tokens,
                                    temperature=args.temperature, rng=rng, seed=None, special=args.special_tokens,
                                    **opts) for row in group]
        for row, result in zip(group, results):
            emit(args, row, result.trace)


def emit(args, row: dict, t) -> None:
    """Write one prompt's output: a JSON line (--json) or a short text block, and its Trace (--trace-dir)."""
    if args.trace_dir:
        t.to_json(Path(args.trace_dir) / trace_file(row["id"], args.method))
    out = {"id": row["id"], "method": args.method, "tokens": t.tokens, "text": t.text,
           "new_tokens": t.new_tokens, "forwards": t.forwards,
           "tokens_per_forward": round(t.tokens_per_forward, 4), "wall_s": round(t.wall_s, 4)}
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        print(f"[{row['id']}] {t.text}\n  {t.new_tokens} tokens, {t.forwards} forwards, "
              f"{t.tokens_per_forward:.2f} tokens/forward, {t.wall_s:.2f} s", flush=True)


def cmd_routes(args) -> None:
    """The information-flow route to one prediction of a prompt (Ferrando & Voita, 2024), as JSON or a summary."""
    from . import models
    from .api import Lab
    from .interp import flow
    from .interp.routes import check_tau

    if not args.prompt.strip():
        raise LabError("--prompt is empty: give some text")
    check_prompt({"id": "--prompt", "prompt": args.prompt, "chat": args.chat}, "--prompt")
    tau = check_tau(args.tau)
    models.check_device(args.device)
    models.resolve(args.model) if args.model != models.DEFAULT else None  # a missing folder or file: before loading
    lab = Lab(args.model, device=args.device)
    ids = lab.encode(args.prompt, args.chat, args.special_tokens)
    lab.check_context(ids, 0, "--prompt")
    if not -len(ids) <= args.position < len(ids):
        raise LabError(f"--position {args.position} is outside the prompt's {len(ids)} tokens "
                       f"(use 0 .. {len(ids) - 1}, or -1 for the last)")
    route = flow(lab, ids).route(args.position, tau, renormalize=args.renormalize)
    if args.json:
        print(route.to_json())
        return
    kinds = {k: sum(e.kind == k for e in route.edges) for k in ("attention", "ffn", "residual")}
    heads = sorted(route.important_heads())
    print(f"route to the prediction after token {route.position} ({route.pieces[route.position]!r}): "
          f"{lab.token_text(route.predicted)!r} (p={route.probability:.3f}), tau={tau}\n"
          f"  {len(route.nodes)} nodes, {route.size} edges ({', '.join(f'{v} {k}' for k, v in kinds.items())})\n"
          f"  important heads (layer, head): {heads[:24]}{' ...' if len(heads) > 24 else ''}\n"
          f"  FFN blocks on the route: {sorted(route.ffn_layers())}")


def cmd_bench(args) -> None:
    from .bench.run import main as bench_main

    bench_main(args.rest)


def cmd_train(args) -> None:
    from .train.run import main as train_main

    train_main(args.rest)


def cmd_serve(args) -> None:
    from .apps.serve import serve

    models = args.model or ["default"]
    serve(port=args.port, address=args.address, allow_websocket_origin=args.allow_websocket_origin,
          model=models[0], models=models[1:], allow_any_model=args.allow_any_model, max_models=args.max_models)


def build() -> Parser:
    p = Parser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    m = sub.add_parser("methods", help="list the registered methods")
    m.add_argument("--json", action="store_true")
    m.set_defaults(run=cmd_methods)
    g = sub.add_parser("generate", help="run a method on prompts")
    g.add_argument("--method", required=True)
    g.add_argument("--model", default="default")
    g.add_argument("--prompt")
    g.add_argument("--prompts", help="JSONL file of {id, prompt, chat}")
    g.add_argument("--chat", action="store_true", help="wrap --prompt in the chat template")
    g.add_argument("--special-tokens", action="store_true",
                   help="let prompt text that spells special tokens (<|im_end|> ...) be those tokens")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--device")
    g.add_argument("--device-map", choices=["auto", "balanced", "sequential"],
                   help="spread a model too large for one GPU over the GPUs, the CPU and disk (HF backend)")
    g.add_argument("--max-memory", help="with --device-map: caps per device, e.g. 0=70GiB,1=70GiB,cpu=100GiB")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="let a hub model run its own modelling code (LLaDA, Dream)")
    g.add_argument("--json", action="store_true")
    g.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--trace-dir", help="also write each run's Trace as JSON here")
    g.add_argument("--batch-size", type=int, default=1,
                   help="decode this many prompts together (methods with a batched implementation)")
    g.set_defaults(run=cmd_generate)
    r = sub.add_parser("routes", help="the information-flow route to a prediction (JSON with --json)")
    r.add_argument("--model", default="default")
    r.add_argument("--prompt", required=True)
    r.add_argument("--chat", action="store_true", help="wrap --prompt in the chat template")
    r.add_argument("--special-tokens", action="store_true",
                   help="let prompt text that spells special tokens (<|im_end|> ...) be those tokens")
    r.add_argument("--tau", type=float, default=0.04, help="importance threshold in (0, 1); 0.04 is the paper's")
    r.add_argument("--position", type=int, default=-1, help="the predicting position (default -1: the last token)")
    r.add_argument("--renormalize", action="store_true", help="rescale each node's kept edges to sum to 1")
    r.add_argument("--device")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=cmd_routes)
    b = sub.add_parser("bench", help="run the offline benchmark suite (see lab/bench)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(run=cmd_bench)
    t = sub.add_parser("train", help="run a training recipe (see lab/train; meant for a GPU)")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(run=cmd_train)
    s = sub.add_parser("serve", help="serve the Panel dashboard (on this machine only, unless told otherwise)")
    s.add_argument("--port", type=int, default=5006, help="0: any free port")
    s.add_argument("--address", default="localhost", help="listen here (0.0.0.0: every interface)")
    s.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST:PORT",
                   help="also answer pages opened as http://HOST:PORT (other machines; repeatable)")
    s.add_argument("--model", action="append", help="a model visitors may run; the first is loaded at start (repeatable)")
    s.add_argument("--allow-any-model", action="store_true",
                   help="let visitors load any hub id or local folder (default: only 'default' and --model)")
    s.add_argument("--max-models", type=int, default=2, help="how many loaded models to keep")
    s.set_defaults(run=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build().parse_args(argv)
        args.run(args)
    except LabError as err:
        print("error: " + " ".join(str(err).splitlines()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
