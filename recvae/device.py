"""Where torch models run: one `device` setting ("auto", "cpu", "cuda", "cuda:N") resolved in one
place, and the one way host arrays reach the device.

A device is a setting of the run, not of the model (see docs ARCHITECTURE): a model's `[loop]
device` says where it trains; `--device` on a command (`set_run_device`) overrides it for every
torch model of the process, including loaded ones and a blend's members. A saved model carries
no device: its weights load on the CPU and move to wherever the run says.

Under `torchrun`, "cuda" means this process's own GPU (cuda:LOCAL_RANK).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from recvae.errors import RecvaeError
from recvae.models.configs import DEVICE_PATTERN

_run_device: str | None = None


def check_device_setting(setting: str) -> str:
    """`setting` when it is a device name recvae understands, else a one-line error."""
    if not isinstance(setting, str) or not DEVICE_PATTERN.match(setting):
        raise RecvaeError(
            f"device must be auto, cpu, cuda or cuda:N (e.g. cuda:0), got {setting!r}"
        )
    return setting


def resolve_device(setting: str) -> torch.device:
    """The torch device `setting` names; CUDA asked for on a machine without it is an error.

    "auto" is CUDA when torch sees a GPU, else the CPU. "cuda" under torchrun is the process's
    own GPU (LOCAL_RANK), so every rank of one node takes a different one.
    """
    check_device_setting(setting)
    if setting == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if setting == "auto":
        setting = "cuda" if available else "cpu"
        if setting == "cpu":
            return torch.device("cpu")
    if not available:
        raise RecvaeError(
            f"device {setting!r} requested but this torch build/machine has no CUDA "
            "(torch.cuda.is_available() is False); use --device cpu or auto"
        )
    if setting == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0")) if "WORLD_SIZE" in os.environ else 0
    else:
        index = int(setting.split(":")[1])
    if index >= torch.cuda.device_count():
        raise RecvaeError(
            f"device {setting!r} requested but this machine has {torch.cuda.device_count()} "
            f"CUDA device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def set_run_device(setting: str | None) -> None:
    """Make `setting` the device of every torch model in this process (the CLI's --device);
    None: each model's own setting. Checked at once, so a missing GPU fails before any work."""
    global _run_device
    if setting is not None:
        resolve_device(setting)
    _run_device = setting


def run_device() -> str | None:
    """The process-wide device set by `set_run_device`, or None."""
    return _run_device


def model_device(own_setting: str) -> torch.device:
    """Where a model whose own setting is `own_setting` runs in this process."""
    return resolve_device(_run_device or own_setting)


def to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device`: shared memory on the CPU; on CUDA a pinned copy
    sent with a non-blocking transfer (the copy overlaps with work already queued)."""
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    if device.type == "cpu" or tensor.device == device:
        return tensor
    if tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
