"""Host-to-device copies that do not wait for the device.

`torch.tensor(values, device="cuda")` copies from pageable memory and synchronises the stream, so the host waits
for every queued kernel. Through pinned memory the copy is queued like a kernel and the host goes on.
"""
from __future__ import annotations

import torch


def to_device(values, device: torch.device | str, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """A small host list (or tensor) on `device`, without a host sync on a GPU."""
    device = torch.device(device)
    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if host.device == device or (device.type == host.device.type and device.index is None):
        return host
    if device.type != "cuda" or host.device.type != "cpu":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
