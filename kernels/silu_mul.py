"""SwiGLU's elementwise step, silu(gate) * up, in one pass over the gate-and-up product [k, 2 I] (Shazeer, 2020,
"GLU Variants Improve Transformer"). Rounding follows torch: silu rounded to the model's dtype, then the product."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import triton_ready
from .rounding import to_dtype

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def silu_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


if triton is not None:
    @triton.jit
    def _silu_mul(gate_up, out, width, BLOCK: tl.constexpr):
        row, block = tl.program_id(0), tl.program_id(1)
        cols = block * BLOCK + tl.arange(0, BLOCK)
        inside = cols < width
        g = tl.load(gate_up + row * 2 * width + cols, mask=inside, other=0.0).to(tl.float32)
        u = tl.load(gate_up + row * 2 * width + width + cols, mask=inside, other=0.0).to(tl.float32)
        s = to_dtype(g / (1.0 + tl.exp(-g)), out.dtype.element_ty).to(tl.float32)
        tl.store(out + row * width + cols, to_dtype(s * u, out.dtype.element_ty), mask=inside)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up [k, 2 I] (gate first): [k, I]; the Triton kernel on CUDA."""
    if not triton_ready(gate_up) or gate_up.dim() != 2:
        return silu_mul_reference(gate_up)
    gate_up = gate_up.contiguous()
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(rows, width, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block)
    return out
