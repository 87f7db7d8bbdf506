"""Trained drafts the lab ships, loaded with no network: `fastdraft` for the default model.

"FastDraft: How to Train Your Draft" (Zafrir et al., 2024) trains a small draft of the target's architecture and
tokenizer, then aligns it to the target on text the target wrote itself. The lab's draft for SmolLM2-135M-Instruct
is a few decoder layers of the target's own shape, started from some of its layers and distilled from its
answers to ShareGPT prompts (recipe: lab/train/fastdraft.py). Its embeddings and LM head are the target's own
(shared, not copied), so the shipped files (lab/data/fastdraft/) hold only the layers and the final norm, with a
manifest naming the recipe, the data, the steps and the validation numbers. Where the manifest names a `vocab`
file, the draft's head keeps only those tokens (VocabTrim, lab/vocab_trim.py): a cheaper draft step for a small
loss of acceptance; `trim=False` (the draft 'fastdraft:full') keeps the whole head.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from .errors import LabError
from .vocab_trim import TrimmedLMHead

SHIPPED = Path(__file__).resolve().parent / "data" / "fastdraft"
OWN = ("model.layers.", "model.norm.")  # the draft's own weights; the rest is the target's


def draft_model(target: nn.Module, layers: list[int]) -> nn.Module:
    """A draft of the target's architecture: copies of the target's decoder layers `layers` (in that order), its
    final norm, and the target's embeddings and LM head shared with it."""
    if not hasattr(getattr(target, "model", None), "layers") or not hasattr(target, "lm_head"):
        raise LabError(f"a FastDraft draft is built from a Llama-family model's layers; {type(target).__name__} "
                       "has none to start from")
    total = target.config.num_hidden_layers
    if not layers or any(not 0 <= i < total for i in layers):
        raise LabError(f"draft layers {layers} must be indices of the target's {total} layers")
    config = copy.deepcopy(target.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    with torch.device("meta"):
        draft = type(target)(config)
    draft.model.embed_tokens = target.model.embed_tokens
    draft.lm_head = target.lm_head
    draft.model.layers = nn.ModuleList(copy.deepcopy(target.model.layers[i]) for i in layers)
    for j, layer in enumerate(draft.model.layers):
        layer.self_attn.layer_idx = j
    draft.model.norm = copy.deepcopy(target.model.norm)
    draft.model.rotary_emb = copy.deepcopy(target.model.rotary_emb)
    draft.generation_config = copy.deepcopy(target.generation_config)
    return draft.eval()


def own_state(draft: nn.Module) -> dict[str, torch.Tensor]:
    """The draft's own weights (layers and final norm), the part a checkpoint or the shipped files hold."""
    return {k: v for k, v in draft.state_dict().items() if k.startswith(OWN)}


def manifest(folder: Path = SHIPPED) -> dict | None:
    """A FastDraft export's manifest (the shipped one by default), or None where the folder holds none."""
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    about = json.loads(path.read_text(encoding="utf-8"))
    return about if about.get("name") == "fastdraft" else None


def fits(target: nn.Module, about: dict) -> bool:
    """Whether a draft described by `about` (a manifest) was trained for a model of the target's shape."""
    config = target.config.get_text_config()
    base = about["base"]
    return (type(target).__name__ == base["architecture"] and config.vocab_size == base["vocab_size"]
            and config.hidden_size == base["hidden_size"] and config.num_hidden_layers == base["num_layers"])


def export_weights(folder: Path, about: dict, draft: nn.Module) -> dict[str, torch.Tensor]:
    """The draft's own weights (bf16) from an export's files named in `about`, checked against `draft`'s."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for name in about["files"]:
        state.update(load_file(str(folder / name)))
    if set(state) != set(own_state(draft)):
        raise LabError(f"fastdraft files in {folder} do not match its manifest: reinstall the lab or export again")
    return state


def load_fastdraft(target: nn.Module, folder: Path = SHIPPED, trim: bool = True) -> nn.Module:
    """The shipped FastDraft on the target's device and dtype, sharing the target's embeddings; its head trimmed to
    the manifest's `vocab` tokens where it names them and `trim`, else the target's own."""
    about = manifest(folder)
    if about is None:
        raise LabError(f"no trained draft in {folder}: train one with `python -m lab train fastdraft`")
    if not fits(target, about):
        raise LabError(f"fastdraft was trained for {about['base']['name']}; this target has another shape: "
                       "use draft='layers:N' or a draft model with the target's tokenizer")
    draft = draft_model(target, about["init_layers"])
    state = export_weights(folder, about, draft)
    param = next(target.parameters())
    draft.load_state_dict({k: v.to(param.device, param.dtype) for k, v in state.items()}, strict=False)
    if trim and about.get("vocab"):
        tokens = json.loads((folder / about["vocab"]["file"]).read_text(encoding="utf-8"))["tokens"]
        draft.lm_head = TrimmedLMHead(target.lm_head.weight, torch.tensor(tokens))
    draft.name_or_path = "fastdraft"
    return draft
