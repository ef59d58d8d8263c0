"""Data-parallel training under `torchrun`: N processes ("ranks") train one model together.

    torchrun --nproc-per-node 2 -m recvae train data/ml-1m --model multvae --out models/vae \
        --device cpu

Each rank holds the whole model. Every global batch of an epoch is the same users as in a
one-process run (the same seeded permutation); rank r takes the r-th contiguous part of it, and
draws the batch's dropout and latent noise for the whole batch (keeping its own part) so that
the randomness too is the one-process run's. After each backward pass the gradients are summed
across ranks, each rank's weighted by its share of the batch (`BatchUpdates`), so the update is
the one-process update. The weights then stay identical on every rank: rank 0 alone validates
and broadcasts the numbers every rank decides by (best epoch, early stop, LR plateau), and rank
0 alone writes checkpoints, logs and the model.

This is an explicit all-reduce of the gradients rather than DistributedDataParallel: the sparse
first layer and fused loss are custom autograd functions and a rank may hold an empty part of a
small last batch; one flat all-reduce per update is the same communication, with no hooks.
Backends: gloo on the CPU, NCCL on CUDA. Outside torchrun every function here is a no-op for a
world of one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from recvae.errors import RecvaeError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank `rank` of `world` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates and writes files."""
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This rank's contiguous part of n rows (sizes differ by at most one; may be empty)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's global rank as the launcher set it (RANK; 0 outside torchrun), readable
    before joining and after leaving the process group."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def init_from_env(device: torch.device) -> Ranks:
    """Join the process group torchrun describes (env RANK, WORLD_SIZE, MASTER_ADDR/PORT):
    NCCL when training on CUDA, gloo on the CPU. A no-op outside torchrun or when joined."""
    if not launched() or dist.is_initialized():
        return ranks()
    if not dist.is_available():
        raise RecvaeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    group = {"store": _attempt_store(), "rank": int(os.environ["RANK"]),
             "world_size": int(os.environ["WORLD_SIZE"])}  # fmt: skip
    if group["store"] is None:
        group = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, **group)
    else:
        dist.init_process_group("gloo", **group)
    return ranks()


def _attempt_store() -> dist.Store | None:
    """torchrun's store, its keys prefixed by this restart attempt, or None (torch's default).

    With its default (static) rendezvous, torchrun keeps one store for every restart
    (`--max-restarts`), so the processes of a restarted attempt would read their predecessors'
    addresses and never form a group (torch 2.13: gloo "connection refused", or a hang). A
    prefix per attempt gives each attempt its own keys, so a killed rank's job restarts and
    resumes from its checkpoint like a relaunch.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]), is_master=False,
    )  # fmt: skip
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"recvae/attempt_{attempt}", store)


def ranks() -> Ranks:
    """This process's rank and the world size (0 of 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def shutdown() -> None:
    """Leave the process group (after the last collective call), if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """The device collectives use: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` across ranks in one flat all-reduce. A parameter that
    trains but got no gradient here (this rank's part of the batch was empty) counts as zeros."""
    trained = [p for p in params if p.requires_grad]
    for param in trained:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([p.grad.reshape(-1) for p in trained])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for param in trained:
        count = param.numel()
        param.grad.copy_(flat[offset : offset + count].view_as(param.grad))
        offset += count


def sum_across_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of `values` over every rank (the input itself in a one-process run)."""
    group = ranks()
    if group.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object); the value itself when alone."""
    if ranks().world == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=_device())
    return holder[0]


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a one-process run)."""
    if ranks().world > 1:
        dist.barrier()


def gather_strings(value: str) -> list[str]:
    """Every rank's `value`, in rank order, on every rank ([value] when alone)."""
    group = ranks()
    if group.world == 1:
        return [value]
    values: list[str] = [""] * group.world
    dist.all_gather_object(values, value)
    return values
