"""scipy CSR matrices as torch CSR tensors, and the sparse autograd kernels built on them.

Every torch model here (Mult-VAE, Mult-DAE, RecVAE) reads its input batch sparsely through
`SparseInputLinear` and scores it with the fused `MultinomialNLL`; `row_norms`,
`normalised_values` and `transpose_csr` build the tensors those kernels take from a scipy batch.

scipy's sparse x dense product is single-threaded; torch's CSR `mm` / `addmm` call MKL, which
uses every torch thread. The values tensor is passed in (not copied from the matrix) so that a
caller can hand over transformed values, such as the normalised and dropped-out input of an
autoencoder batch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.device import to_device


def torch_csr(
    indptr: np.ndarray, indices: np.ndarray, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A torch CSR tensor with this structure and these values (no invariant check), on the
    values' device: the index arrays follow them (pinned, non-blocking on CUDA)."""
    device = values.device
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on addmm/mm only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            to_device(indptr.astype(np.int64), device),
            to_device(indices.astype(np.int64), device),
            values,
            size=shape,
            check_invariants=False,
        )


def sparse_times_dense(matrix: sp.csr_matrix, dense: torch.Tensor) -> torch.Tensor:
    """matrix @ dense in float32 on `dense`'s device (MKL on the CPU, all torch threads; scipy's
    product uses one); `dense` (float32) is read in place, not copied."""
    values = to_device(np.ascontiguousarray(matrix.data, dtype=np.float32), dense.device)
    return torch.mm(torch_csr(matrix.indptr, matrix.indices, values, matrix.shape), dense)


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    """L2 norm of every row (float32); an empty row gets 1 so that it stays all zeros."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()).astype(np.float32)
    norms[norms == 0] = 1.0
    return norms


def normalised_values(batch: sp.csr_matrix, norms: np.ndarray) -> np.ndarray:
    """The batch's nonzeros divided by their row's norm (`norms`: one per batch row)."""
    rows = np.repeat(np.arange(batch.shape[0]), np.diff(batch.indptr))
    return batch.data / norms[rows]


def transpose_csr(batch: sp.csr_matrix, values: torch.Tensor) -> torch.Tensor:
    """The batch's transpose as a torch CSR tensor carrying `values` (the batch's nonzeros)."""
    positions = sp.csr_matrix(
        (np.arange(batch.nnz, dtype=np.int64), batch.indices, batch.indptr), shape=batch.shape
    ).tocsc()  # column-major; rows stay sorted within each column
    order = to_device(positions.data, values.device)
    return torch_csr(positions.indptr, positions.indices, values[order], batch.shape[::-1])


class SparseInputLinear(torch.autograd.Function):
    """x @ W + b for a sparse CSR batch x; the weight gradient is x^T @ grad (also sparse).

    torch.addmm on a CSR tensor runs MKL's sparse kernel; the transpose is passed in as its own
    CSR tensor (built from the batch's CSC form by `transpose_csr`) so the backward pass is
    sparse too. The weight gradient is written with `addmm_(..., beta=0)`, which overwrites
    the output in place: `torch.mm(xt, grad, out=...)` first zero-fills and then copies the
    items x hidden table (7-12x slower at Gowalla's shape, for the same bits).

    `grad_buffer` (optional, the weight's shape): a training loop's reusable table for the
    weight gradient. When given, backward writes the gradient into it (or adds it to an
    existing `weight.grad`) and makes it `weight.grad` itself instead of returning it, so no
    fresh items x hidden table is allocated and page-faulted every batch (autograd would copy
    a returned tensor that something else still references). Only for `loss.backward()` loops
    that zero the gradients between batches (recvae.train.BatchUpdates); `torch.autograd.grad`
    sees no weight gradient in that mode.
    """

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        bias: torch.Tensor,
        x: torch.Tensor,
        xt: torch.Tensor,
        grad_buffer: torch.Tensor | None = None,
    ):
        ctx.save_for_backward(xt)
        ctx.weight, ctx.grad_buffer = weight, grad_buffer
        return torch.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (xt,) = ctx.saved_tensors
        weight, buffer = ctx.weight, ctx.grad_buffer
        if buffer is None:
            table = torch.empty(xt.shape[0], grad.shape[1], dtype=grad.dtype, device=grad.device)
            return table.addmm_(xt, grad, beta=0), grad.sum(0), None, None, None
        if ctx.needs_input_grad[0]:
            if weight.grad is None:
                weight.grad = buffer.addmm_(xt, grad, beta=0)
            else:
                weight.grad.addmm_(xt, grad)
        return None, grad.sum(0), None, None, None


def item_transpose(batch: sp.csr_matrix, values: torch.Tensor, items: np.ndarray) -> torch.Tensor:
    """The batch's transpose restricted to `items` (sorted, no repeats, a superset of the
    batch's items), as a torch CSR tensor (len(items) x batch rows) carrying `values`: row r
    is item items[r]. Built in time proportional to the batch, not the catalogue."""
    columns = np.searchsorted(items, batch.indices)
    compact = sp.csr_matrix(
        (batch.data, columns, batch.indptr), shape=(batch.shape[0], len(items))
    )
    return transpose_csr(compact, values)


class SparseRowsLinear(torch.autograd.Function):
    """x @ W + b for a sparse CSR batch x, like `SparseInputLinear`, whose weight gradient
    covers only the rows of `items` (the batch's items): xt_items @ grad, left in `row_grads`
    (recvae.models.lazy_adam) for a row-wise optimiser. No items x hidden gradient is made.

    xt_items: `item_transpose` of the batch over `items` (int64 tensor of item rows)."""

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        bias: torch.Tensor,
        x: torch.Tensor,
        xt_items: torch.Tensor,
        items: torch.Tensor,
        row_grads: Any,
    ):
        ctx.save_for_backward(xt_items, items)
        ctx.weight, ctx.row_grads = weight, row_grads
        return torch.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        xt_items, items = ctx.saved_tensors
        if ctx.needs_input_grad[0]:
            ctx.row_grads.add(ctx.weight, 0, items, torch.mm(xt_items, grad))
        return None, grad.sum(0), None, None, None, None


class GatheredOutputLinear(torch.autograd.Function):
    """h @ W[:, columns] + b[columns] for an output layer W (hidden x items), b (items) whose
    gradient covers only `columns`: left in `row_grads` (recvae.models.lazy_adam) along the
    item axis. Indexing (W[:, columns]) would instead send back an items-sized gradient of
    zeros with the columns filled in, allocated and stepped every update."""

    @staticmethod
    def forward(
        ctx: Any,
        h: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        columns: torch.Tensor,
        row_grads: Any,
    ):
        gathered = weight.index_select(1, columns)
        ctx.save_for_backward(h, gathered, columns)
        ctx.params, ctx.row_grads = (weight, bias), row_grads
        return torch.addmm(bias.index_select(0, columns), h, gathered)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        h, gathered, columns = ctx.saved_tensors
        weight, bias = ctx.params
        grad_h = grad.mm(gathered.t()) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            ctx.row_grads.add(weight, 1, columns, torch.mm(h.t(), grad))
        if ctx.needs_input_grad[2]:
            ctx.row_grads.add(bias, 0, columns, grad.sum(0))
        return grad_h, None, None, None, None


class DenseOutputLinear(torch.autograd.Function):
    """h @ W + b for the decoder's output layer, with the weight gradient h^T @ grad written
    into a reused `grad_buffer` (hidden x items) the way `SparseInputLinear` does, instead of
    a fresh table per batch. The same products as torch.addmm's own backward."""

    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grad_buffer: Any
    ):
        ctx.save_for_backward(h, weight)
        ctx.grad_buffer = grad_buffer
        return torch.addmm(bias, h, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad_h = grad.mm(weight.t()) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            if weight.grad is None:
                weight.grad = torch.mm(h.t(), grad, out=ctx.grad_buffer)
            else:
                weight.grad.addmm_(h.t(), grad)
        return grad_h, None, grad.sum(0), None


class MultinomialNLL(torch.autograd.Function):
    """-sum_j x_j log softmax(logits)_j per row, averaged over rows, with x given sparsely.

    Forward is one fused log-softmax plus a gather at the nonzeros; the gradient,
    (softmax * row total - x) / rows, is built in place in the forward's log-softmax table:
    exp, scale, scatter (no second users x items table; backward runs once per forward).
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor
    ):
        log_probs = torch.log_softmax(logits, dim=1)
        nll = -(values * log_probs[rows, cols]).sum() / logits.shape[0]
        ctx.save_for_backward(log_probs, rows, cols, values)
        return nll

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        log_probs, rows, cols, values = ctx.saved_tensors
        scale = grad / log_probs.shape[0]
        totals = torch.zeros(
            log_probs.shape[0], dtype=values.dtype, device=values.device
        ).index_add_(0, rows, values)
        # in place: log_probs is this function's own users x items table, used only here
        out = log_probs.exp_().mul_((totals * scale)[:, None])
        out.index_put_((rows, cols), values * -scale, accumulate=True)
        return out, None, None, None
