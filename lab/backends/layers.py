"""Where a transformers causal LM keeps its parts: decoder layers, body, final norm, attention and MLP blocks.

Only the backends reach into a model; these helpers find the parts by structure, not by class name, so that
Llama, Qwen2, Mistral, GPT-2 and their relatives all work.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

OUTPUT_PROJECTIONS = ("o_proj", "c_proj", "out_proj", "dense")


def decoder_layers(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder layers (a ModuleList of num_hidden_layers, or fewer in a layer view) and
    its attribute name."""
    n = model.config.get_text_config().num_hidden_layers
    lists = [(module, name, child) for module in model.modules() for name, child in module.named_children()
             if isinstance(child, nn.ModuleList) and len(child)]
    for module, name, child in lists:
        if len(child) == n:
            return module, name
    for module, name, child in lists:  # a layer view: the list whose layers have an attention block
        if any("attn" in sub for sub, _ in child[0].named_children()):
            return module, name
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def layer_list(model: nn.Module) -> nn.ModuleList:
    owner, attr = decoder_layers(model)
    return getattr(owner, attr)


def decoder_body(model: nn.Module) -> nn.Module:
    """The decoder without its LM head (`model.model` for most architectures); its output is final-normed."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model


def final_norm(model: nn.Module) -> nn.Module | None:
    body = decoder_body(model)
    return getattr(body, "norm", None) or getattr(body, "ln_f", None)


def attention_of(layer: nn.Module) -> nn.Module:
    """A decoder layer's attention block (`self_attn` in Llama, `attn` in GPT-2)."""
    for name, child in layer.named_children():
        if "attn" in name and "norm" not in name and "ln" not in name:
            return child
    raise ValueError(f"cannot find the attention block of {type(layer).__name__}")


def output_projection(attention: nn.Module) -> nn.Module:
    """The attention block's output projection: its input is the per-head outputs, concatenated."""
    for name in OUTPUT_PROJECTIONS:
        if hasattr(attention, name):
            return getattr(attention, name)
    raise ValueError(f"cannot find the output projection of {type(attention).__name__}")


def mlp_of(layer: nn.Module) -> nn.Module:
    for name in ("mlp", "feed_forward", "ffn"):
        if hasattr(layer, name):
            return getattr(layer, name)
    raise ValueError(f"cannot find the MLP block of {type(layer).__name__}")


def layer_view(model: nn.Module, keep: list[int]) -> nn.Module:
    """A model that runs only the decoder layers `keep`, sharing every weight with `model`.

    Self-speculation (LayerSkip, CLaSp, SWIFT) drafts with such a view. Each kept layer keeps its original
    index into the cache, so a view on its own needs its own cache.
    """
    owner, attr = decoder_layers(model)
    path = []  # modules from the model down to the layers' owner, shallow-copied so nothing is shared by mistake
    for name, module in model.named_modules():
        if module is owner:
            path = name.split(".") if name else []
            break
    view = copy.copy(model)
    view._modules = dict(model._modules)
    parent = view
    for name in path:
        child = copy.copy(parent._modules[name])
        child._modules = dict(child._modules)
        parent._modules[name] = child
        parent = child
    layers = getattr(owner, attr)
    parent._modules[attr] = nn.ModuleList([layers[i] for i in keep])
    return view


def copy_model(model: nn.Module, device: str, dtype: torch.dtype | None) -> nn.Module:
    """A deep copy of a model (or a layer view) on another device / dtype, copied from the model object."""
    memo: dict = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        moved = tensor.detach().to(device, dtype if (dtype and tensor.is_floating_point()) else tensor.dtype,
                                   copy=True)
        memo[id(tensor)] = nn.Parameter(moved, requires_grad=False) if isinstance(tensor, nn.Parameter) else moved
    out = copy.deepcopy(model, memo)
    try:  # a model dispatched by accelerate carries hooks that would move inputs back
        from accelerate.hooks import remove_hook_from_module
        remove_hook_from_module(out, recurse=True)
    except ImportError:
        pass
    for module in out.modules():  # plain tensor attributes (not parameters or buffers), e.g. rotary tables
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.device != torch.device(device):
                setattr(module, name, value.to(device))
    return out.eval()


def kv_bytes_per_token(model: nn.Module, layers: int, dtype: torch.dtype) -> int:
    """Bytes one token adds to a KV cache of `layers` layers: keys and values."""
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def execution_device(model) -> torch.device:
    """Where a model's inputs go: its first parameter's device, or for a model spread by a `device_map` the first
    device of the map that runs modules (not 'disk')."""
    placed = getattr(model, "hf_device_map", None)
    if placed:
        first = next((d for d in placed.values() if d != "disk"), "cpu")
        return torch.device(f"cuda:{first}" if isinstance(first, int) else first)
    return next(model.parameters()).device


def spread(model) -> bool:
    """Whether a `device_map` placed the model's modules on more than one device (or on disk)."""
    placed = set((getattr(model, "hf_device_map", None) or {}).values())
    return len(placed) > 1 or "disk" in placed
