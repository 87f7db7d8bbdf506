"""A small low-rank delta (LoRA: Hu et al., 2021) on a model's linear layers: trained by lab/train/dllm.py,
merged into the weights when a converted dLLM loads, so decoding runs on plain weights."""
from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """base(x) + scale * B(A(x)); B starts at zero, so the wrapped model starts as the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T) * self.scale  # float32 delta on a 16-bit base
        return self.base(x) + delta.to(x.dtype)


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = TARGETS) -> list[str]:
    """Wrap every targeted nn.Linear in a LoRALinear (in place); freeze everything else. Returns their names."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    for name in names:
        parent, attr = model.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha))
    if not names:
        raise ValueError(f"no linear layer named {', '.join(targets)} in this model")
    return names


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The delta's tensors: '<layer>.lora_A' [r, in] and '<layer>.lora_B' [out, r]."""
    return {n: p.detach() for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}


def load_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved delta tensors into a model that `add_lora` wrapped."""
    params = dict(model.named_parameters())
    for name, value in state.items():
        params[name].data.copy_(value.to(params[name].dtype))


@torch.no_grad()
def merge(model: nn.Module, state: dict[str, torch.Tensor], rank: int, alpha: float) -> None:
    """Add scale * B @ A to each targeted weight of a plain model (no wrappers): the delta, merged."""
    scale = alpha / rank
    for key in [k for k in state if k.endswith(".lora_A")]:
        layer = model.get_submodule(key[: -len(".lora_A")])
        a, b = state[key].float(), state[key[: -len("lora_A")] + "lora_B"].float()
        layer.weight += (scale * b @ a).to(layer.weight.dtype).to(layer.weight.device)
