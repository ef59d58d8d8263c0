"""The `precision` loop setting: fp32, tf32 or bf16 for the dense layers of a torch model.

- fp32: everything in float32 (the default, bit-for-bit what recvae always did).
- tf32: float32 tensors, but CUDA matmuls may use TensorFloat-32 tensor cores
  (torch.backends.cuda.matmul.allow_tf32, set for the fit and restored after). On the CPU there is
  no TF32, so it trains exactly as fp32.
- bf16: the dense layers run under torch.autocast(bfloat16) on the run's device (CPU included);
  the sparse first layer, the loss (with its softmax normaliser) and the KL term stay float32,
  and the weights and the optimizer state stay float32 (autocast casts copies).

Scoring (validation, evaluate, recommend) always runs in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype the dense layers compute in under `precision`, None for float32."""
    return torch.bfloat16 if precision == "bf16" else None


def dense_autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch.autocast to `dtype` on `device`'s type, or a no-op context for float32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def float32_autocast_off(device: torch.device) -> Any:
    """A block that computes in float32 even inside a `dense_autocast` block."""
    return torch.autocast(device_type=device.type, enabled=False)


@contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """TF32 CUDA matmuls inside the block when `precision` is tf32 on a CUDA device."""
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
