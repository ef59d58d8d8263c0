"""Row-wise ("lazy") Adam for the autoencoders' item-sized matrices: `optimizer = "lazy_adam"`.

The first layer's weight (items x hidden) and, under sampled softmax, the output layer's weight
(hidden x items) and bias (items) have one slice per item. A batch touches only some items: the
items its users interacted with (first layer) and the candidates it scores (sampled output
layer). With dense Adam every update still allocates, zeroes and steps an items x hidden
gradient for each such matrix, so an update's cost and memory grow with the catalogue whatever
the batch. Here the sparse kernels (recvae.models.torch_sparse) deposit only the touched
slices' gradients in a `RowGradients` and `LazyAdam` updates only those slices (like
torch.optim.SparseAdam and TensorFlow's LazyAdam); every other parameter takes torch's fused
Adam step.

How it differs from dense Adam: an item's slice and its two moments change only in updates
whose batch touches the item. Dense Adam also moves an untouched row whenever its moments are
non-zero (momentum carries on and the second moment decays); lazy Adam freezes it until it is
seen again. The bias correction uses the parameter's update count, as dense Adam does, so when
every item is touched in every batch the two are the same update. Weight decay (`l2`, Adam's
coupled L2 term) likewise applies only to the touched slices: an item's row decays in the
updates that see it, not in every update. Adam's moments stay full-size (2 x items x hidden):
what no longer grows with the catalogue is the per-update work and the gradient memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from recvae import distributed


@dataclass
class RowGradient:
    """The gradient of a few slices of one parameter along its item axis: `values` holds, for
    each index in `index` (int64, no repeats), the gradient of that slice."""

    axis: int
    index: torch.Tensor
    values: torch.Tensor


class RowGradients:
    """Where the sparse kernels leave the gradients of an update's touched item slices, for
    `LazyAdam.step` to apply and clear. A parameter whose gradient arrives here keeps `.grad`
    None, so no items-sized gradient exists for it.

    `zero_grad` leaves them alone (the step consumes them): under torchrun the trainer
    declares every rank's slices, as zeros, before the loop's zero_grad and backward."""

    def __init__(self) -> None:
        self.by_param: dict[torch.Tensor, RowGradient] = {}

    def add(
        self, param: torch.Tensor, axis: int, index: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Add the gradient `values` of the slices `index` (along `axis`) of `param`."""
        known = self.by_param.get(param)
        if known is None:
            self.by_param[param] = RowGradient(axis, index, values)
        elif known.index is index or torch.equal(known.index, index):
            known.values = known.values + values
        else:  # two sets of slices: merge them, summing the gradients of shared slices
            both = torch.cat([known.index, index])
            merged, where = torch.unique(both, return_inverse=True)
            shape = list(values.shape)
            shape[axis] = len(merged)
            total = torch.zeros(shape, dtype=values.dtype, device=values.device)
            total.index_add_(axis, where, torch.cat([known.values, values], dim=axis))
            self.by_param[param] = RowGradient(axis, merged, total)

    def clear(self) -> None:
        self.by_param.clear()


class LazyAdam(torch.optim.Adam):
    """Adam (fused, coupled L2 weight decay) in which parameters whose gradient arrives in
    `row_grads` are updated only at the slices it names; the rest take the ordinary step.

    The state is Adam's own (`step`, `exp_avg`, `exp_avg_sq` per parameter), so checkpoints
    save and resume it like torch's Adam."""

    def __init__(self, params: Any, row_grads: RowGradients, **adam: Any) -> None:
        super().__init__(params, **adam)
        self.row_grads = row_grads

    def row_wise_params(self) -> set[torch.Tensor]:
        """The parameters whose gradient of this update is in `row_grads` (not `.grad`)."""
        return set(self.row_grads.by_param)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if distributed.ranks().world > 1:
            self._sum_across_ranks()
        for group in self.param_groups:
            for param in group["params"]:
                grad = self.row_grads.by_param.get(param)
                if grad is not None:
                    self._lazy_step(param, grad, group)
        self.row_grads.clear()
        return super().step(closure)

    def _sum_across_ranks(self) -> None:
        """Sum the row gradients over the ranks of a torchrun job in one flat all-reduce; every
        rank holds the same slices (the trainer declares them for the whole batch)."""
        grads = [
            self.row_grads.by_param[p]
            for group in self.param_groups
            for p in group["params"]
            if p in self.row_grads.by_param
        ]
        if not grads:
            return
        flat = torch.cat([g.values.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for grad in grads:
            count = grad.values.numel()
            grad.values = flat[offset : offset + count].view_as(grad.values)
            offset += count

    def _lazy_step(self, param: torch.Tensor, grad: RowGradient, group: dict[str, Any]) -> None:
        """Adam's update (torch.optim.Adam's formula) on the slices `grad.index` only."""
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        axis, index = grad.axis, grad.index
        rows = param.index_select(axis, index)
        g = grad.values
        if group["weight_decay"]:
            g = g.add(rows, alpha=group["weight_decay"])
        exp_avg = state["exp_avg"].index_select(axis, index).mul_(beta1).add_(g, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(axis, index).mul_(beta2)
        exp_avg_sq.addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
        rows.addcdiv_(exp_avg, denom, value=-group["lr"] / bias_correction1)
        param.index_copy_(axis, index, rows)
        state["exp_avg"].index_copy_(axis, index, exp_avg)
        state["exp_avg_sq"].index_copy_(axis, index, exp_avg_sq)
