"""Loading diffusion LMs: LLaDA and Dream from the hub (their own code: explicit trust_remote_code), and the lab's
converted models: `dllm-default` (the default model turned into a block-diffusion LM, shipped as a small delta in
lab/data/dllm-default/) or any folder that `python -m lab train dllm` wrote (manifest.json + adapter.safetensors).

Importing this module registers it with `lab.models.LOADERS` (lab.api imports lab.dllm), so `Lab("dllm-default")`,
`--model dllm-default` and `--model DIR` work.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import LabError
from .model import DLLM

# hub id -> (mask token id, shifted logits): both decode with global attention
HUB = {"GSAI-ML/LLaDA-8B-Instruct": (126336, False), "GSAI-ML/LLaDA-8B-Base": (126336, False),
       "GSAI-ML/LLaDA-1.5": (126336, False), "Dream-org/Dream-v0-Instruct-7B": (151666, True),
       "Dream-org/Dream-v0-Base-7B": (151666, True)}
DEFAULT = "dllm-default"
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "dllm-default"
MANIFEST, ADAPTER = "manifest.json", "adapter.safetensors"
KIND = "decoding-lab/dllm-adapter"


def is_adapter(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def claims(name: str) -> bool:
    """Whether `name` is a dLLM this module loads (so lab.models.load hands it over)."""
    if not isinstance(name, str):
        return False
    return name == DEFAULT or name in HUB or is_adapter(Path(name).expanduser())


def load(name: str, device: str | None = None, dtype: torch.dtype | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) with `model.dllm` set."""
    if name in HUB:
        return load_hub(name, device, dtype, trust_remote_code)
    folder = SHIPPED if name == DEFAULT else Path(name).expanduser()
    if name == DEFAULT and not is_adapter(folder):
        raise LabError("dllm-default is not shipped yet: train it on a GPU with `python -m lab train dllm --out DIR`, "
                       f"then copy DIR's {MANIFEST} and {ADAPTER} into {SHIPPED} (or pass --model DIR)")
    return load_adapter(folder, device, dtype, name)


def load_hub(name: str, device, dtype, trust_remote_code: bool):
    from transformers import AutoModel, AutoTokenizer

    from .. import models

    if not trust_remote_code:
        raise LabError(f"{name} runs its own modelling code from the hub: pass trust_remote_code=True "
                       "(Lab(..., trust_remote_code=True), --trust-remote-code) if you trust it")
    device = models.check_device(device)
    dtype = dtype or models.default_dtype(device)
    extra = {} if models.hub_reachable() else {"local_files_only": True}
    try:
        model = AutoModel.from_pretrained(name, dtype=dtype, trust_remote_code=True, **extra)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True, **extra)
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LabError(f"cannot load {name}: not in the hub cache and the hub is unreachable, or its code failed "
                       f"({first})") from None
    mask, shift = HUB[name]
    mask = getattr(tokenizer, "mask_token_id", None) or mask
    model.to(device).eval()
    model.dllm = DLLM(mask_id=int(mask), shift=shift, attention="global")
    model.name_or_path = name
    return model, tokenizer


def load_adapter(folder: Path, device, dtype, name: str):
    """The base model of a manifest with its delta merged in: plain weights, a DLLM spec from the manifest."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import models
    from .lora import merge

    manifest = json.loads((folder / MANIFEST).read_text())
    base = manifest["base"]
    if base != models.DEFAULT and not Path(base).is_absolute():
        base = str(folder / base)
    device = models.check_device(device)
    dtype = dtype or models.default_dtype(device)
    source, extra = models.resolve(base)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra)  # a fresh copy to merge into
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    except (OSError, ValueError, TypeError):
        pass
    if tokenizer is not None and len(tokenizer) < 2:
        tokenizer = None
    lora = manifest["lora"]
    merge(model, load_file(str(folder / ADAPTER)), lora["rank"], lora["alpha"])
    model.to(device, dtype).eval()
    model.dllm = DLLM(**manifest["dllm"])
    model.name_or_path = name
    return model, tokenizer


def _register() -> None:
    from .. import models

    models.LOADERS["dllm"] = (claims, load)


_register()
